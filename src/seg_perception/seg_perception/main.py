"""Console entry points of seg_perception's nodes: light, so Ctrl-C during the heavy imports still exits cleanly."""

from __future__ import annotations

from perception_ros.spin import run_node


def segmentation_node(args: list[str] | None = None) -> None:
    raise SystemExit(run_node("seg_perception.segmentation_node:SegmentationNode", args))


def costmap_node(args: list[str] | None = None) -> None:
    raise SystemExit(run_node("seg_perception.costmap_node:CostmapNode", args))
