"""The common shell of the inference nodes: parameters, model loading, image in, stats and health out."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from perception_core.errors import ConfigError, PerceptionError
from perception_core.resources import resolve_in_share
from perception_core.runtime.loader import BACKENDS, LoadedModel, load_model
from perception_msgs.msg import InferenceStats
from perception_ros.health import DIAGNOSTICS_PERIOD_S, FrameStats, diagnostic_array, frame_health
from perception_ros.images import ImageConverter
from perception_ros.parameters import declare
from perception_ros.qos import latched_qos, sensor_qos

WARN_THROTTLE_S = 2.0


class InferenceNodeBase(Node):
    """Common shell of the depth and segmentation nodes.

    Subclasses set ``TASK`` and ``PREFIX`` (topic namespace, e.g.
    ``/perception/depth``) and implement :meth:`process`, which turns one
    image into published outputs and returns ``(preprocess_ms, inference_ms,
    postprocess_ms)``. A :class:`PerceptionError` from it drops the frame.
    """

    TASK = ""
    PREFIX = ""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.model_path = declare(self, "model_path", "", "ONNX, QDQ ONNX or QNN context-binary model file: "
                                  "absolute, or relative to the installed offroad_perception_bringup share",
                                  read_only=True)
        self.backend = declare(self, "backend", "auto", "auto | npu | cpu (see docs/nodes.md for auto's rule)",
                               read_only=True, choices=BACKENDS)
        num_threads = declare(self, "num_threads", 0, "ONNX Runtime intra-op threads (0 = ORT default)",
                              read_only=True, int_range=(0, 64))
        self.image_topic = declare(self, "image_topic", "/camera/image_raw", "input image topic", read_only=True)
        if not self.model_path:
            raise ConfigError(f"{self.get_name()}: parameter model_path is empty; give the model file to run")
        self.model: LoadedModel = load_model(resolve_in_share(self.model_path), backend=self.backend, expected_task=self.TASK,
                                             num_threads=int(num_threads))
        self.converter = ImageConverter()
        self.get_logger().info(f"loaded {self.model_path} on {self.model.backend_used} "
                               f"({self.model.backend_reason}); images via {self.converter.backend}")
        self.stats = FrameStats()
        self.stats_pub = self.create_publisher(InferenceStats, f"{self.PREFIX}/stats", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.model_info_pub = self.create_publisher(String, f"{self.PREFIX}/model_info", latched_qos())
        self.model_info_pub.publish(String(data=self.model_info_json()))
        self.diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    def subscribe_images(self) -> None:
        """Call at the end of the subclass constructor, once its publishers exist."""
        self.image_sub = self.create_subscription(Image, self.image_topic, self.on_image, sensor_qos())

    def model_info_json(self) -> str:
        info = asdict(self.model.metadata)
        info.update(model_path=str(self.model.path), backend_requested=self.model.backend_requested,
                    backend_used=self.model.backend_used, backend_reason=self.model.backend_reason,
                    content_check=self.model.content_check)
        return json.dumps(info, sort_keys=True)

    def process(self, msg: Image) -> tuple[float, float, float]:
        raise NotImplementedError

    def on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        try:
            timings = self.process(msg)
        except PerceptionError as err:
            self.drop(msg, str(err))
            return
        total_ms = (time.perf_counter() - start) * 1e3
        self.stats.record(total_ms)
        pre, inf, post = timings
        self.stats_pub.publish(InferenceStats(
            header=msg.header, node_name=self.get_name(), model_path=str(self.model.path),
            backend_requested=self.model.backend_requested, backend_used=self.model.backend_used,
            preprocess_ms=pre, inference_ms=inf, postprocess_ms=post, total_ms=total_ms,
            frames_processed=self.stats.processed, frames_dropped=self.stats.dropped))

    def drop(self, msg: Any, reason: str) -> None:
        """Count a rejected frame, log it (throttled) and tell stats subscribers; the node keeps running."""
        self.stats.drop(reason)
        self.get_logger().warning(f"dropped frame from {self.image_topic}: {reason}",
                                  throttle_duration_sec=WARN_THROTTLE_S)
        self.stats_pub.publish(InferenceStats(
            header=msg.header, node_name=self.get_name(), model_path=str(self.model.path),
            backend_requested=self.model.backend_requested, backend_used=self.model.backend_used,
            frames_processed=self.stats.processed, frames_dropped=self.stats.dropped))

    def publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        level, message = frame_health(self.stats, summary, ok_suffix=f" on {self.model.backend_used}")
        values: dict[str, Any] = {k: f"{v:.3f}" for k, v in summary.items()}
        values.update(frames_processed=self.stats.processed, frames_dropped=self.stats.dropped,
                      backend_used=self.model.backend_used, backend_requested=self.model.backend_requested,
                      model_path=str(self.model.path))
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: {self.TASK} inference", self.model.backend_used,
            level, message, values))
