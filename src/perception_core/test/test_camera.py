"""camera: CameraInfo validation, the intrinsics a node publishes, and undistortion against the lens formula."""

from __future__ import annotations

import numpy as np
import pytest

from perception_core.camera import CameraModel, Rectifier, output_camera
from perception_core.errors import DataError

W, H = 160, 120
K = [100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0]
D = [-0.3, 0.09, 0.0, 0.0, 0.0]  # strong barrel distortion: the image corners move by pixels
P = [90.0, 0.0, 78.0, 0.0, 0.0, 90.0, 61.0, 0.0, 0.0, 0.0, 1.0, 0.0]
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def _camera(**change: object) -> CameraModel:
    fields = dict(width=W, height=H, k=K, d=D, r=IDENTITY, p=P, distortion_model="plumb_bob", source="cam/info")
    fields.update(change)
    return CameraModel.from_fields(**fields)  # type: ignore[arg-type]


def _plumb_bob(x: float, y: float, d: list[float]) -> tuple[float, float]:
    """The Brown-Conrady lens formula (normalised coordinates), written out as the oracle."""
    k1, k2, p1, p2, k3 = d
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


@pytest.mark.parametrize("change, message", [
    ({"k": [0.0] * 9}, r"cam/info: K is all zero"),
    ({"k": [float("nan"), *K[1:]]}, r"cam/info: K has non-finite values"),
    ({"k": [-100.0, *K[1:]]}, r"focal lengths fx=-100, fy=100 must be > 0"),
    ({"k": [*K[:2], 400.0, *K[3:]]}, r"principal point \(400, 60\) is not in the middle half of the 160x120 image"),
    ({"width": 0}, r"stated image size 0x120 must be positive"),
    ({"k": K[:8]}, r"K has 8 values, not 9"),
    ({"d": [float("inf"), 0, 0, 0, 0]}, r"field 'd' has non-finite values"),
    ({"distortion_model": "kannala"}, r"field 'distortion_model' is 'kannala'"),
    ({"p": [0.0, 0, 78, 0, 0, 90, 61, 0, 0, 0, 1, 0]}, r"field 'p' has focal lengths 0, 90"),
])
def test_inconsistent_camera_info_is_refused_by_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        _camera(**change)


def test_image_size_must_match_the_intrinsics_resolution() -> None:
    with pytest.raises(DataError, match=r"image on cam/image is 80x60 but cam/info says 160x120"):
        _camera().check_image_size((60, 80), "cam/image", "cam/info")


def test_published_intrinsics_per_rectification_mode() -> None:
    camera = _camera()
    rectified = output_camera(camera, "node")
    assert rectified.rectified and not rectified.d.any() and rectified.d.size == 5
    np.testing.assert_allclose(rectified.k, np.asarray(P).reshape(3, 4)[:, :3])
    np.testing.assert_allclose(rectified.r, np.eye(3))
    upstream = output_camera(_camera(d=[0.0] * 5), "upstream")  # image_rect's intrinsics are P
    np.testing.assert_allclose(upstream.k, np.asarray(P).reshape(3, 4)[:, :3])
    undistorted = output_camera(_camera(d=[0.0] * 5), "node")  # nothing to undo: K stays
    np.testing.assert_allclose(undistorted.k, np.asarray(K).reshape(3, 3))
    raw = output_camera(camera, "off")  # the image stays distorted, so D is passed on
    assert not raw.rectified and raw.d.tolist() == D
    np.testing.assert_allclose(raw.k, np.asarray(K).reshape(3, 3))


def test_rectify_moves_a_point_to_where_the_lens_formula_says() -> None:
    camera = _camera()
    new_k = np.asarray(P).reshape(3, 4)[:, :3]
    k = np.asarray(K).reshape(3, 3)
    raw = np.zeros((H, W), np.uint8)
    u_rect, v_rect = 20.0, 18.0  # near the corner: the lens moves it by several pixels
    x, y = (u_rect - new_k[0, 2]) / new_k[0, 0], (v_rect - new_k[1, 2]) / new_k[1, 1]
    xd, yd = _plumb_bob(x, y, D)
    u_raw, v_raw = k[0, 0] * xd + k[0, 2], k[1, 1] * yd + k[1, 2]
    assert np.hypot(u_raw - u_rect, v_raw - v_rect) > 5  # the identity would fail this test
    ui, vi = round(u_raw), round(v_raw)
    raw[vi - 1: vi + 2, ui - 1: ui + 2] = 255
    rectifier = Rectifier()
    out = rectifier.rectify(raw, camera).astype(float)
    rows, cols = np.nonzero(out > 0)
    weights = out[rows, cols]
    centroid = (np.average(cols, weights=weights), np.average(rows, weights=weights))
    # The blob was placed at the rounded raw position, so allow that rounding (<= 0.5 px per axis) plus interpolation.
    assert abs(centroid[0] - u_rect) < 1.5 and abs(centroid[1] - v_rect) < 1.5, centroid


def test_maps_are_computed_once_per_camera_info() -> None:
    rectifier = Rectifier()
    image = np.full((H, W, 3), 100, np.uint8)
    for _ in range(3):
        rectifier.rectify(image, _camera())
    assert rectifier.maps_computed == 1
    rectifier.rectify(image, _camera(d=[-0.2, 0.0, 0.0, 0.0, 0.0]))
    assert rectifier.maps_computed == 2
    flat = _camera(d=[0.0] * 5)
    assert rectifier.rectify(image, flat) is image  # nothing to undo: no copy, no maps
