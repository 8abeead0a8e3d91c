"""sensor_msgs/Image <-> numpy with cv_bridge's encoding semantics, without ROS.

Works on any object with ``encoding height width step is_bigendian data``
fields: rclpy's ``sensor_msgs.msg.Image`` (``data`` is ``array.array('B')``)
and rosbags' ``sensor_msgs__msg__Image`` (``data`` is a uint8 ndarray). Nodes
use ROS 2 ``cv_bridge`` when it imports (on the vehicle) and this module
otherwise; offline tools always use this module.

Semantics kept from cv_bridge:

- ``passthrough`` returns the pixels as stored: ``[H, W]`` for one channel,
  ``[H, W, C]`` otherwise, dtype from the encoding.
- Colour conversions among ``rgb8 bgr8 rgba8 bgra8 mono8`` (and their 16-bit
  forms); converting between bit depths scales 8 <-> 16 bit (x257, >>8).
- Generic encodings (``8UC3``, ``32FC1``...) convert only to an encoding of
  the same channel count and depth (a relabel); otherwise it is an error.

Rows honour ``step`` (row padding is skipped, not copied) and
``is_bigendian``. Where no conversion is needed the result is a zero-copy,
read-only view of ``msg.data``: copy it before writing to it.
"""

from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np

from perception_core.errors import ImageEncodingError

# encoding -> (numpy dtype char, channels)
_NAMED = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
    "rgb16": ("u2", 3), "bgr16": ("u2", 3), "rgba16": ("u2", 4), "bgra16": ("u2", 4), "mono16": ("u2", 1),
}
_DEPTHS = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
ENCODINGS: dict[str, tuple[str, int]] = dict(_NAMED)
for _depth, _char in _DEPTHS.items():
    for _ch in (1, 2, 3, 4):
        ENCODINGS[f"{_depth}C{_ch}"] = (_char, _ch)

