"""The corpus of LambdaRollout manifests (``good.yaml``, ``bad.yaml``) that the unit tier and the
real API server tier check, and the keys of the annotations that ``bad.yaml``'s header describes.

``load(name)`` returns the manifests of one file (a new list at every call: a module may change
its own); ``name_of(manifest)`` is a manifest's name, the id of its test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent
FIELD = "corpus.lambda.rollouts.dev/field"
LEVEL = "corpus.lambda.rollouts.dev/level"
MODEL_FIELD = "corpus.lambda.rollouts.dev/model-field"
ERROR = "corpus.lambda.rollouts.dev/error"


def load(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((CORPUS / name).read_text(encoding="utf-8")))


def name_of(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"]["name"])
