"""Fused perception node: one camera frame, both models, the same topics as the separate nodes.

Three independent latest-frame-wins nodes skip different frames on a slow
host, and the costmap cannot pair depth and labels of frames that only one
model saw. This node subscribes once, converts and rectifies each frame once,
runs the depth and segmentation ONNX Runtime sessions concurrently on it
(``InferenceNodeBase.run_heads``) and publishes both models' topics with the
frame's stamp, so every processed frame gives the costmap a pair.

The heads are the separate nodes' own (``DepthHead``, ``SegmentationHead``),
with their parameters under ``depth.`` and ``segmentation.``:

    /**/fused_node:
      ros__parameters:
        backend: auto
        depth: {model_path: models/depth_levels_r18.onnx, publish_points: true}
        segmentation: {model_path: models/ddrnet23s_offroad.onnx}

Topics: as depth_node and segmentation_node together (relative names).
"""

from __future__ import annotations

from typing import Any

from depth_perception.depth_node import DepthHead
from perception_ros.inference_node import InferenceNodeBase
from seg_perception.segmentation_node import SegmentationHead


class FusedNode(InferenceNodeBase):
    """Depth and segmentation on every frame it takes, concurrently, one stamp for both."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fused_node", **kwargs)
        self.depth = self.add_head(DepthHead(self, param_prefix="depth."))
        self.segmentation = self.add_head(SegmentationHead(self, param_prefix="segmentation."))
        self.start()


if __name__ == "__main__":
    from fused_perception.main import fused_node

    fused_node()
