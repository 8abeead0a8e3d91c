"""camera_info_problem: each way a camera_info can fail to describe its image is named; a sound one passes."""

from __future__ import annotations

import numpy as np
import pytest

from perception_core.geometry import camera_info_problem

# A 640x480 camera with 90 deg horizontal field of view, principal point at the pixel-centre middle.
K = np.array([[320.0, 0.0, 319.5], [0.0, 320.0, 239.5], [0.0, 0.0, 1.0]])


def _k(**entries: float) -> np.ndarray:
    k = K.copy().reshape(-1)
    for name, value in entries.items():
        k[{"fx": 0, "skew": 1, "cx": 2, "fy": 4, "cy": 5, "k20": 6, "k22": 8}[name]] = value
    return k


def test_a_sound_camera_info_passes() -> None:
    assert camera_info_problem(K, (480, 640), (480, 640)) is None
    assert camera_info_problem(K.reshape(-1).tolist(), (480, 640)) is None
    assert camera_info_problem(_k(cx=400.0, cy=300.0), (480, 640), (240, 320)) is None  # off-centre lens, half size


@pytest.mark.parametrize(("k", "info_hw", "image_hw", "message"), [
    (np.zeros(9), (480, 640), None, "K is all zero"),
    (_k(fx=float("nan")), (480, 640), None, "non-finite"),
    (_k(fy=float("inf")), (480, 640), None, "non-finite"),
    (_k(fx=0.0), (480, 640), None, "fx=0, fy=320 must be > 0"),
    (_k(fy=-320.0), (480, 640), None, "fy=-320 must be > 0"),
    (_k(k22=0.0), (480, 640), None, "not a camera matrix"),
    (_k(k20=1.0), (480, 640), None, "not a camera matrix"),
    (np.zeros(8), (480, 640), None, "K has 8 values"),
    (K, (0, 640), None, "640x0 must be positive"),
    (K * [[2], [2], [1]], (480, 640), None, "principal point (639, 479) is not in the middle half of the 640x480"),
    (K, (960, 1280), None, "not in the middle half of the 1280x960"),
    (K, (480, 640), (480, 480), "the image is 480x480 but its camera_info states 640x480"),
])
def test_each_problem_is_named(k, info_hw, image_hw, message) -> None:
    problem = camera_info_problem(k, info_hw, image_hw)
    assert problem is not None and message in problem, problem
