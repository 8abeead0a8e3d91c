"""The common shell of the inference nodes: one camera input, one or more models ("heads"), stats and health.

``InferenceNodeBase`` is a ``ManagedNode`` (lifecycle, or plain with
``autostart``). It owns what every camera-model node shares:

- the input: ``image_topic`` and ``camera_info_topic`` (relative names, so a
  namespace or a remap moves them), sensor-data QoS depth 1 (latest frame
  wins), the camera encodings of ``ImageConverter``, camera_info validation
  (``perception_core.camera``) and rectification per ``rectification``
  (``node``: undistort here, maps once per camera_info; ``upstream``: the
  input is ``image_rect``; ``off``);
- arrival accounting (``ArrivalMonitor``: frames lost in transport, frames
  replaced while busy, the camera's rate against ``expected_rate_hz``);
- drops: any ``PerceptionError`` while preparing or processing a frame is a
  counted, named drop, logged (throttled) and the node keeps running;
- one ``/diagnostics`` status per node, named by its fully qualified name so
  several cameras' stacks are told apart.

A head (``InferenceHead``) is one model with its parameters (under a prefix:
``""`` in a single-model node, ``"depth."`` in the fused node), its pipeline
and its publishers under a topic prefix such as ``perception/depth``. With
more than one head, each frame is converted once and the heads' models run
concurrently on it (ONNX Runtime releases the GIL), so every processed frame
yields every head's outputs with the same stamp.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from perception_core.camera import RECTIFICATION_MODES, CameraModel, OutputCamera, Rectifier, output_camera
from perception_core.errors import ConfigError, DataError, PerceptionError
from perception_core.geometry import stamp_ns
from perception_core.resources import resolve_in_share
from perception_core.runtime.loader import BACKENDS, LoadedModel, load_model
from perception_msgs.msg import InferenceStats
from perception_ros.health import (
    DIAGNOSTICS_PERIOD_S,
    ArrivalMonitor,
    FrameStats,
    arrival_health,
    diagnostic_array,
    frame_health,
)
from perception_ros.images import ImageConverter
from perception_ros.lifecycle import ManagedNode
from perception_ros.parameters import RuntimeParameters, declare
from perception_ros.qos import latched_qos, sensor_qos

WARN_THROTTLE_S = 2.0
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute by ROS convention: one aggregator for the whole robot


@dataclass
class CameraFrame:
    """One input frame, converted once for every head."""

    header: Any
    image: np.ndarray  # uint8 HxWx3, rectified per the node's mode
    order: str  # "RGB" or "BGR"
    camera: OutputCamera | None  # intrinsics of ``image`` (None: no camera_info and not required)
    convert_ms: float  # message conversion + rectification

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


class InferenceHead:
    """One model of an inference node: its parameters, pipeline, publishers, stats and model info.

    Subclasses set ``TASK`` and implement ``configure_outputs`` (``self.pipeline``
    and publishers from ``self.model``) and ``publish``. ``infer`` runs the
    pipeline and may run in a worker thread: no publishing, no rclpy calls.
    """

    TASK = ""
    pipeline: Any = None

    def __init__(self, node: InferenceNodeBase, param_prefix: str, topic_prefix: str) -> None:
        self.node = node
        self.prefix = param_prefix
        self.topic_prefix = topic_prefix
        self.model_path = self.declare("model_path", "", "ONNX, QDQ ONNX or QNN context-binary model file: "
                                       "absolute, or relative to the installed offroad_perception_bringup share",
                                       read_only=True)
        self.num_threads = self.declare("num_threads", 0, "ONNX Runtime intra-op threads (0 = ORT default)",
                                        read_only=True, int_range=(0, 64))
        self.resize_to_camera = self.declare("resize_to_camera", False, "publish the outputs at the camera's size "
                                             "(nearest) instead of the model's", read_only=True)
        self.publish_colorized = self.declare("publish_colorized", True, "publish the rgb8 view of the output")
        node.runtime.add(self.prefix + "publish_colorized", lambda v: setattr(self, "publish_colorized", bool(v)))
        self.model: LoadedModel | None = None
        self.stats_pub: Any = None
        self.model_info_pub: Any = None

    def declare(self, name: str, default: Any, description: str, **constraints: Any) -> Any:
        return declare(self.node, self.prefix + name, default, description, **constraints)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}/{name}"

    # ------------------------------------------------------------------ life cycle

    def configure(self, backend: str) -> None:
        if not self.model_path:
            raise ConfigError(f"{self.node.get_name()}: parameter {self.prefix}model_path is empty; give the "
                              f"{self.TASK} model file to run")
        self.model = load_model(resolve_in_share(self.model_path), backend=backend, expected_task=self.TASK,
                                num_threads=int(self.num_threads))
        self.node.get_logger().info(f"loaded {self.model_path} on {self.model.backend_used} "
                                    f"({self.model.backend_reason})")
        self.stats_pub = self.node.create_publisher(InferenceStats, self.topic("stats"), 10)
        self.model_info_pub = self.node.create_publisher(String, self.topic("model_info"), latched_qos())
        self.configure_outputs()
        self.model_info_pub.publish(String(data=self.model_info_json()))

    def release(self) -> None:
        for name in [n for n, v in vars(self).items() if n.endswith("_pub") and v is not None]:
            self.node.destroy_publisher(getattr(self, name))
            setattr(self, name, None)
        self.model = None
        self.pipeline = None

    def configure_outputs(self) -> None:
        raise NotImplementedError

    def diagnostic_values(self) -> dict[str, Any]:
        """Key/values of this model's status for the node's /diagnostics; heads may add their own."""
        return {}

    def infer(self, frame: CameraFrame) -> Any:
        assert self.pipeline is not None
        return self.pipeline.infer(frame.image, frame.order)

    def at_camera_size(self, image: np.ndarray, frame: CameraFrame) -> np.ndarray:
        """``image`` resized to the camera's size (nearest) when ``resize_to_camera`` asks for it."""
        if not self.resize_to_camera or image.shape[:2] == frame.hw:
            return image
        import cv2

        return cv2.resize(image, (frame.hw[1], frame.hw[0]), interpolation=cv2.INTER_NEAREST)

    def publish(self, result: Any, frame: CameraFrame) -> None:
        raise NotImplementedError

    def on_camera(self, camera: OutputCamera, camera_hw: tuple[int, int], header: Any) -> None:
        """A new valid camera model arrived (before any frame of it is processed); heads may announce it."""

    # ------------------------------------------------------------------ reporting

    def model_info_json(self) -> str:
        assert self.model is not None
        info = asdict(self.model.metadata)
        info.update(model_path=str(self.model.path), backend_requested=self.model.backend_requested,
                    backend_used=self.model.backend_used, backend_reason=self.model.backend_reason,
                    content_check=self.model.content_check)
        return json.dumps(info, sort_keys=True)

    def publish_stats(self, header: Any, stats: FrameStats, timings: tuple[float, float, float] | None = None,
                      total_ms: float = 0.0) -> None:
        if self.model is None or self.stats_pub is None:
            return
        pre, inf, post = timings or (0.0, 0.0, 0.0)
        self.stats_pub.publish(InferenceStats(
            header=header, node_name=self.node.get_name(), model_path=str(self.model.path),
            backend_requested=self.model.backend_requested, backend_used=self.model.backend_used,
            preprocess_ms=pre, inference_ms=inf, postprocess_ms=post, total_ms=total_ms,
            frames_processed=stats.processed, frames_dropped=stats.dropped))


