"""Segmentation node: camera image -> mono8 class ids, rgb8 overlay and a per-frame class summary.

Thin shell over ``perception_core.pipelines.SegPipeline`` (shared with offline
evaluation); node plumbing (model loading, stats, diagnostics, QoS) comes from
``perception_ros``.

Topics (defaults; remap as usual):
  in   /camera/image_raw (parameter image_topic)
  out  /perception/segmentation/labels, /colorized, /summary, /stats,
       /model_info (latched, includes class names/colours), /diagnostics
"""

from __future__ import annotations

import time
from typing import Any

import cv2
from sensor_msgs.msg import Image

from perception_core.pipelines import SegPipeline, colorize_labels, overlay
from perception_msgs.msg import SegmentationSummary
from perception_ros.inference_node import InferenceNodeBase
from perception_ros.parameters import declare
from perception_ros.spin import run_node


class SegmentationNode(InferenceNodeBase):
    """Runs the segmentation model on each camera frame (latest frame wins)."""

    TASK = "segmentation"
    PREFIX = "/perception/segmentation"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("segmentation_node", **kwargs)
        self.resize_to_camera = declare(self, "resize_to_camera", False,
                                        "publish labels at the camera's size (nearest) instead of the model's",
                                        read_only=True)
        self.publish_colorized = declare(self, "publish_colorized", True, "publish the rgb8 overlay",
                                         read_only=True)
        declare(self, "alpha", 0.5, "overlay opacity of the class colours over the image", float_range=(0.0, 1.0))
        self.pipeline = SegPipeline(self.model)
        meta = self.model.metadata
        self.class_ids = list(range(len(meta.class_names)))
        self.labels_pub = self.create_publisher(Image, f"{self.PREFIX}/labels", 10)
        self.colorized_pub = self.create_publisher(Image, f"{self.PREFIX}/colorized", 10)
        self.summary_pub = self.create_publisher(SegmentationSummary, f"{self.PREFIX}/summary", 10)
        self.subscribe_images()

    def process(self, msg: Image) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        image, order = self.converter.to_model_input(msg)
        result = self.pipeline.infer(image, order)
        t1 = time.perf_counter()
        labels = result.labels
        camera_hw = image.shape[:2]
        if self.resize_to_camera and labels.shape != camera_hw:
            labels = cv2.resize(labels, (camera_hw[1], camera_hw[0]), interpolation=cv2.INTER_NEAREST)
        header = msg.header
        self.labels_pub.publish(self.converter.to_msg(labels, "mono8", header))
        if self.publish_colorized:
            base = image if labels.shape == camera_hw else self.pipeline.preprocessor.resized
            if order != "RGB":
                base = cv2.cvtColor(base, cv2.COLOR_BGR2RGB)
            blended = overlay(base, colorize_labels(labels, self.pipeline.colors),
                              float(self.get_parameter("alpha").value))
            self.colorized_pub.publish(self.converter.to_msg(blended, "rgb8", header))
        meta = self.model.metadata
        self.summary_pub.publish(SegmentationSummary(
            header=header, ontology_version=meta.ontology_version, class_ids=self.class_ids,
            class_names=list(meta.class_names), pixel_counts=[int(c) for c in result.pixel_counts],
            fractions=[float(f) for f in result.class_fractions], ignored_pixels=result.ignored_pixels,
            height=int(result.labels.shape[0]), width=int(result.labels.shape[1])))
        t = result.timings
        post = t["postprocess_ms"] + (time.perf_counter() - t1) * 1e3
        pre = t["preprocess_ms"] + (t1 - t0) * 1e3 - sum(t.values())
        return pre, t["inference_ms"], post


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run_node(SegmentationNode, args))


if __name__ == "__main__":
    main()
