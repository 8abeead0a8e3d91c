"""image_codec on hand-made messages: every encoding, row padding, byte order, both message flavours."""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from perception_core.errors import ImageEncodingError
from perception_core.image_codec import ENCODINGS, array_to_image_fields, encoding_info, image_to_array


@dataclass
class FakeImage:
    """Duck-typed Image: the test builds bytes by hand, independent of the module's writer."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


def _hand_made(pixels: np.ndarray, encoding: str, pad: int = 0, big: bool = False, as_type: str = "bytes") -> FakeImage:
    """Pack rows by hand with ``pad`` junk bytes after each row."""
    h, w = pixels.shape[:2]
    typed = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<"))
    rows = [typed[r].tobytes() + b"\xab" * pad for r in range(h)]
    raw = b"".join(rows)
    data: Any = {"bytes": raw, "array": array.array("B", raw), "numpy": np.frombuffer(raw, np.uint8).copy()}[as_type]
    return FakeImage(h, w, encoding, int(big), len(rows[0]), data)


def _random(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    dtype, ch = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (h, w) if ch == 1 else (h, w, ch)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
def test_passthrough_returns_the_stored_pixels_for_every_encoding(encoding: str, pad: int) -> None:
    pixels = _random(encoding)
    got = image_to_array(_hand_made(pixels, encoding, pad=pad), "passthrough")
    assert got.dtype == pixels.dtype and got.shape == pixels.shape
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1", "64FC1", "rgb16", "16SC3"])
def test_big_endian_data_is_returned_in_native_order(encoding: str) -> None:
    pixels = _random(encoding, seed=1)
    got = image_to_array(_hand_made(pixels, encoding, pad=2, big=True))
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("as_type", ["bytes", "array", "numpy"])
def test_data_containers_of_rclpy_rosbags_and_raw_bytes_all_read(as_type: str) -> None:
    pixels = _random("rgb8", seed=2)
    np.testing.assert_array_equal(image_to_array(_hand_made(pixels, "rgb8", pad=1, as_type=as_type)), pixels)


def test_unpadded_rgb8_passthrough_is_a_zero_copy_view() -> None:
    pixels = _random("rgb8", seed=3)
    msg = _hand_made(pixels, "rgb8", as_type="array")
    view = image_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_colour_conversions_follow_channel_order() -> None:
    rgb = _random("rgb8", seed=4)
    bgr = rgb[:, :, ::-1]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    msg_rgb, msg_bgr = _hand_made(rgb, "rgb8", pad=2), _hand_made(np.ascontiguousarray(bgr), "bgr8")
    np.testing.assert_array_equal(image_to_array(msg_rgb, "bgr8"), bgr)
    np.testing.assert_array_equal(image_to_array(msg_bgr, "rgb8"), rgb)
    np.testing.assert_array_equal(image_to_array(_hand_made(rgba, "rgba8", pad=4), "rgb8"), rgb)
    bgra = np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
    np.testing.assert_array_equal(image_to_array(_hand_made(bgra, "bgra8"), "rgb8"), rgb)
    grey = image_to_array(msg_rgb, "mono8")
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert grey.shape == rgb.shape[:2] and np.abs(grey - luma).max() <= 1.0
    mono = _random("mono8", seed=5)
    np.testing.assert_array_equal(image_to_array(_hand_made(mono, "mono8", pad=1), "rgb8"), np.dstack([mono] * 3))


def test_bit_depth_conversion_scales_like_cv_bridge() -> None:
    mono16 = np.array([[0, 255, 256, 65535]], np.uint16)
    np.testing.assert_array_equal(image_to_array(_hand_made(mono16, "mono16"), "mono8"), [[0, 0, 1, 255]])
    mono8 = np.array([[0, 1, 255]], np.uint8)
    np.testing.assert_array_equal(image_to_array(_hand_made(mono8, "mono8"), "mono16"), [[0, 257, 65535]])


def test_generic_encodings_relabel_but_do_not_convert() -> None:
    pixels = _random("8UC3", seed=6)
    np.testing.assert_array_equal(image_to_array(_hand_made(pixels, "8UC3"), "bgr8"), pixels)
    with pytest.raises(ImageEncodingError, match=r"cannot convert image encoding '32FC1' to 'rgb8'"):
        image_to_array(_hand_made(_random("32FC1"), "32FC1"), "rgb8")


def test_bad_messages_name_the_field_or_encoding() -> None:
    good = _hand_made(_random("rgb8"), "rgb8")
    cases = [
        ({"encoding": "nv24"}, r"unsupported image encoding 'nv24' \(field 'encoding'\)"),
        ({"data": b""}, r"field 'data' is empty"),
        ({"data": good.data[:-30]}, r"field 'data' has \d+ bytes"),
        ({"step": 20}, r"field 'step' is 20 but 7 px of rgb8 need 21"),
        ({"height": 0}, r"fields 'width'/'height'"),
        ({"data": "text"}, r"field 'data' has unsupported type str"),
    ]
    for change, message in cases:
        fields = dict(vars(good), **change)
        with pytest.raises(ImageEncodingError, match=message):
            image_to_array(FakeImage(**fields))


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "mono16", "32FC1", "bgra8", "64FC1"])
@pytest.mark.parametrize("container", ["array", "numpy", "bytes"])
def test_array_to_image_fields_round_trips(encoding: str, container: str) -> None:
    pixels = _random(encoding, seed=7)
    fields = array_to_image_fields(pixels, encoding, container=container)
    assert (fields["height"], fields["width"], fields["encoding"]) == (5, 7, encoding)
    assert fields["step"] == 7 * pixels.itemsize * (1 if pixels.ndim == 2 else pixels.shape[2])
    np.testing.assert_array_equal(image_to_array(FakeImage(**fields)), pixels)


def test_array_to_image_fields_fills_real_rclpy_and_rosbags_messages() -> None:
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Image

    depth = _random("32FC1", seed=8)
    ros_msg = Image(**array_to_image_fields(depth, "32FC1"))
    np.testing.assert_array_equal(image_to_array(ros_msg), depth)
    store = get_typestore(Stores.ROS2_JAZZY)
    bag_cls = store.types["sensor_msgs/msg/Image"]
    header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                                frame_id="cam")
    bag_msg = bag_cls(header=header, **array_to_image_fields(depth, "32FC1", container="numpy"))
    raw = store.serialize_cdr(bag_msg, bag_cls.__msgtype__)
    np.testing.assert_array_equal(image_to_array(store.deserialize_cdr(raw, bag_cls.__msgtype__)), depth)


def test_array_to_image_fields_rejects_arrays_that_do_not_fit() -> None:
    with pytest.raises(ImageEncodingError, match=r"shape \(5, 7\) does not fit encoding 'rgb8'"):
        array_to_image_fields(np.zeros((5, 7), np.uint8), "rgb8")
    with pytest.raises(ImageEncodingError, match=r"dtype float64 does not fit encoding '32FC1'"):
        array_to_image_fields(np.zeros((5, 7)), "32FC1")


# --------------------------------------------------------------------------- camera YUV encodings


def _bt601_video_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The oracle: BT.601 video-range YCbCr -> RGB per pixel (ITU-R BT.601 coefficients), in float."""
    yy = 1.164 * (y.astype(float) - 16.0)
    cb, cr = u.astype(float) - 128.0, v.astype(float) - 128.0
    return np.clip(np.stack([yy + 1.596 * cr, yy - 0.813 * cr - 0.391 * cb, yy + 2.018 * cb], axis=-1), 0, 255)


