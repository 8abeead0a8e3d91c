"""Depth node: camera image -> REP 118 metric depth (32FC1 metres, NaN invalid) and friends.

Thin shell: parameters, topics and message conversion. The depth math
(preprocess, host-side head composition, valid range, colouring, point cloud)
is ``perception_core.pipelines``, shared with offline bag evaluation.

Topics (defaults; remap as usual):
  in   /camera/image_raw (parameter image_topic), /camera/camera_info (camera_info_topic)
  out  /perception/depth/image, /camera_info, /colorized, /heads (optional),
       /points (optional), /stats, /model_info (latched), /diagnostics
"""

from __future__ import annotations

import array
import time
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from perception_core.errors import PerceptionError
from perception_core.pipelines import DepthPipeline, colorize_depth, depth_to_points, pack_points, scale_intrinsics
from perception_msgs.msg import DepthHeads
from perception_ros.inference_node import InferenceNodeBase
from perception_ros.parameters import declare
from perception_ros.qos import sensor_qos
from perception_ros.spin import run_node


class DepthNode(InferenceNodeBase):
    """Runs the dual-head depth model on each camera frame (latest frame wins)."""

    TASK = "depth"
    PREFIX = "/perception/depth"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("depth_node", **kwargs)
        max_depth = declare(self, "max_depth", 0.0, "depth range top in metres; 0 = the model's metadata",
                            read_only=True, float_range=(0.0, 1000.0))
        min_depth = declare(self, "min_depth", -1.0, "valid range bottom in metres; -1 = the model's metadata",
                            read_only=True, float_range=(-1.0, 1000.0))
        self.camera_info_topic = declare(self, "camera_info_topic", "/camera/camera_info",
                                         "camera_info matching image_topic", read_only=True)
        self.require_camera_info = declare(
            self, "require_camera_info", True,
            "drop frames until camera_info arrives (False: publish depth without camera_info/points)",
            read_only=True)
        self.resize_to_camera = declare(self, "resize_to_camera", False,
                                        "publish depth at the camera's size (nearest) instead of the model's",
                                        read_only=True)
        self.publish_colorized = declare(self, "publish_colorized", True, "publish an rgb8 colourised depth",
                                         read_only=True)
        self.publish_heads = declare(self, "publish_heads", False, "publish raw integer/fractional heads",
                                     read_only=True)
        self.publish_points = declare(self, "publish_points", False, "publish a PointCloud2 in the camera frame",
                                      read_only=True)
        self.point_stride = declare(self, "point_stride", 4, "use every n-th pixel in x and y for the cloud",
                                    int_range=(1, 64))
        self.pipeline = DepthPipeline(self.model, max_depth=max_depth or None,
                                      min_depth=None if min_depth < 0 else min_depth)
        meta = self.model.metadata
        if self.publish_heads and meta.depth_outputs != "separate":
            self.get_logger().warning(f"publish_heads ignored: {self.model.path} outputs composed depth, no heads")
            self.publish_heads = False
        self.camera_info: CameraInfo | None = None
        self.depth_pub = self.create_publisher(Image, f"{self.PREFIX}/image", 10)
        self.info_pub = self.create_publisher(CameraInfo, f"{self.PREFIX}/camera_info", 10)
        self.colorized_pub = self.create_publisher(Image, f"{self.PREFIX}/colorized", 10)
        self.heads_pub = self.create_publisher(DepthHeads, f"{self.PREFIX}/heads", 10) if self.publish_heads else None
        self.points_pub = (self.create_publisher(PointCloud2, f"{self.PREFIX}/points", 10)
                           if self.publish_points else None)
        self.info_sub = self.create_subscription(CameraInfo, self.camera_info_topic, self.on_camera_info,
                                                 sensor_qos())
        self.subscribe_images()

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def process(self, msg: Image) -> tuple[float, float, float]:
        info = self.camera_info
        if info is None and self.require_camera_info:
            raise PerceptionError(f"no camera_info on {self.camera_info_topic} yet; depth needs the intrinsics")
        t0 = time.perf_counter()
        image, order = self.converter.to_model_input(msg)
        if info is not None and info.width and (info.height, info.width) != image.shape[:2]:
            raise PerceptionError(f"image on {self.image_topic} is {image.shape[1]}x{image.shape[0]} but camera_info "
                                  f"on {self.camera_info_topic} says {info.width}x{info.height}")
        result = self.pipeline.infer(image, order)
        t1 = time.perf_counter()
        camera_hw = image.shape[:2]
        depth = result.depth
        if self.resize_to_camera and depth.shape != camera_hw:
            depth = cv2.resize(depth, (camera_hw[1], camera_hw[0]), interpolation=cv2.INTER_NEAREST)
        header = msg.header
        self.depth_pub.publish(self.converter.to_msg(depth, "32FC1", header))
        if info is not None:
            out_info = self.scaled_camera_info(info, camera_hw, depth.shape[:2])
            out_info.header = header
            self.info_pub.publish(out_info)
            if self.points_pub is not None:
                self.points_pub.publish(self.point_cloud(depth, np.asarray(out_info.k), header))
        if self.publish_colorized:
            colour = colorize_depth(depth, self.pipeline.max_depth, self.pipeline.min_depth)
            self.colorized_pub.publish(self.converter.to_msg(colour, "rgb8", header))
        if self.heads_pub is not None:
            self.heads_pub.publish(DepthHeads(
                header=header,
                integer=self.converter.to_msg(result.integer, "32FC1", header),
                fractional=self.converter.to_msg(result.fractional, "32FC1", header),
                max_depth=self.pipeline.max_depth, integer_head_kind=self.model.metadata.integer_head_kind,
                levels=self.model.metadata.levels))
        t = result.timings
        post = t["postprocess_ms"] + (time.perf_counter() - t1) * 1e3
        pre = t["preprocess_ms"] + (t1 - t0) * 1e3 - sum(t.values())  # + message conversion
        return pre, t["inference_ms"], post

    @staticmethod
    def scaled_camera_info(info: CameraInfo, camera_hw: tuple[int, int], out_hw: tuple[int, int]) -> CameraInfo:
        """camera_info for the depth image: K and P scaled, D and R kept (they are resolution-free)."""
        source_hw = (info.height, info.width) if info.height and info.width else camera_hw
        out = CameraInfo()
        out.height, out.width = int(out_hw[0]), int(out_hw[1])
        out.distortion_model = info.distortion_model
        out.d = info.d
        out.r = info.r
        out.k = scale_intrinsics(np.asarray(info.k), source_hw, out_hw).ravel()
        out.p = scale_intrinsics(np.asarray(info.p), source_hw, out_hw).ravel()
        return out

    def point_cloud(self, depth: np.ndarray, k: np.ndarray, header: Any) -> PointCloud2:
        points, _ = depth_to_points(depth, k, stride=int(self.get_parameter("point_stride").value))
        packed = pack_points(points)
        cloud = PointCloud2(header=header, height=packed["height"], width=packed["width"],
                            is_bigendian=packed["is_bigendian"], point_step=packed["point_step"],
                            row_step=packed["row_step"], is_dense=packed["is_dense"])
        cloud.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in packed["fields"]]
        data = array.array("B")
        data.frombytes(packed["data"].data)
        cloud.data = data
        return cloud


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run_node(DepthNode, args))


if __name__ == "__main__":
    main()
