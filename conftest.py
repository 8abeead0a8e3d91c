"""Workspace-wide pytest setup: DDS stays on loopback, one domain per run."""

from __future__ import annotations

import os
from pathlib import Path

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
