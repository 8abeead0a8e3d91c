"""Console entry point of the depth node: light, so Ctrl-C during the heavy imports still exits cleanly."""

from __future__ import annotations

from perception_ros.spin import run_node


def depth_node(args: list[str] | None = None) -> None:
    raise SystemExit(run_node("depth_perception.depth_node:DepthNode", args))
