"""ROS plumbing shared by the inference nodes (depth here, segmentation in seg_perception).

Kept out of ``model_tools`` because it imports rclpy; kept free of model math,
which lives in ``model_tools.pipelines``. Provides the QoS profiles, parameter
declaration with descriptors, image conversion (cv_bridge when it imports,
``model_tools.image_codec`` otherwise), and :class:`InferenceNodeBase`: model
loading, the image subscription, drop handling, per-frame
``perception_msgs/InferenceStats`` and ~1 Hz ``/diagnostics``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from model_tools import image_codec
from model_tools.errors import ConfigError, ImageEncodingError, ModelToolsError
from model_tools.runtime.loader import BACKENDS, LoadedModel, load_model
from perception_msgs.msg import InferenceStats

# Encodings the model can take without a colour conversion (the preprocessor reorders channels).
DIRECT_ORDERS = {"rgb8": "RGB", "bgr8": "BGR"}
DIAGNOSTICS_PERIOD_S = 1.0
WARN_THROTTLE_S = 2.0


def sensor_qos() -> QoSProfile:
    """Sensor-data QoS with depth 1: best effort, latest frame wins, no backlog."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Reliable + transient-local: late subscribers (RViz, recorders) still get model info."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declare(node: Node, name: str, default: Any, description: str, *, read_only: bool = False,
            int_range: tuple[int, int] | None = None, float_range: tuple[float, float] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """Declare a parameter with a descriptor and return its value (validated against ``choices``)."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        descriptor.additional_constraints = f"one of {', '.join(choices)}"
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1])]
    value = node.declare_parameter(name, default, descriptor).value
    if choices and value not in choices:
        raise ConfigError(f"parameter {name}={value!r} is not one of {choices}")
    return value


class ImageConverter:
    """Image <-> numpy through ROS 2 cv_bridge if installed (the vehicle), else ``model_tools.image_codec``.

    cv_bridge's encoding semantics are what image_codec reproduces, so both
    paths give the same arrays; errors from either become ImageEncodingError.
    """

    def __init__(self, prefer_cv_bridge: bool = True) -> None:
        self._bridge = None
        if prefer_cv_bridge:
            try:
                from cv_bridge import CvBridge
            except ImportError:
                pass
            else:
                self._bridge = CvBridge()
        self.backend = "cv_bridge" if self._bridge is not None else "model_tools.image_codec"

    def to_array(self, msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
        if self._bridge is None:
            return image_codec.image_to_array(msg, desired_encoding)
        try:
            return self._bridge.imgmsg_to_cv2(msg, desired_encoding=desired_encoding)
        except Exception as err:  # cv_bridge raises CvBridgeError / TypeError / cv2.error
            raise ImageEncodingError(f"image ({msg.encoding}, {msg.width}x{msg.height}): {err}") from err

    def to_model_input(self, msg: Any) -> tuple[np.ndarray, str]:
        """(uint8 HxWx3 image, channel order): rgb8/bgr8 pass through, others convert to rgb8."""
        if msg.encoding in DIRECT_ORDERS:
            return self.to_array(msg, "passthrough"), DIRECT_ORDERS[msg.encoding]
        return self.to_array(msg, "rgb8"), "RGB"

    def to_msg(self, array: np.ndarray, encoding: str, header: Any) -> Image:
        """A sensor_msgs/Image of ``array`` carrying ``header`` (stamp and frame of the input)."""
        msg = Image(**image_codec.array_to_image_fields(array, encoding))
        msg.header = header
        return msg


class FrameStats:
    """Counters and a sliding window of frame times for stats and diagnostics."""

    def __init__(self, window: int = 50) -> None:
        self.processed = 0
        self.dropped = 0
        self._times: deque[tuple[float, float]] = deque(maxlen=window)  # (monotonic end, total ms)
        self._dropped_at_last_report = 0
        self.last_error = ""

    def record(self, total_ms: float) -> None:
        self.processed += 1
        self._times.append((time.monotonic(), total_ms))

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.last_error = reason

    def summary(self) -> dict[str, float]:
        now = time.monotonic()
        recent = [(t, ms) for t, ms in self._times if now - t <= 5.0]
        rate = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            rate = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
        latencies = [ms for _, ms in recent]
        new_drops = self.dropped - self._dropped_at_last_report
        self._dropped_at_last_report = self.dropped
        return {
            "rate_hz": rate,
            "latency_ms_mean": float(np.mean(latencies)) if latencies else 0.0,
            "latency_ms_max": float(np.max(latencies)) if latencies else 0.0,
            "frames_in_last_5s": float(len(recent)),
            "drops_since_last_report": float(new_drops),
        }


class InferenceNodeBase(Node):
    """Common shell of the depth and segmentation nodes: parameters, model, image in, stats out.

    Subclasses set ``TASK`` and ``PREFIX`` (topic namespace, e.g.
    ``/perception/depth``) and implement :meth:`process`, which turns one
    image into published outputs and returns ``(preprocess_ms, inference_ms,
    postprocess_ms)``. A :class:`ModelToolsError` from it drops the frame.
    """

    TASK = ""
    PREFIX = ""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.model_path = declare(self, "model_path", "", "ONNX, QDQ ONNX or QNN context-binary model file",
                                  read_only=True)
        self.backend = declare(self, "backend", "auto", "auto | npu | cpu (see docs/nodes.md for auto's rule)",
                               read_only=True, choices=BACKENDS)
        num_threads = declare(self, "num_threads", 0, "ONNX Runtime intra-op threads (0 = ORT default)",
                              read_only=True, int_range=(0, 64))
        self.image_topic = declare(self, "image_topic", "/camera/image_raw", "input image topic", read_only=True)
        if not self.model_path:
            raise ConfigError(f"{self.get_name()}: parameter model_path is empty; give the model file to run")
        self.model: LoadedModel = load_model(self.model_path, backend=self.backend, expected_task=self.TASK,
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
                    backend_used=self.model.backend_used, backend_reason=self.model.backend_reason)
        return json.dumps(info, sort_keys=True)

    def process(self, msg: Image) -> tuple[float, float, float]:
        raise NotImplementedError

    def on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        try:
            timings = self.process(msg)
        except ModelToolsError as err:
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
        if self.stats.processed == 0:
            level, message = DiagnosticStatus.WARN, "no frames processed yet"
        elif summary["drops_since_last_report"] > 0:
            level, message = DiagnosticStatus.WARN, f"dropping frames: {self.stats.last_error}"
        elif summary["frames_in_last_5s"] == 0:
            level, message = DiagnosticStatus.WARN, "no frames in the last 5 s"
        else:
            level, message = DiagnosticStatus.OK, f"{summary['rate_hz']:.1f} Hz on {self.model.backend_used}"
        values = {f"{k}": f"{v:.3f}" for k, v in summary.items()}
        values.update(frames_processed=str(self.stats.processed), frames_dropped=str(self.stats.dropped),
                      backend_used=self.model.backend_used, backend_requested=self.model.backend_requested,
                      model_path=str(self.model.path))
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: {self.TASK} inference",
                                  message=message, hardware_id=self.model.backend_used,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def run_node(node_class: type[Node], args: list[str] | None = None) -> int:
    """The jazzy ``main()`` pattern: init, spin, clean shutdown; a start-up error exits non-zero with one line."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ModelToolsError as err:
        print(f"{node_class.__name__}: error: {err}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
