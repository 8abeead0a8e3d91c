"""sensor_msgs/Image <-> numpy: ROS 2 cv_bridge where it imports (the vehicle), else perception_core.image_codec."""

from __future__ import annotations

from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from perception_core import image_codec
from perception_core.errors import ImageEncodingError

# Encodings the model can take without a colour conversion (the preprocessor reorders channels).
DIRECT_ORDERS = {"rgb8": "RGB", "bgr8": "BGR"}
# What a camera may publish into the inference nodes: colour, mono, 16-bit colour, and the YUV layouts
# of camera drivers (qrb_ros_camera's nv12, V4L2/GMSL cameras' uyvy/yuyv and nv21).
CAMERA_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "rgba16", "bgra16", "mono16",
                    *image_codec.YUV_ENCODINGS)


class ImageConverter:
    """Image <-> numpy through ROS 2 cv_bridge if installed, else ``perception_core.image_codec``.

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
        self.backend = "cv_bridge" if self._bridge is not None else "perception_core.image_codec"

    def to_array(self, msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
        if self._bridge is None:
            return image_codec.image_to_array(msg, desired_encoding)
        try:
            return self._bridge.imgmsg_to_cv2(msg, desired_encoding=desired_encoding)
        except Exception as err:  # cv_bridge raises CvBridgeError / TypeError / cv2.error
            raise ImageEncodingError(f"image ({msg.encoding}, {msg.width}x{msg.height}): {err}") from err

    def to_model_input(self, msg: Any) -> tuple[np.ndarray, str]:
        """(uint8 HxWx3 image, channel order): rgb8/bgr8 pass through, others convert to rgb8 in one cv2 call.

        YUV layouts always decode through ``image_codec`` (cv_bridge releases differ in which they know);
        an encoding outside ``CAMERA_ENCODINGS`` raises ImageEncodingError listing the accepted ones.
        """
        encoding = str(msg.encoding)
        if encoding in DIRECT_ORDERS:
            return self.to_array(msg, "passthrough"), DIRECT_ORDERS[encoding]
        if encoding not in CAMERA_ENCODINGS:
            raise ImageEncodingError(f"unsupported camera image encoding {encoding!r} (field 'encoding'); the "
                                     f"inference nodes take {', '.join(CAMERA_ENCODINGS)}")
        if encoding in image_codec.YUV_ENCODINGS:
            return image_codec.image_to_array(msg, "rgb8"), "RGB"
        return self.to_array(msg, "rgb8"), "RGB"

    def to_msg(self, array: np.ndarray, encoding: str, header: Any) -> Image:
        """A sensor_msgs/Image of ``array`` carrying ``header`` (stamp and frame of the input)."""
        msg = Image(**image_codec.array_to_image_fields(array, encoding))
        msg.header = header
        return msg
