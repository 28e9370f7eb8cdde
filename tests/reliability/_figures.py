"""
Figures that the reliability suite measures, collected as it runs and then
written into docs/reliability.md by L{tests.reliability.report}.
"""

from __future__ import annotations

import json
import os
import time

FIGURES = os.environ.get(
    "ACE_RELIABILITY_FIGURES",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures.jsonl"),
)


def record(section: str, figure: str, value: object, command: str) -> None:
    """
    Keep one measured figure.

    @param section: The part of the suite, such as C{"Crash"}; figures are
        grouped by it in the report.
    @param figure: What was measured, such as C{"messages lost"}.
    @param value: What it came to (a number, or a short sentence).
    @param command: The command that measures it, so that a reader can
        measure it again.
    """
    line = {
        "section": section,
        "figure": figure,
        "value": value,
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(FIGURES, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


SKIP = (
    None
    if os.environ.get("ACE_RELIABILITY")
    else "the reliability suite runs under `tox -e reliability` "
    "(or set ACE_RELIABILITY=1)"
)
"""
Every test case of the suite sets C{skip = SKIP}, so that the plain test
run does not run the long suite a second time.
"""
