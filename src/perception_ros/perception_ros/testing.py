"""Test support: a stand-in ``rclpy`` for the one moment a real one cannot be made to hit on cue.

CI once sent SIGINT while ``import rclpy`` was initialising its pybind11 extension; the KeyboardInterrupt came
out as ``ImportError: initialization failed``. :func:`write_rclpy_interrupted_at_import` writes a test double of
only that moment: its import sends SIGINT to its own process and, as pybind11 does, turns a KeyboardInterrupt
raised meanwhile into an ImportError. Anything that goes on to use it (``init``, ``create_node``) fails the test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

_FAKE_RCLPY = {
    "__init__.py": """
        import os
        import signal
        import time

        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the extension initialises
            time.sleep(0.2)
        except KeyboardInterrupt as err:
            raise ImportError("initialization failed") from err

        def init(**_):
            raise AssertionError("went on to rclpy.init after a Ctrl-C during import")

        def create_node(*_, **__):
            raise AssertionError("went on to rclpy.create_node after a Ctrl-C during import")

        def try_shutdown():
            pass
    """,
    "executors.py": """
        class ExternalShutdownException(Exception):
            pass

        MultiThreadedExecutor = SingleThreadedExecutor = object
    """,
    "signals.py": """
        class SignalHandlerOptions:
            NO = 0
    """,
}


def write_rclpy_interrupted_at_import(folder: Path) -> Path:
    """Write the stand-in package ``folder/rclpy``; put ``folder`` first on ``sys.path`` to use it."""
    package = Path(folder) / "rclpy"
    package.mkdir(parents=True, exist_ok=True)
    for name, text in _FAKE_RCLPY.items():
        (package / name).write_text(textwrap.dedent(text))
    return package
