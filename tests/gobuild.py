"""The Go programs of ``tools/go/`` (helm, kstatus), built by ``tools/gobuild.sh`` or found in its
cache.

``go_program(name, timeout)`` returns the path of the binary. A missing Go, a failed build or a
build that outlasts ``timeout`` seconds raises ``GoBuildError`` with the script's own words: the
test that needs the program fails, it never skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GOBUILD = Path(__file__).resolve().parents[1] / "tools" / "gobuild.sh"


class GoBuildError(RuntimeError):
    """tools/gobuild.sh did not run, failed, or printed no binary."""


def go_program(name: str, timeout: float) -> Path:
    try:
        built = subprocess.run(
            ["bash", str(GOBUILD), name], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GoBuildError(f"tools/gobuild.sh {name} did not run: {exc}") from exc
    if built.returncode != 0:
        raise GoBuildError(f"tools/gobuild.sh {name} exited {built.returncode}:\n{built.stderr[-4000:]}")
    printed = built.stdout.strip().splitlines()
    path = Path(printed[-1]) if printed else None
    if path is None or not path.is_file():
        raise GoBuildError(f"tools/gobuild.sh {name} printed {path}, which is no file")
    return path
