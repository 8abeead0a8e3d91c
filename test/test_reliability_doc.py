"""docs/reliability.md lists every reliability-marked test of the suite, as scripts/reliability_doc.py renders it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "reliability_doc.py"


def test_the_committed_reliability_doc_matches_the_markers() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_cases_are_grouped_by_package_sorted_and_escaped(load_repo_script) -> None:
    doc = load_repo_script("scripts/reliability_doc.py")
    cases = [
        doc.Case("node start-up with max_depth:=5 (an integer)", "exit 1, one line naming max_depth", "test/test_x.py::a"),
        doc.Case("b | piped", "flagged", "src/model_tools/test/test_y.py::b[p1]"),
        doc.Case("a case", "named error", "src/model_tools/test/test_y.py::c"),
    ]
    text = doc.render(cases)
    assert text.startswith(doc.HEADER.rstrip()) and "3 cases in 2 packages." in text
    model_tools, system = text.index("## model_tools"), text.index("## System tests")
    assert model_tools < system  # packages first, the cross-package system tests last
    assert text.index("| a case |") < text.index("| b \\| piped |") < system
    assert "`src/model_tools/test/test_y.py::b[p1]`" in text and "| exit 1, one line naming max_depth |" in text
