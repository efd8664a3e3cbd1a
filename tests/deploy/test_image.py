"""What can be proven about the operator image without a container engine.

- The Dockerfile lints clean with hadolint (warnings and errors fail; an inline ignore must say why).
- Its shape: a build stage and a slim runtime stage on digest-free python:3.12-slim tags, the
  runtime installing nothing but the wheel, running as uid 65532 (the Deployment's runAsUser), with
  ``ENTRYPOINT ["lambda-rollouts"]`` and ``CMD ["run"]``.
- The build: the files the build stage copies, filtered by .dockerignore as Docker filters the
  context, make a wheel with the same ``pip wheel`` command; that wheel alone, installed into a
  fresh virtualenv with its runtime dependencies from the configured index, runs the commands the
  image runs, imports every operator module and brings no development dependency along.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOYMENT = ROOT / "deploy" / "base" / "deployment.yaml"
RUN_AS = 65532
BASE_IMAGE = "python:3.12-slim"

# Building the wheel and installing its dependencies takes about 25 s here; the margin is for a
# slow package index. The whole module shares one build and one install.
pytestmark = pytest.mark.timeout(300)


# -- reading the Dockerfile ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [item.arguments for item in self.instructions if item.keyword == keyword]


def _instructions(text: str) -> Iterator[Instruction]:
    # Enough of the Dockerfile grammar for this file: comments, and lines continued with a backslash.
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        yield Instruction(keyword.upper(), " ".join(arguments.split()))


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            image, *name = re.split(r"\s+as\s+", instruction.arguments, maxsplit=1, flags=re.IGNORECASE)
            stages.append(Stage(image, name[0] if name else None))
        else:
            stages[-1].instructions.append(instruction)
    return stages


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec (JSON) form: {arguments}"
    return [str(item) for item in value]


def test_two_stages_on_a_slim_tag_without_digest() -> None:
    stages = _stages()
    assert [stage.image for stage in stages] == [BASE_IMAGE, BASE_IMAGE]
    assert stages[0].name == "build"
    # A tag, not a digest: security fixes of the base image arrive on rebuild.
    assert all("@" not in stage.image for stage in stages)


def test_the_build_stage_makes_only_the_wheel() -> None:
    build = _stages()[0]
    assert build.all("RUN") == ["python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist ."]


def test_the_runtime_stage_installs_only_the_wheel() -> None:
    runtime = _stages()[-1]
    # Nothing from the source tree is copied in; the wheel comes from the build stage.
    assert runtime.all("COPY") == []
    installs = [command for command in runtime.all("RUN") if "pip" in command]
    assert len(installs) == 1
    mount, _, command = installs[0].partition(" python ")
    assert mount == "--mount=type=bind,from=build,source=/dist,target=/dist"
    assert command == "-m pip install --no-cache-dir /dist/*.whl"


def test_the_runtime_stage_runs_the_operator_as_non_root() -> None:
    runtime = _stages()[-1]
    assert runtime.all("USER") == [f"{RUN_AS}:{RUN_AS}"]
    assert _exec_form(runtime.all("ENTRYPOINT")[-1]) == ["lambda-rollouts"]
    assert _exec_form(runtime.all("CMD")[-1]) == ["run"]
    environment = " ".join(runtime.all("ENV")).split()
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment


def test_the_image_user_and_ports_match_the_deployment() -> None:
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # runAsNonRoot can only be checked by the kubelet against a numeric USER; both must agree.
    assert pod["securityContext"]["runAsUser"] == RUN_AS
    assert container["securityContext"]["runAsUser"] == RUN_AS
    exposed = sorted(int(port) for port in " ".join(_stages()[-1].all("EXPOSE")).split())
    assert exposed == sorted(port["containerPort"] for port in container["ports"])


def _hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found beside the interpreter or on PATH: install the dev extras (.[dev])")
    return found


def test_the_dockerfile_lints_clean(tmp_path: Path) -> None:
    # An empty configuration, so that no hadolint.yaml of the machine relaxes the rules.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    result = subprocess.run(
        [_hadolint(), "--config", str(config), "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    findings = [item for item in json.loads(result.stdout) if item["level"] in {"warning", "error"}]
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_every_ignored_hadolint_rule_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            previous = lines[number - 1].strip() if number else ""
            reason = f"line {number + 1}: explain the ignored rule in a comment on the line above"
            assert previous.startswith("#"), reason
            assert "hadolint" not in previous, reason


# -- the build context -----------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) per .dockerignore line, in order; the last matching rule wins."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        rules.append((not include, re.compile(regex)))
    return rules


def _in_context(relative: str) -> bool:
    # As Docker does: a rule matching a directory applies to everything below it.
    parts = relative.split("/")
    prefixes = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    excluded = False
    for excludes, pattern in _dockerignore_rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def test_the_context_leaves_out_the_rest_of_the_tree() -> None:
    for inside in ("pyproject.toml", "README.md", "operator/lambda_rollouts/cli.py"):
        assert _in_context(inside), inside
    for outside in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/deploy/test_image.py",
        "deploy/kustomization.yaml",
        ".sandbox/kubeconfig",
        "build/lib/lambda_rollouts/cli.py",
        "operator/lambda_rollouts.egg-info/PKG-INFO",
        "operator/lambda_rollouts/__pycache__/cli.cpython-312.pyc",
    ):
        assert not _in_context(outside), outside


def _build_context(destination: Path) -> None:
    """Lay out /src as the build stage sees it: its COPY instructions over the filtered context."""
    build = _stages()[0]
    workdir = Path(build.all("WORKDIR")[-1])
    for arguments in build.all("COPY"):
        *sources, target = arguments.split()
        assert not any(source.startswith("--") for source in sources), arguments
        into = destination / (Path(target) if Path(target).is_absolute() else workdir / target).relative_to(
            workdir
        )
        for source in sources:
            origin = ROOT / source
            files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            for path in files:
                relative = path.relative_to(ROOT).as_posix()
                if not _in_context(relative):
                    continue
                placed = into / path.name if origin.is_file() else into / path.relative_to(origin)
                placed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, placed)


# -- the wheel in a fresh virtualenv ---------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Only the virtualenv on PATH, as in the image: nothing from the dev environment leaks in.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        env["PATH"] = f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin"
        env.pop("VIRTUAL_ENV", None)
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=self.bin.parent,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("image")
    context, dist, venv = work / "src", work / "dist", work / "venv"
    _build_context(context)
    # The build stage's command, run in the copied context so the work tree gets no build output.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--wheel-dir", str(dist), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    # A virtualenv without pip, filled by this interpreter's pip: the same resolution the image's
    # `pip install` does, without the time ensurepip takes, and nothing but the wheel's closure in it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-compile",
            "--disable-pip-version-check",
            str(wheels[0]),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return Installed(wheel=wheels[0], bin=venv / "bin")


def _project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project: dict[str, Any] = tomllib.load(handle)["project"]
    return project


def _distribution_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_the_entrypoint_and_its_run_command_answer(installed: Installed) -> None:
    top = installed.run("lambda-rollouts", "--help")
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout
    run = installed.run("lambda-rollouts", "run", "--help")
    assert run.returncode == 0, run.stderr
    # The Deployment passes --liveness; the option must exist in what the image installs.
    assert "--liveness" in run.stdout


def test_the_installed_version_is_the_projects(installed: Installed) -> None:
    result = installed.run("lambda-rollouts", "--version")
    assert result.returncode == 0, result.stderr
    assert str(_project()["version"]) in result.stdout


def test_the_installed_crd_is_the_published_one(installed: Installed) -> None:
    result = installed.run("lambda-rollouts", "crd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "crds" / "lambdarollouts.yaml").read_text()


def test_the_kubectl_plugin_answers(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        if "lambda_rollouts/plugin.py" not in wheel.namelist():
            pytest.skip("the wheel has no kubectl plugin module")
    result = installed.run("kubectl-lambdarollout", "--help")
    assert result.returncode == 0, result.stderr


def test_every_operator_module_imports_with_runtime_dependencies_only(installed: Installed) -> None:
    # The sandbox needs the [sandbox] extra (emulators) and is not part of the operator image.
    script = (
        "import importlib, pkgutil, lambda_rollouts\n"
        "for module in pkgutil.walk_packages(lambda_rollouts.__path__, 'lambda_rollouts.'):\n"
        "    if not module.name.startswith('lambda_rollouts.sandbox'):\n"
        "        importlib.import_module(module.name)\n"
        "        print(module.name)\n"
    )
    result = installed.run("python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "lambda_rollouts.handlers" in result.stdout.split()


def test_no_development_dependency_is_installed(installed: Installed) -> None:
    script = "import importlib.metadata as m, json; print(json.dumps([d.name for d in m.distributions()]))"
    result = installed.run("python", "-c", script)
    assert result.returncode == 0, result.stderr
    present = {_distribution_name(name) for name in json.loads(result.stdout)}
    project = _project()
    runtime = {_distribution_name(item) for item in project["dependencies"]}
    development = {
        _distribution_name(item)
        for items in project["optional-dependencies"].values()
        for item in items
        if not item.startswith("lambda-rollouts")
    }
    assert present & (development - runtime) == set()
    assert {"pip", "setuptools"} & present == set()
