"""perception-tools' start-up under Ctrl-C: a SIGINT while ``import rclpy`` initialises ends the tool with
exit code 0 and no traceback, before it initialises rclpy or writes anything.

The ``rclpy`` here is ``perception_ros.testing``'s test double of that one moment (the real extension's
initialisation cannot be interrupted on cue): its import sends SIGINT to its own process and turns a
KeyboardInterrupt into an ImportError, as pybind11 does; a tool that went on to ``rclpy.init`` fails the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perception_ros.testing import write_rclpy_interrupted_at_import

CALLS = {
    "replay": "import argparse; from perception_tools.replay import run; code = run(argparse.Namespace())",
    "record": "import argparse; from perception_tools.recorder import run; code = run(argparse.Namespace())",
    "synthetic_camera": "from perception_tools.synthetic_camera import main; code = main(['--frames', '1'])",
}


@pytest.mark.reliability(case="Ctrl-C (SIGINT) while perception-tools replay / record or synthetic_camera import rclpy",
                         outcome="exit code 0, no traceback, rclpy never initialised")
@pytest.mark.parametrize("tool", sorted(CALLS))
def test_ctrl_c_while_rclpy_initialises_ends_the_tool_quietly(tool: str, tmp_path: Path) -> None:
    write_rclpy_interrupted_at_import(tmp_path)
    script = f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n{CALLS[tool]}\nraise SystemExit(code)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
