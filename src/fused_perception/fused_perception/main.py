"""Console entry point of the fused node: light, so Ctrl-C during the heavy imports still exits cleanly."""

from __future__ import annotations

from perception_ros.spin import run_node


def fused_node(args: list[str] | None = None) -> None:
    raise SystemExit(run_node("fused_perception.fused_node:FusedNode", args))
