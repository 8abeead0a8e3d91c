"""Workspace-wide pytest setup: DDS stays on loopback, one domain per run."""

from __future__ import annotations

import os

# Set before any test imports rclpy. A per-run domain keeps concurrent runs
# (CI, other shells) from seeing each other's topics.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))
# Keep torch and ONNX Runtime from oversubscribing the 2 CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