# Channel layout of the colour encodings, for conversions.
_LAYOUT = {
    "rgb8": "RGB", "bgr8": "BGR", "rgba8": "RGBA", "bgra8": "BGRA", "mono8": "L",
    "rgb16": "RGB", "bgr16": "BGR", "rgba16": "RGBA", "bgra16": "BGRA", "mono16": "L",
}
_NATIVE_BIG = sys.byteorder == "big"


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of a supported encoding; ImageEncodingError names it otherwise."""
    try:
        char, channels = ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r} (field 'encoding'); supported: {', '.join(sorted(ENCODINGS))}"
        ) from None
    return np.dtype(char), channels


def _data_buffer(data: Any) -> memoryview | np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return memoryview(data).cast("B")
    if isinstance(data, (list, tuple)):  # slow, but what a hand-filled message may hold
        return np.asarray(data, dtype=np.uint8)
    raise ImageEncodingError(f"image field 'data' has unsupported type {type(data).__name__}")


def _stored_view(msg: Any) -> np.ndarray:
    """The message pixels as stored (native byte order), validated against its fields."""
    encoding = str(msg.encoding)
    dtype, channels = encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image is {width}x{height} (fields 'width'/'height'); expected a non-empty image")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageEncodingError(
            f"image field 'step' is {step} but {width} px of {encoding} need {row_bytes} bytes per row"
        )
    buffer = _data_buffer(msg.data)
    size = len(buffer)
    if size == 0:
        raise ImageEncodingError(f"image field 'data' is empty for a {width}x{height} {encoding} image")
    # The last row may omit its padding (some drivers do); cv_bridge needs step*height, we accept either.
    needed = step * (height - 1) + row_bytes
    if size < needed:
        raise ImageEncodingError(
            f"image field 'data' has {size} bytes; {width}x{height} {encoding} with step {step} needs {step * height}"
        )
    flat = np.frombuffer(buffer, dtype=np.uint8, count=min(size, step * height))
    if flat.size < step * height:  # short last row: pad virtually via as_strided over the real bytes
        rows = np.lib.stride_tricks.as_strided(flat, shape=(height, row_bytes), strides=(step, 1))
    else:
        rows = flat.reshape(height, step)[:, :row_bytes]
    big = bool(msg.is_bigendian)
    stored = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    if dtype.itemsize > 1 and (rows.ctypes.data % dtype.itemsize or step % dtype.itemsize):
        rows = np.ascontiguousarray(rows)  # unaligned rows: one copy so the typed view is aligned
    pixels = rows.view(stored)
    if dtype.itemsize > 1 and big != _NATIVE_BIG:
        pixels = pixels.astype(dtype)  # byte swap to native order (a copy, as cv_bridge does)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape)


def _convert(pixels: np.ndarray, source: str, desired: str) -> np.ndarray:
    import cv2

    src_dtype, src_ch = encoding_info(source)
    dst_dtype, dst_ch = encoding_info(desired)
    if source not in _LAYOUT or desired not in _LAYOUT:
        if src_dtype == dst_dtype and src_ch == dst_ch:
            return pixels  # a relabel, e.g. 8UC3 -> bgr8 or 8UC1 -> mono8
        raise ImageEncodingError(f"cannot convert image encoding {source!r} to {desired!r}: "
                                 f"{source if source not in _LAYOUT else desired} is not a colour/mono encoding")
    if src_dtype != dst_dtype:
        pixels = (pixels >> 8).astype(np.uint8) if dst_dtype == np.uint8 else pixels.astype(np.uint16) * 257
    src, dst = _LAYOUT[source], _LAYOUT[desired]
    if src == dst:
        return pixels
    code = getattr(cv2, f"COLOR_{'GRAY' if src == 'L' else src}2{'GRAY' if dst == 'L' else dst}", None)
    if code is None:
        raise ImageEncodingError(f"cannot convert image encoding {source!r} to {desired!r}")
    return cv2.cvtColor(pixels, code)


def image_to_array(msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
    """Pixels of an Image message as numpy, converted like cv_bridge's ``imgmsg_to_cv2``.

    Raises:
        ImageEncodingError: unsupported encoding, inconsistent size/step/data, or
            an impossible conversion; the message names the field or encoding.
    """
    pixels = _stored_view(msg)
    if desired_encoding in ("passthrough", msg.encoding):
        return pixels
    return _convert(pixels, str(msg.encoding), desired_encoding)


def array_to_image_fields(image: np.ndarray, encoding: str, container: str = "array") -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``image`` (like cv_bridge's ``cv2_to_imgmsg``).

    ``container`` picks the type of ``data``: ``array`` (``array.array('B')``,
    which rclpy stores without a per-element check), ``numpy`` (uint8 ndarray,
    what rosbags' message classes hold) or ``bytes``.

    Raises:
        ImageEncodingError: the array's dtype/shape does not fit ``encoding``.
    """
    dtype, channels = encoding_info(encoding)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != channels) or (
            image.ndim == 2 and channels != 1):
        raise ImageEncodingError(f"array of shape {image.shape} does not fit encoding {encoding!r} "
                                 f"({channels} channel(s))")
    if image.dtype != dtype:
        raise ImageEncodingError(f"array dtype {image.dtype} does not fit encoding {encoding!r} (needs {dtype})")
    contiguous = np.ascontiguousarray(image)
    height, width = contiguous.shape[:2]
    raw = memoryview(contiguous).cast("B")
    if container == "array":
        data: Any = array.array("B")
        data.frombytes(raw)
    elif container == "numpy":
        data = np.frombuffer(raw, dtype=np.uint8).copy()
    elif container == "bytes":
        data = raw.tobytes()
    else:
        raise ValueError(f"container {container!r} is not array/numpy/bytes")
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": int(_NATIVE_BIG and dtype.itemsize > 1),
        "step": int(width * channels * dtype.itemsize),
        "data": data,
    }
