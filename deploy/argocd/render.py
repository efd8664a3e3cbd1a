"""Write argocd-cm.yaml from health.lua and actions/, which are the source of the Lua it carries.

Run after editing a .lua file:

    python deploy/argocd/render.py

tests/gitops/test_argocd.py fails while the ConfigMap and the .lua files disagree.
"""

from __future__ import annotations

import pathlib
import textwrap

HERE = pathlib.Path(__file__).resolve().parent
KEY = "lambda.rollouts.dev_LambdaRollout"
# The order Argo CD lists them in.
ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")

HEADER = """\
# Argo CD health check and resource actions for LambdaRollouts.
#
# Generated from deploy/argocd/health.lua and deploy/argocd/actions/ by deploy/argocd/render.py;
# edit the .lua files, not this one.
#
# Add the two data keys to Argo CD's argocd-cm ConfigMap, for example:
#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm.yaml
# or, with the argo-cd Helm chart, put them under `configs.cm`.
#
# Actions also need RBAC in argocd-rbac-cm, for example:
#   p, role:release-managers, applications, action/lambda.rollouts.dev/LambdaRollout/*, */*, allow
"""


def _block(path: pathlib.Path, indent: int) -> str:
    """A file's text as the content of a YAML literal block (`|`) at ``indent`` spaces."""
    return textwrap.indent(path.read_text(), " " * indent)


def render() -> str:
    definitions = "".join(
        f"      - name: {name}\n        action.lua: |\n{_block(HERE / 'actions' / name / 'action.lua', 10)}"
        for name in ACTIONS
    )
    return (
        HEADER
        + "apiVersion: v1\n"
        + "kind: ConfigMap\n"
        + "metadata:\n"
        + "  name: argocd-cm\n"
        + "  namespace: argocd\n"
        + "  labels:\n"
        + "    app.kubernetes.io/name: argocd-cm\n"
        + "    app.kubernetes.io/part-of: argocd\n"
        + "data:\n"
        + f"  resource.customizations.health.{KEY}: |\n"
        + _block(HERE / "health.lua", 4)
        + f"  resource.customizations.actions.{KEY}: |\n"
        + "    discovery.lua: |\n"
        + _block(HERE / "actions" / "discovery.lua", 6)
        + "    definitions:\n"
        + definitions
    )


if __name__ == "__main__":
    (HERE / "argocd-cm.yaml").write_text(render())
