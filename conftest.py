"""Workspace-wide pytest setup: DDS stays on loopback, one domain per run."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

# Set before any test imports rclpy. A per-run domain keeps concurrent runs
# (CI, other shells) from seeing each other's topics.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))
# The stack's Fast DDS transport profile, as the launch files and perception-stack load it: without it
# camera-size frames are lost between processes.
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parent / "config" / "fastdds.xml"))
# Keep torch and ONNX Runtime from oversubscribing the 2 CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def load_repo_script() -> Callable[[str], ModuleType]:
    """Import a file of the repository that is no package (``scripts/x.py``, ``bench/x.py``) as a module."""

    def load(relative: str) -> ModuleType:
        path = Path(__file__).resolve().parent / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
