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
- Camera YUV encodings (sensor_msgs/image_encodings.hpp names plus ``nv12``,
  which Qualcomm's ``qrb_ros_camera`` publishes): packed 4:2:2 ``uyvy`` (alias
  ``yuv422``) and ``yuyv`` (alias ``yuv422_yuy2``), semi-planar 4:2:0 ``nv12``
  and ``nv21`` (a Y plane of ``height`` rows, then the interleaved chroma plane
  of ``height / 2`` rows, both ``step`` bytes per row). They decode to
  ``rgb8``/``bgr8``/``mono8`` with one OpenCV ``cvtColor`` (BT.601 video range,
  as cv_bridge decodes them); ``passthrough`` gives the stored bytes
  (``[H, W, 2]`` for 4:2:2, ``[H * 3 / 2, W]`` for 4:2:0).

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

# Camera YUV encodings -> (canonical name, bytes per pixel of the luma plane's rows, OpenCV conversion suffix).
# 4:2:2 is packed (2 bytes per pixel); 4:2:0 is semi-planar (a 1-byte Y plane, then half-height chroma rows).
YUV_ENCODINGS: dict[str, tuple[str, int, str]] = {
    "uyvy": ("uyvy", 2, "UYVY"), "yuv422": ("uyvy", 2, "UYVY"),
    "yuyv": ("yuyv", 2, "YUY2"), "yuv422_yuy2": ("yuyv", 2, "YUY2"),
    "nv12": ("nv12", 1, "NV12"), "nv21": ("nv21", 1, "NV21"),
}


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of a supported encoding; ImageEncodingError names it otherwise."""
    try:
        char, channels = ENCODINGS[encoding]
    except KeyError:
        supported = ", ".join(sorted(ENCODINGS)) + ", " + ", ".join(sorted(YUV_ENCODINGS))
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r} (field 'encoding'); supported: {supported}"
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


def _byte_rows(msg: Any, encoding: str, rows_count: int, row_bytes: int) -> np.ndarray:
    """``rows_count`` rows of ``row_bytes`` bytes at ``msg.step`` spacing, validated against the fields."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image is {width}x{height} (fields 'width'/'height'); expected a non-empty image")
    if step < row_bytes:
        raise ImageEncodingError(
            f"image field 'step' is {step} but {width} px of {encoding} need {row_bytes} bytes per row"
        )
    buffer = _data_buffer(msg.data)
    size = len(buffer)
    if size == 0:
        raise ImageEncodingError(f"image field 'data' is empty for a {width}x{height} {encoding} image")
    # The last row may omit its padding (some drivers do); cv_bridge needs step*rows, we accept either.
    needed = step * (rows_count - 1) + row_bytes
    if size < needed:
        raise ImageEncodingError(
            f"image field 'data' has {size} bytes; {width}x{height} {encoding} with step {step} needs "
            f"{step * rows_count}"
        )
    flat = np.frombuffer(buffer, dtype=np.uint8, count=min(size, step * rows_count))
    if flat.size < step * rows_count:  # short last row: pad virtually via as_strided over the real bytes
        return np.lib.stride_tricks.as_strided(flat, shape=(rows_count, row_bytes), strides=(step, 1))
    return flat.reshape(rows_count, step)[:, :row_bytes]


def _yuv_view(msg: Any) -> np.ndarray:
    """The stored bytes of a YUV image: [H, W, 2] (packed 4:2:2) or [H * 3 / 2, W] (semi-planar 4:2:0)."""
    encoding = str(msg.encoding)
    _, pixel_bytes, _ = YUV_ENCODINGS[encoding]
    height, width = int(msg.height), int(msg.width)
    if pixel_bytes == 2:
        if width % 2:
            raise ImageEncodingError(f"{encoding} image width {width} (field 'width') is odd; 4:2:2 needs pairs")
        return _byte_rows(msg, encoding, height, 2 * width).reshape(height, width, 2)
    if width % 2 or height % 2:
        raise ImageEncodingError(f"{encoding} image is {width}x{height} (fields 'width'/'height'); 4:2:0 needs "
                                 "an even width and height")
    return _byte_rows(msg, encoding, height * 3 // 2, width)


def _decode_yuv(stored: np.ndarray, source: str, desired: str) -> np.ndarray:
    import cv2

    _, _, code_name = YUV_ENCODINGS[source]
    target = {"rgb8": "RGB", "bgr8": "BGR", "mono8": "GRAY"}.get(desired)
    if target is None:
        raise ImageEncodingError(f"cannot convert image encoding {source!r} to {desired!r}: YUV decodes to "
                                 "rgb8, bgr8 or mono8")
    return cv2.cvtColor(stored, getattr(cv2, f"COLOR_YUV2{target}_{code_name}"))


def _stored_view(msg: Any) -> np.ndarray:
    """The message pixels as stored (native byte order), validated against its fields."""
    encoding = str(msg.encoding)
    dtype, channels = encoding_info(encoding)
    height, width = int(msg.height), int(msg.width)
    row_bytes = width * channels * dtype.itemsize
    rows = _byte_rows(msg, encoding, height, row_bytes)
    step = int(msg.step)
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
    if str(msg.encoding) in YUV_ENCODINGS:
        stored = _yuv_view(msg)
        if desired_encoding in ("passthrough", msg.encoding):
            return stored
        return _decode_yuv(stored, str(msg.encoding), desired_encoding)
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