class InferenceNodeBase(ManagedNode):
    """Camera in, heads run, stats and health out. Subclasses add heads in ``__init__`` then call ``start()``."""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.backend = declare(self, "backend", "auto", "auto | npu | cpu for every model of this node "
                               "(see docs/nodes.md for auto's rule)", read_only=True, choices=BACKENDS)
        self.image_topic = declare(self, "image_topic", "camera/image_raw",
                                   "input image topic (relative: follows the node's namespace)", read_only=True)
        self.camera_info_topic = declare(self, "camera_info_topic", "camera/camera_info",
                                         "camera_info of image_topic", read_only=True)
        self.require_camera_info = declare(
            self, "require_camera_info", True,
            "drop frames until a valid camera_info arrives (false: process without intrinsics, unrectified)",
            read_only=True)
        self.rectification = declare(
            self, "rectification", "node", "node: undistort here with camera_info's D and K (maps computed once "
            "per camera_info); upstream: image_topic is already rectified (image_rect), its intrinsics are P; "
            "off: use the image as it is (published camera_info keeps D)", read_only=True,
            choices=RECTIFICATION_MODES)
        self.expected_rate_hz = declare(
            self, "expected_rate_hz", 0.0, "the camera's frame rate; a slower or silent input is reported in "
            "/diagnostics (0 = not checked; frames lost in transport are reported regardless)",
            float_range=(0.0, 1000.0))
        self.heads: list[InferenceHead] = []
        self.converter = ImageConverter()
        self.rectifier = Rectifier()
        self.stats = FrameStats()
        self.arrival = ArrivalMonitor()
        self.camera_info: CameraInfo | None = None
        self._camera: tuple[Any, CameraModel | None, str] | None = None  # (message, model, error) cache
        self._pool: ThreadPoolExecutor | None = None
        self.diagnostics_pub: Any = None
        self.runtime = RuntimeParameters(self)
        self.runtime.add("expected_rate_hz", lambda v: setattr(self, "expected_rate_hz", float(v)))

    def add_head(self, head: InferenceHead) -> InferenceHead:
        self.heads.append(head)
        return head

    # ------------------------------------------------------------------ lifecycle hooks

    def configure_node(self) -> None:
        for head in self.heads:
            head.configure(self.backend)
        self.get_logger().info(f"images via {self.converter.backend}; input {self.resolve_topic_name(self.image_topic)}")
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        if len(self.heads) > 1:
            self._pool = ThreadPoolExecutor(max_workers=len(self.heads), thread_name_prefix=self.get_name())

    def activate_node(self) -> None:
        # camera_info first: the executor serves ready subscriptions in creation order, so a frame and its
        # camera_info taken in one spin are handled intrinsics-first.
        self.create_input_subscription(CameraInfo, self.camera_info_topic, self.on_camera_info, sensor_qos())
        self.create_input_subscription(
            Image, self.image_topic, self._on_image_with_info, sensor_qos(),
            event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_frames_lost))
        self.create_input_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    def cleanup_node(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for head in self.heads:
            head.release()
        if self.diagnostics_pub is not None:
            self.destroy_publisher(self.diagnostics_pub)
            self.diagnostics_pub = None

    @property
    def models(self) -> list[LoadedModel]:
        return [h.model for h in self.heads if h.model is not None]

    # ------------------------------------------------------------------ input

    def on_camera_info(self, msg: CameraInfo) -> None:
        known = self._camera[1].key() if self._camera is not None and self._camera[1] is not None else None
        self.camera_info = msg
        try:
            camera = self.camera_model()
        except DataError:
            return  # the frames that come with it are dropped by name
        if camera is not None and camera.key() != known and self.heads and self.heads[0].model is not None:
            out = output_camera(camera, self.rectification)
            for head in self.heads:
                head.on_camera(out, (camera.height, camera.width), msg.header)

    def _on_frames_lost(self, info: Any) -> None:
        self.arrival.on_lost(int(info.total_count_change))

    def _on_image_with_info(self, msg: Image, info: Any) -> None:
        sequence = info.get("publication_sequence_number") if isinstance(info, dict) else None
        self.arrival.on_frame(stamp_ns(msg.header), int(sequence) if sequence else None)
        self.on_image(msg)

    def camera_model(self) -> CameraModel | None:
        """The validated model of the latest camera_info (validated once per message)."""
        msg = self.camera_info
        if msg is None:
            return None
        if self._camera is None or self._camera[0] is not msg:
            try:
                self._camera = (msg, CameraModel.from_message(msg, source=f"camera_info on {self.camera_info_topic}"),
                                "")
            except DataError as err:
                self._camera = (msg, None, str(err))
        if self._camera[2]:
            raise DataError(self._camera[2])
        return self._camera[1]

    def prepare(self, msg: Image) -> CameraFrame:
        """Decode, check against camera_info and rectify; a PerceptionError drops the frame by name."""
        start = time.perf_counter()
        camera = self.camera_model()
        if camera is None and self.require_camera_info:
            raise DataError(f"no camera_info on {self.camera_info_topic} yet; the intrinsics are needed to "
                            "place depth and to rectify")
        image, order = self.converter.to_model_input(msg)
        out_camera = None
        if camera is not None:
            camera.check_image_size(image.shape[:2], self.image_topic, f"camera_info on {self.camera_info_topic}")
            if self.rectification == "node":
                image = self.rectifier.rectify(image, camera)
            out_camera = output_camera(camera, self.rectification)
        return CameraFrame(msg.header, image, order, out_camera, (time.perf_counter() - start) * 1e3)

    def on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        try:
            frame = self.prepare(msg)
            results = self.run_heads(frame)
            post_ms = []
            for head, result in zip(self.heads, results, strict=True):
                t0 = time.perf_counter()
                head.publish(result, frame)
                post_ms.append((time.perf_counter() - t0) * 1e3)
        except PerceptionError as err:
            self.drop(msg, str(err))
            return
        total_ms = (time.perf_counter() - start) * 1e3
        self.stats.record(total_ms)
        for head, result, post in zip(self.heads, results, post_ms, strict=True):
            t = result.timings
            head.publish_stats(msg.header, self.stats,
                               (t["preprocess_ms"] + frame.convert_ms, t["inference_ms"], t["postprocess_ms"] + post),
                               total_ms)

    def run_heads(self, frame: CameraFrame) -> list[Any]:
        """Every head's result for the frame: inline for one head, concurrently for several."""
        if self._pool is None:
            return [head.infer(frame) for head in self.heads]
        futures = [self._pool.submit(head.infer, frame) for head in self.heads]
        return [future.result() for future in futures]

    def drop(self, msg: Any, reason: str) -> None:
        """Count a rejected frame, log it (throttled) and tell stats subscribers; the node keeps running."""
        self.stats.drop(reason)
        self.get_logger().warning(f"dropped frame from {self.image_topic}: {reason}",
                                  throttle_duration_sec=WARN_THROTTLE_S)
        for head in self.heads:
            head.publish_stats(msg.header, self.stats)

    # ------------------------------------------------------------------ health

    def camera_warning(self) -> str | None:
        """A WARN when distortion is known but left in the outputs (rectification off)."""
        if self.rectification != "off" or self._camera is None or self._camera[1] is None:
            return None
        if self._camera[1].distorted:
            return (f"camera_info on {self.camera_info_topic} has lens distortion but rectification is off: "
                    "outputs stay in the distorted camera (published camera_info keeps D)")
        return None

    def diagnostic_values(self) -> dict[str, Any]:
        """Key/values of the node's status; subclasses may add their own."""
        return {}

    def publish_diagnostics(self) -> None:
        if self.diagnostics_pub is None:
            return
        summary = self.stats.summary()
        arrival = self.arrival.summary(self.expected_rate_hz)
        backends = sorted({m.backend_used for m in self.models}) or ["none"]
        level, message = frame_health(self.stats, summary, warning=self.camera_warning(),
                                      ok_suffix=f" on {'+'.join(backends)}",
                                      arrival=arrival_health(arrival, self.image_topic))
        values: dict[str, Any] = {k: f"{v:.3f}" for k, v in {**summary, **arrival}.items()}
        values.update(frames_processed=self.stats.processed, frames_dropped=self.stats.dropped,
                      frames_received=self.arrival.received, frames_lost_in_transport=self.arrival.lost,
                      frames_skipped_latest_wins=self.arrival.skipped, last_drop_reason=self.stats.last_error,
                      backend_used="+".join(backends), rectification=self.rectification,
                      rectification_maps_computed=self.rectifier.maps_computed,
                      unknown_parameters=",".join(self.unknown_parameters),
                      input=self.resolve_topic_name(self.image_topic))
        for head in self.heads:
            if head.model is not None:
                values[f"{head.TASK}_model_path"] = str(head.model.path)
                values[f"{head.TASK}_backend_requested"] = head.model.backend_requested
                values.update(head.diagnostic_values())
        values.update(self.diagnostic_values())
        tasks = "+".join(h.TASK for h in self.heads)
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: {tasks} inference",
            "+".join(backends), level, message, values))
