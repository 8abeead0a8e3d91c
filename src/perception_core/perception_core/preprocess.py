"""Camera image -> model input tensor, as the model's metadata prescribes (no ROS, no torch).

``x = (pixel * input_scale - mean) / std`` per channel in the model's colour
order, resized to the model's input size and laid out NCHW. The work is one
or two ``cv2.resize`` calls into preallocated buffers, a ``cv2.split`` into
three contiguous uint8 planes (reading the interleaved channels with a stride
costs twice as much), and one fused float32 ``gain * plane + offset`` per
plane (``cv2.addWeighted``) written straight into the preallocated NCHW
tensor; no per-frame allocation once the input size is stable.

Resize filter: shrinking by an integer factor >= 2 on both axes uses
INTER_AREA (OpenCV's block-average fast path); what is left, <= 2x per axis,
uses INTER_LINEAR, which at a ratio of at most 2 reads the two nearest source
pixels and so already averages away what the output cannot hold. A direct
INTER_AREA at a fractional ratio (1280x1080 -> 640x544) is a generic path
~10x slower, for a result within a few grey levels of this one.
"""

from __future__ import annotations

import numpy as np

from perception_core.errors import ImageEncodingError, ModelFileError
from perception_core.model_metadata import ModelMetadata

CHANNEL_ORDERS = ("RGB", "BGR")


class Preprocessor:
    """Reusable converter from a uint8 HxWx3 image to the model's float32 NCHW input.

    The returned tensor is owned by the preprocessor and overwritten by the
    next call: feed it to the model before calling again.
    """

    def __init__(self, metadata: ModelMetadata) -> None:
        if metadata.input_layout != "NCHW":
            raise ModelFileError(f"input layout {metadata.input_layout!r} unsupported; the runtime feeds NCHW")
        if metadata.color_order.upper() not in CHANNEL_ORDERS:
            raise ModelFileError(f"metadata color_order {metadata.color_order!r} is not one of {CHANNEL_ORDERS}")
        self.height, self.width = metadata.input_hw
        self.color_order = metadata.color_order.upper()
        std = np.asarray(metadata.std, np.float32)
        self.gain = (np.float32(metadata.input_scale) / std).astype(np.float32)
        self.offset = (-np.asarray(metadata.mean, np.float32) / std).astype(np.float32)
        self.tensor = np.empty((1, 3, self.height, self.width), np.float32)
        self._resized = np.empty((self.height, self.width, 3), np.uint8)
        self._planes = [np.empty((self.height, self.width), np.uint8) for _ in range(3)]
        self._shrunk: np.ndarray | None = None  # the integer-factor INTER_AREA step's output, reused
        # The last input at model resolution, in the caller's channel order (for overlays).
        self.resized: np.ndarray = self._resized

    def __call__(self, image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
        """Resize, reorder channels and normalise ``image`` (uint8 HxWx3 in ``channel_order``).

        Raises:
            ImageEncodingError: the image is not uint8 HxWx3 or the order is unknown.
        """
        import cv2

        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageEncodingError(f"preprocess needs a uint8 HxWx3 image, got {image.dtype} {image.shape}")
        order = channel_order.upper()
        if order not in CHANNEL_ORDERS:
            raise ImageEncodingError(f"channel order {channel_order!r} is not one of {CHANNEL_ORDERS}")
        resized = self._resize(image)
        self.resized = resized
        cv2.split(resized, self._planes)
        swap = order != self.color_order
        for c in range(3):
            source = self._planes[2 - c if swap else c]
            # dst is the contiguous [c] plane of the tensor: OpenCV writes in place, in float32.
            cv2.addWeighted(source, float(self.gain[c]), source, 0.0, float(self.offset[c]),
                            dst=self.tensor[0, c], dtype=cv2.CV_32F)
        return self.tensor

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """``image`` at the model's size (see the module docstring for the filter choice)."""
        import cv2

        h, w = image.shape[:2]
        if (h, w) == (self.height, self.width):
            return image
        factor = min(h // self.height, w // self.width)
        if factor >= 2 and h % factor == 0 and w % factor == 0:
            shrunk_hw = (h // factor, w // factor)
            if shrunk_hw == (self.height, self.width):
                return cv2.resize(image, (self.width, self.height), dst=self._resized, interpolation=cv2.INTER_AREA)
            if self._shrunk is None or self._shrunk.shape[:2] != shrunk_hw:
                self._shrunk = np.empty((*shrunk_hw, 3), np.uint8)
            image = cv2.resize(image, (shrunk_hw[1], shrunk_hw[0]), dst=self._shrunk, interpolation=cv2.INTER_AREA)
            h, w = shrunk_hw
        interpolation = cv2.INTER_AREA if (h > 2 * self.height or w > 2 * self.width) else cv2.INTER_LINEAR
        return cv2.resize(image, (self.width, self.height), dst=self._resized, interpolation=interpolation)

    def feeds(self, input_name: str, image: np.ndarray, channel_order: str = "RGB") -> dict[str, np.ndarray]:
        """``{input_name: tensor}`` ready for ``LoadedModel.run``."""
        return {input_name: self(image, channel_order)}
