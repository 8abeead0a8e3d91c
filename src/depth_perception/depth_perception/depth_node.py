"""Depth node: camera image -> REP 118 metric depth (32FC1 metres) with REP 117 special values, and friends.

Thin shell: parameters, topics and message conversion. The depth math
(preprocess, host-side head composition, valid range, colouring, point cloud)
is ``perception_core.pipelines``, shared with offline bag evaluation; the
camera input, rectification, lifecycle and health come from
``perception_ros.inference_node``.

Topics (relative names: they follow the node's namespace; remap as usual):
  in   camera/image_raw (parameter image_topic), camera/camera_info (camera_info_topic)
  out  perception/depth/image, /camera_info, /colorized, /heads (optional),
       /points (optional), /stats, /model_info (latched); /diagnostics
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from perception_core.camera import OutputCamera
from perception_core.errors import ConfigError
from perception_core.pipelines import (
    DepthOutput,
    DepthPipeline,
    colorize_depth,
    depth_to_points,
    pack_points,
    scale_intrinsics,
)
from perception_core.range_correction import load_range_correction_for
from perception_core.resources import resolve_in_share
from perception_msgs.msg import DepthHeads
from perception_ros.inference_node import CameraFrame, InferenceHead, InferenceNodeBase

TOPIC_PREFIX = "perception/depth"


class DepthHead(InferenceHead):
    """The depth model of a node: REP 118/117 depth, its camera_info, colourised view, heads and cloud."""

    TASK = "depth"

    def __init__(self, node: InferenceNodeBase, param_prefix: str = "", topic_prefix: str = TOPIC_PREFIX) -> None:
        super().__init__(node, param_prefix, topic_prefix)
        self.max_depth = self.declare(
            "max_depth", 0.0, "depth range top in metres; 0 = the model's metadata. Otherwise it overrides, with a "
            "warning: the composition scale of 'separate' models, only the range top of 'composed' ones",
            read_only=True, float_range=(0.0, 1000.0))
        self.min_depth = self.declare("min_depth", -1.0, "valid range bottom in metres (nearer is -Inf, REP 117); "
                                      "-1 = the model's metadata", float_range=(-1.0, 1000.0))
        self.publish_heads = self.declare("publish_heads", False, "publish the raw integer/fractional heads",
                                          read_only=True)
        self.publish_points = self.declare("publish_points", False, "publish a PointCloud2 in the camera frame "
                                           "(finite points only)", read_only=True)
        self.point_stride = self.declare("point_stride", 4, "use every n-th pixel in x and y for the cloud",
                                         int_range=(1, 64))
        self.camera_height = self.declare(
            "camera_height", 0.0, "camera height above the ground plane of the base frame in metres, for depth "
            "models that need it (metadata depth_camera canonical_focal_height); 0 = unset",
            read_only=True, float_range=(0.0, 100.0))
        self.range_correction_file = self.declare(
            "range_correction_file", "", "the model's range bias measured over a grid of cameras "
            "(python -m model_tools.depth_range_fit): a correction file, or a folder of them (the one measured "
            "for the running model is taken); absolute, or relative to the installed offroad_perception_bringup "
            "share. Applied only to its model and to cameras inside its grid; '' = none", read_only=True)
        self.interpolate_levels = self.declare(
            "interpolate_levels", True, "a levels depth model: replace the staircase its integer steps leave on "
            "smooth surfaces by the surface through the level edges, column by column (docs/depth.md, \"Level "
            "interpolation\"); false = the two heads' composition as exported", read_only=True)
        self.range_correction_status = "off"  # the last frame's: applied, off, or why it was refused
        self.pipeline: DepthPipeline | None = None
        runtime = node.runtime
        runtime.add(self.prefix + "point_stride", lambda v: setattr(self, "point_stride", int(v)))
        runtime.add(self.prefix + "min_depth", self._set_min_depth, self._check_min_depth)

    def _check_min_depth(self, value: float) -> str | None:
        if value < 0 and value != -1.0:
            return "must be >= 0, or -1 for the model's metadata"
        top = self.pipeline.max_depth if self.pipeline is not None else (self.max_depth or None)
        if top is not None and value >= top:
            return f"must be below max_depth ({top:g} m)"
        return None

    def _set_min_depth(self, value: float) -> None:
        self.min_depth = float(value)
        if self.pipeline is not None:
            self.pipeline.min_depth = float(self.pipeline.metadata.min_depth if value < 0 else value)

    # ------------------------------------------------------------------ InferenceHead

    def configure_outputs(self) -> None:
        assert self.model is not None
        meta = self.model.metadata
        if meta.needs_camera_height and not self.camera_height > 0:
            raise ConfigError(f"{self.model.path} needs the camera's height above the ground: set the "
                              f"{self.prefix}camera_height parameter (metres)")
        if meta.needs_camera and not self.node.require_camera_info:
            raise ConfigError(f"{self.model.path} rescales depth with the camera's K: require_camera_info must "
                              "stay true")
        correction, missing = None, ""
        if self.range_correction_file:
            correction, missing = load_range_correction_for(resolve_in_share(self.range_correction_file), meta)
        self.pipeline = DepthPipeline(self.model, max_depth=self.max_depth or None,
                                      min_depth=None if self.min_depth < 0 else self.min_depth,
                                      range_correction=correction, interpolate_levels=self.interpolate_levels)
        # The camera is checked per frame; a missing file or another model's is known now (the pipeline drops it).
        self.range_correction_status = f"off: {missing}" if missing else self.pipeline.range_correction_off
        if self.range_correction_status != "off":
            self.node.get_logger().warning(f"{self.prefix}range_correction_file {self.range_correction_file}: "
                                           f"not applied: {self.range_correction_status[len('off: '):]}")
        if self.publish_heads and self.model.metadata.depth_outputs != "separate":
            self.node.get_logger().warning(f"publish_heads ignored: {self.model.path} outputs composed depth, "
                                           "no heads")
            self.publish_heads = False
        node = self.node
        self.depth_pub = node.create_publisher(Image, self.topic("image"), 10)
        self.info_pub = node.create_publisher(CameraInfo, self.topic("camera_info"), 10)
        self.colorized_pub = node.create_publisher(Image, self.topic("colorized"), 10)
        self.heads_pub = node.create_publisher(DepthHeads, self.topic("heads"), 10) if self.publish_heads else None
        self.points_pub = node.create_publisher(PointCloud2, self.topic("points"), 10) if self.publish_points else None

    def infer(self, frame: CameraFrame) -> DepthOutput:
        """The frame's depth; a camera-aware model rescales with the frame's K and the camera_height parameter."""
        assert self.pipeline is not None
        return self.pipeline.infer(frame.image, frame.order, camera_k=frame.camera.k if frame.camera else None,
                                   camera_hw=frame.hw, camera_height=self.camera_height or None)

    def on_camera(self, camera: OutputCamera, camera_hw: tuple[int, int], header: Any) -> None:
        """Publish the depth's camera_info as soon as the camera's is known, ahead of the first depth image:
        a consumer that keeps the latest camera_info (the costmap node) then has it for the first frame too."""
        assert self.model is not None
        depth_hw = camera_hw if self.resize_to_camera else tuple(self.model.session.get_outputs()[0].shape[-2:])
        if not all(isinstance(v, int) for v in depth_hw):
            return  # a dynamic output size: the first frame tells
        info = camera_info_for(camera, camera_hw, depth_hw)
        info.header = header
        self.info_pub.publish(info)

    def diagnostic_values(self) -> dict[str, Any]:
        values = {"depth_range_correction": self.range_correction_status}
        if self.pipeline is not None:
            values["depth_level_interpolation"] = (
                "on" if self.pipeline.interpolate_levels else
                "off" if not self.interpolate_levels else "off: the model has no integer levels to interpolate")
        return values

    def publish(self, result: DepthOutput, frame: CameraFrame) -> None:
        assert self.pipeline is not None and self.model is not None
        if not result.range_correction.startswith("off"):  # "off...": none to apply, and configure said why
            if result.range_correction != self.range_correction_status and result.range_correction != "applied":
                self.node.get_logger().warning(f"{self.prefix}range_correction_file not applied: "
                                               f"{result.range_correction}")
            self.range_correction_status = result.range_correction
        converter = self.node.converter
        camera_hw = frame.hw
        depth = self.at_camera_size(result.depth, frame)
        header = frame.header
        info = None
        if frame.camera is not None:  # camera_info before the depth it describes: consumers keep the latest
            info = camera_info_for(frame.camera, camera_hw, depth.shape[:2])
            info.header = header
            self.info_pub.publish(info)
        self.depth_pub.publish(converter.to_msg(depth, "32FC1", header))
        if info is not None and self.points_pub is not None:
            self.points_pub.publish(point_cloud(depth, np.asarray(info.k), header, self.point_stride))
        if self.publish_colorized:
            colour = colorize_depth(depth, self.pipeline.max_depth, self.pipeline.min_depth)
            self.colorized_pub.publish(converter.to_msg(colour, "rgb8", header))
        if self.heads_pub is not None:
            self.heads_pub.publish(DepthHeads(
                header=header,
                integer=converter.to_msg(result.integer, "32FC1", header),
                fractional=converter.to_msg(result.fractional, "32FC1", header),
                max_depth=self.pipeline.max_depth, integer_head_kind=self.model.metadata.integer_head_kind,
                levels=self.model.metadata.levels))


def camera_info_for(camera: OutputCamera, camera_hw: tuple[int, int], out_hw: tuple[int, int]) -> CameraInfo:
    """camera_info of an image derived from the camera image: K and P scaled to ``out_hw``; D and R as the
    node's rectification left them (D = 0 for what is rectified)."""
    out = CameraInfo()
    out.height, out.width = int(out_hw[0]), int(out_hw[1])
    out.distortion_model = camera.distortion_model
    out.d = [float(v) for v in camera.d]
    out.r = camera.r.reshape(-1).tolist()
    out.k = scale_intrinsics(camera.k, camera_hw, out_hw).reshape(-1).tolist()
    out.p = scale_intrinsics(camera.p, camera_hw, out_hw).reshape(-1).tolist()
    return out


def point_cloud(depth: np.ndarray, k: np.ndarray, header: Any, stride: int) -> PointCloud2:
    """xyz float32 cloud of the finite depth pixels (REP 117 +/-Inf and NaN are left out), so it is dense."""
    points, _ = depth_to_points(depth, k, stride=stride)
    packed = pack_points(points)
    cloud = PointCloud2(header=header, height=packed["height"], width=packed["width"],
                        is_bigendian=packed["is_bigendian"], point_step=packed["point_step"],
                        row_step=packed["row_step"], is_dense=bool(np.isfinite(points).all()))
    cloud.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in packed["fields"]]
    data = array.array("B")
    data.frombytes(packed["data"].data)
    cloud.data = data
    return cloud


class DepthNode(InferenceNodeBase):
    """Runs the dual-head depth model on each camera frame (latest frame wins)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("depth_node", **kwargs)
        self.depth = self.add_head(DepthHead(self))
        self.start()

    @property
    def model(self) -> Any:
        return self.depth.model


if __name__ == "__main__":
    from depth_perception.main import depth_node

    depth_node()
