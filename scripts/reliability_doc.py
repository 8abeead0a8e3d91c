"""Write docs/reliability.md from the test suite's ``reliability`` markers (or check that it is current).

Every test that reproduces a bad-input or fault case carries
``@pytest.mark.reliability(case="...", outcome="...")`` (registered in
pytest.ini; a parametrized test may mark each parameter). This script
collects the whole suite with pytest (nothing runs), gathers those markers
with their test ids, and renders one Markdown table per package.

    python scripts/reliability_doc.py           # rewrite docs/reliability.md (make reliability-doc)
    python scripts/reliability_doc.py --check   # exit 1 when the committed file differs (a test runs this)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
MARKER = "reliability"

HEADER = """# Reliability: fault cases and what the stack does with them

Every bad input or fault below is reproduced by a test through the real path
(real rclpy nodes over DDS, a command-line tool run in a subprocess, a real
bag or model file, a killed process), and the outcome column is what that
test asserts. The stack's rule: a bad input gives a named error, a counted
drop or a flagged state, never a plausible wrong result and never a
traceback.

This file is generated from the tests' `@pytest.mark.reliability(case=...,
outcome=...)` markers; do not edit it by hand. After adding or changing a
case, run `make reliability-doc` (`python scripts/reliability_doc.py`).
`test/test_reliability_doc.py` fails while this file is out of date.
"""

# Heading of each group: the package whose tests hold the cases (root test/ = system tests).
GROUP_TITLES = {
    "test": "System tests (nodes over DDS, launch)",
}


@dataclass(frozen=True)
class Case:
    """One marked test: what goes wrong, what the stack does, and the test that checks it."""

    case: str
    outcome: str
    test_id: str

    @property
    def group(self) -> str:
        parts = Path(self.test_id.split("::", 1)[0]).parts
        return parts[1] if len(parts) > 2 and parts[0] == "src" else parts[0]


class _Collector:
    """pytest plugin: records the reliability markers of every collected test."""

    def __init__(self) -> None:
        self.cases: list[Case] = []
        self.problems: list[str] = []

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        for item in items:
            for mark in item.iter_markers(MARKER):
                values = dict(zip(("case", "outcome"), mark.args, strict=False)) | dict(mark.kwargs)
                case, outcome = values.get("case"), values.get("outcome")
                if not (isinstance(case, str) and case.strip() and isinstance(outcome, str) and outcome.strip()):
                    self.problems.append(f"{item.nodeid}: mark it @pytest.mark.{MARKER}(case='...', outcome='...')")
                    continue
                self.cases.append(Case(" ".join(case.split()), " ".join(outcome.split()), item.nodeid))


def collect_cases(root: Path = REPO) -> list[Case]:
    """Collect the whole suite (testpaths of pytest.ini) and return its marked cases.

    Raises:
        SystemExit: collection failed (an import error in a test module) or a marker lacks case/outcome.
    """
    import pytest

    collector = _Collector()
    output = io.StringIO()
    previous = Path.cwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(output):
            code = pytest.main(["--collect-only", "-q"], plugins=[collector])
    finally:
        os.chdir(previous)
    if code != 0:
        raise SystemExit(f"reliability_doc: test collection failed (pytest exit {code}):\n{output.getvalue()[-3000:]}")
    if collector.problems:
        raise SystemExit("reliability_doc: malformed markers:\n  " + "\n  ".join(collector.problems))
    return collector.cases


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(cases: list[Case]) -> str:
    """The whole Markdown document: header, then one table per group in a fixed order."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    lines = [HEADER.rstrip(), "", f"{len(cases)} cases in {len(groups)} packages.", ""]
    for group in sorted(groups, key=lambda g: (g == "test", g)):
        rows = sorted(groups[group], key=lambda c: (c.case.lower(), c.test_id))
        lines += [f"## {GROUP_TITLES.get(group, group)}", "", "| case | outcome | test |", "|---|---|---|"]
        lines += [f"| {_cell(c.case)} | {_cell(c.outcome)} | `{_cell(c.test_id)}` |" for c in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    parser.add_argument("--out", type=Path, default=DOC, help=f"document to write or check (default {DOC})")
    args = parser.parse_args(argv)
    text = render(collect_cases())
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"reliability_doc: {args.out} is out of date with the tests' reliability markers; "
                  "run `make reliability-doc`", file=sys.stderr)
            return 1
        print(f"reliability_doc: {args.out} is current")
        return 0
    args.out.write_text(text)
    print(f"reliability_doc: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
