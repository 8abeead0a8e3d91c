"""Segmentation node: camera image -> mono8 class ids, rgb8 overlay and a per-frame class summary.

Thin shell over ``perception_core.pipelines.SegPipeline`` (shared with offline
evaluation); the camera input, rectification, lifecycle, stats and health
come from ``perception_ros.inference_node``.

Topics (relative names: they follow the node's namespace; remap as usual):
  in   camera/image_raw (parameter image_topic), camera/camera_info (camera_info_topic)
  out  perception/segmentation/labels, /colorized, /summary, /stats,
       /model_info (latched, includes class names/colours); /diagnostics
"""

from __future__ import annotations

from typing import Any

import cv2
from sensor_msgs.msg import Image

from perception_core.pipelines import SegOutput, SegPipeline, colorize_labels, overlay
from perception_msgs.msg import SegmentationSummary
from perception_ros.inference_node import CameraFrame, InferenceHead, InferenceNodeBase

TOPIC_PREFIX = "perception/segmentation"


class SegmentationHead(InferenceHead):
    """The segmentation model of a node: labels, overlay and class summary."""

    TASK = "segmentation"

    def __init__(self, node: InferenceNodeBase, param_prefix: str = "", topic_prefix: str = TOPIC_PREFIX) -> None:
        super().__init__(node, param_prefix, topic_prefix)
        self.alpha = self.declare("alpha", 0.5, "overlay opacity of the class colours over the image",
                                  float_range=(0.0, 1.0))
        self.pipeline: SegPipeline | None = None
        node.runtime.add(self.prefix + "alpha", lambda v: setattr(self, "alpha", float(v)))

    def configure_outputs(self) -> None:
        assert self.model is not None
        self.pipeline = SegPipeline(self.model)
        self.class_ids = list(range(len(self.model.metadata.class_names)))
        self.labels_pub = self.node.create_publisher(Image, self.topic("labels"), 10)
        self.colorized_pub = self.node.create_publisher(Image, self.topic("colorized"), 10)
        self.summary_pub = self.node.create_publisher(SegmentationSummary, self.topic("summary"), 10)

    def publish(self, result: SegOutput, frame: CameraFrame) -> None:
        assert self.pipeline is not None and self.model is not None
        converter = self.node.converter
        camera_hw = frame.hw
        labels = self.at_camera_size(result.labels, frame)
        header = frame.header
        self.labels_pub.publish(converter.to_msg(labels, "mono8", header))
        if self.publish_colorized:
            # The input at model size is still the preprocessor's: frames are published before the next is inferred.
            base = frame.image if labels.shape == camera_hw else self.pipeline.preprocessor.resized
            if frame.order != "RGB":
                base = cv2.cvtColor(base, cv2.COLOR_BGR2RGB)
            blended = overlay(base, colorize_labels(labels, self.pipeline.colors), self.alpha)
            self.colorized_pub.publish(converter.to_msg(blended, "rgb8", header))
        meta = self.model.metadata
        self.summary_pub.publish(SegmentationSummary(
            header=header, ontology_version=meta.ontology_version, class_ids=self.class_ids,
            class_names=list(meta.class_names), pixel_counts=[int(c) for c in result.pixel_counts],
            fractions=[float(f) for f in result.class_fractions], ignored_pixels=result.ignored_pixels,
            height=int(result.labels.shape[0]), width=int(result.labels.shape[1])))


class SegmentationNode(InferenceNodeBase):
    """Runs the segmentation model on each camera frame (latest frame wins)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("segmentation_node", **kwargs)
        self.segmentation = self.add_head(SegmentationHead(self))
        self.start()

    @property
    def model(self) -> Any:
        return self.segmentation.model


if __name__ == "__main__":
    from seg_perception.main import segmentation_node

    segmentation_node()
