"""The planner and the analysis read no clock: what import-linter cannot say about a function.

import-linter keeps I/O libraries, ``time``, ``random``, ``socket`` and ``urllib`` out of both
modules (pyproject.toml), but ``datetime`` must stay importable for its types; its clock is the
one thing left to refuse, and this test refuses it in the source itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lambda_rollouts

PACKAGE = Path(lambda_rollouts.__file__).parent
PURE_MODULES = ("planner.py", "analysis.py")
# datetime.now(), datetime.utcnow(), datetime.today(), date.today(), however they were imported.
CLOCK_READS = frozenset({"now", "utcnow", "today"})


def clock_reads(source: str) -> list[str]:
    """``name.attribute(...)`` calls that read a clock, as ``line: text``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_READS
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_a_pure_module_reads_no_clock(module: str) -> None:
    assert clock_reads((PACKAGE / module).read_text(encoding="utf-8")) == []


def test_the_check_finds_a_clock_read_however_datetime_was_imported() -> None:
    source = (
        "from datetime import datetime as moment, date\n"
        "import datetime\n"
        "def plan(now):\n"
        "    a = moment.now()\n"
        "    b = datetime.datetime.utcnow()\n"
        "    c = date.today()\n"
        "    return now\n"
    )
    assert clock_reads(source) == [
        "4: moment.now()",
        "5: datetime.datetime.utcnow()",
        "6: date.today()",
    ]