def _yuv_planes(h: int, w: int, chroma_rows: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random luma and chroma; chroma is shared by 2 columns (and by 2 rows when chroma_rows == 2)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u_small = rng.integers(64, 192, (h // chroma_rows, w // 2), dtype=np.uint8)
    v_small = rng.integers(64, 192, (h // chroma_rows, w // 2), dtype=np.uint8)
    grow = np.ones((chroma_rows, 2), np.uint8)
    return y, np.kron(u_small, grow), np.kron(v_small, grow)


def _rows_to_message(rows: np.ndarray, encoding: str, h: int, w: int, pad: int) -> FakeImage:
    raw = b"".join(rows[r].tobytes() + b"\xab" * pad for r in range(rows.shape[0]))
    return FakeImage(h, w, encoding, 0, rows.shape[1] + pad, raw)


@pytest.mark.parametrize("encoding, u_first", [("nv12", True), ("nv21", False)])
@pytest.mark.parametrize("pad", [0, 24])
def test_semi_planar_420_decodes_to_bt601_rgb(encoding: str, u_first: bool, pad: int) -> None:
    h, w = 6, 8
    y, u, v = _yuv_planes(h, w, chroma_rows=2)
    chroma = np.empty((h // 2, w), np.uint8)
    first, second = (u, v) if u_first else (v, u)
    chroma[:, 0::2], chroma[:, 1::2] = first[::2, ::2], second[::2, ::2]
    msg = _rows_to_message(np.vstack([y, chroma]), encoding, h, w, pad)
    rgb = image_to_array(msg, "rgb8")
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(float) - _bt601_video_rgb(y, u, v)).max() <= 2.0
    bgr = image_to_array(msg, "bgr8")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert image_to_array(msg).shape == (h * 3 // 2, w)  # passthrough: the stored planes


@pytest.mark.parametrize("encoding, order", [("uyvy", "UYVY"), ("yuv422", "UYVY"), ("yuyv", "YUYV"),
                                             ("yuv422_yuy2", "YUYV")])
def test_packed_422_decodes_to_bt601_rgb(encoding: str, order: str) -> None:
    h, w = 4, 10
    y, u, v = _yuv_planes(h, w, chroma_rows=1)
    packed = np.empty((h, w * 2), np.uint8)
    luma_at, u_at, v_at = (1, 0, 2) if order == "UYVY" else (0, 1, 3)  # byte offsets inside each 4-byte pair
    packed[:, luma_at::2] = y
    packed[:, u_at::4] = u[:, ::2]
    packed[:, v_at::4] = v[:, ::2]
    msg = _rows_to_message(packed, encoding, h, w, pad=6)
    rgb = image_to_array(msg, "rgb8")
    assert np.abs(rgb.astype(float) - _bt601_video_rgb(y, u, v)).max() <= 2.0
    assert image_to_array(msg).shape == (h, w, 2)


def test_bad_yuv_messages_name_the_field() -> None:
    odd = FakeImage(5, 8, "nv12", 0, 8, bytes(8 * 8))
    with pytest.raises(ImageEncodingError, match=r"nv12 image is 8x5 .*even width and height"):
        image_to_array(odd, "rgb8")
    short = FakeImage(4, 8, "nv12", 0, 8, bytes(8 * 5))
    with pytest.raises(ImageEncodingError, match="field 'data' has 40 bytes; 8x4 nv12 with step 8 needs 48"):
        image_to_array(short, "rgb8")
    packed = FakeImage(2, 4, "yuyv", 0, 8, bytes(16))
    with pytest.raises(ImageEncodingError, match="cannot convert image encoding 'yuyv' to 'rgba8'"):
        image_to_array(packed, "rgba8")
    with pytest.raises(ImageEncodingError, match=r"unsupported image encoding 'bayer_rggb8'.*nv12"):
        image_to_array(FakeImage(2, 2, "bayer_rggb8", 0, 2, bytes(4)), "rgb8")
