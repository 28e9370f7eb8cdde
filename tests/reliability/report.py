"""
Write docs/reliability.md from the figures the last reliability run kept.

Run after the suite: C{python -m tests.reliability.report}.
"""

from __future__ import annotations

import json
import os
import sys

from tests.reliability._figures import FIGURES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "docs", "reliability.md")
INTRODUCTION = """\
# Reliability figures

Written by `python -m tests.reliability.report` from the last run of the
reliability suite (`tox -e reliability`). Every figure names the command
that measured it. Messages lost must be 0; duplicates may only be messages
that were in flight when ace-mail was killed.
"""


def main() -> int:
    """
    Render the figures, grouped by section in the order they were first
    recorded, the latest value of each figure winning.
    """
    if not os.path.exists(FIGURES):
        print(f"report: no figures in {FIGURES}; run the reliability suite first")
        return 1
    sections: dict[str, dict[str, dict[str, object]]] = {}
    with open(FIGURES, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            sections.setdefault(entry["section"], {})[entry["figure"]] = entry
    parts = [INTRODUCTION]
    for section, figures in sections.items():
        parts.append(f"\n## {section}\n\n| figure | value | command |\n|---|---|---|")
        for figure, entry in figures.items():
            value = str(entry["value"]).replace("|", "\\|")
            parts.append(f"| {figure} | {value} | `{entry['command']}` |")
    text = "\n".join(parts) + "\n"
    with open(REPORT, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"report: wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
