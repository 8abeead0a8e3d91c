"""run_nodes' start-up under Ctrl-C, at the one moment a system test cannot hit on purpose.

CI once sent SIGINT while ``import rclpy`` was initialising its pybind11 extension; the KeyboardInterrupt came out
as ``ImportError: initialization failed`` and the node exited 1 with a traceback. The ``rclpy`` here is a test
double of only that moment (``perception_ros.testing``; the real extension's initialisation cannot be
interrupted on cue): its import sends SIGINT to its own process and, as pybind11 does, turns a KeyboardInterrupt
raised meanwhile into an ImportError.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perception_ros.testing import write_rclpy_interrupted_at_import


@pytest.mark.reliability(case="Ctrl-C (SIGINT) while a node's entry point imports rclpy (its extension initialising; a test double of that moment)",
                         outcome="exit code 0, no traceback")
def test_ctrl_c_while_rclpy_initialises_exits_0_without_traceback(tmp_path: Path) -> None:
    write_rclpy_interrupted_at_import(tmp_path)
    script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
              "from perception_ros.spin import run_node\n"
              "raise SystemExit(run_node('no.such.module:Node'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
