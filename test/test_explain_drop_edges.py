"""bench/explain_drop_edges.py: drop-edge pixel pairs by what lies beyond them, checked against exact depth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.costmap import CostmapConfig, build_costmap, class_map_from_ontology

CAM_HEIGHT, CAM_PITCH, WIDTH, HEIGHT, FOCAL = 1.5, 0.25, 320, 240, 200.0


@pytest.fixture
def explain(load_repo_script):
    return load_repo_script("bench/explain_drop_edges.py")


def flat_ground_depth() -> tuple[np.ndarray, np.ndarray]:
    """(depth, K) of level ground seen by a camera CAM_HEIGHT up and pitched CAM_PITCH down; +Inf above the
    horizon."""
    k = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
    b = (np.arange(HEIGHT, dtype=np.float64) - k[1, 2]) / FOCAL  # each row's ray: optical z = 1
    ray_z = -math.sin(CAM_PITCH) - b * math.cos(CAM_PITCH)  # its height change per metre of depth
    with np.errstate(divide="ignore"):
        depth = np.where(ray_z < 0, CAM_HEIGHT / -ray_z, np.inf)
    return np.repeat(depth[:, None], WIDTH, axis=1).astype(np.float32), k


def test_far_pixels_are_told_apart_by_label_and_range(explain) -> None:
    z = np.array([[3.0, np.inf, 20.0, 4.0, 5.0]], np.float32)
    categories = np.array([[0, 0, 1, 2, -1]], np.int8)
    kinds = explain.far_pixel_kinds(z, categories, np.arange(5), max_range=15.0)
    assert [explain.FAR_KINDS[i] for i in kinds] == ["ground", "beyond_range", "beyond_range", "lethal_class", "sky"]


def test_a_pair_is_confirmed_only_by_the_same_near_and_far_pixel(explain) -> None:
    pairs = (np.array([10, 11, 12]), np.array([0, 1, 2]))
    reference = (np.array([10, 12, 2]), np.array([0, 1, 12]))  # (12, 1) and (2, 12) share one pixel each
    confirmed = explain.confirmed_mask(pairs, reference, image_size=20)
    assert confirmed.tolist() == [True, False, False]
    counts = explain.count_by_kind(np.array([3, 3, 0]), confirmed)
    assert counts["beyond_range"] == {"pairs": 2, "confirmed": 1}
    assert counts["ground"] == {"pairs": 1, "confirmed": 0}
    assert counts["sky"] == {"pairs": 0, "confirmed": 0}


def test_a_depth_that_gives_up_early_makes_an_unconfirmed_beyond_range_drop(explain) -> None:
    """Level ground read as "nothing within range" past 6 m (a depth network's early horizon) is a cliff's
    brink to the costmap; the exact depth of the same ground has no drop there."""
    exact, k = flat_ground_depth()
    early = np.where(exact > 6.0, np.inf, exact).astype(np.float32)
    config = CostmapConfig(mount_z=CAM_HEIGHT, mount_pitch=CAM_PITCH)
    classes = class_map_from_ontology()
    labels = np.zeros(exact.shape, np.uint8)  # smooth ground everywhere
    with explain.drop_pairs_recorded() as seen:
        build_costmap(exact, labels, k, config, classes)
        exact_blocked = seen["pairs"][1]
        build_costmap(early, labels, k, config, classes)
        blocked, z, categories = seen["pairs"][1], seen["z"], seen["categories"]
    assert exact_blocked[0].size == 0
    assert blocked[0].size > 0
    kinds = explain.far_pixel_kinds(z, categories, blocked[1], config.max_range)
    counts = explain.count_by_kind(kinds, explain.confirmed_mask(blocked, exact_blocked, z.size))
    assert counts["beyond_range"]["pairs"] == blocked[0].size
    assert counts["beyond_range"]["confirmed"] == 0
    near_depth = z.ravel()[blocked[0]]
    assert np.all((near_depth > 5.5) & (near_depth <= 6.0))


def test_the_recorder_restores_the_costmap(explain) -> None:
    from perception_core.costmap import projection

    original = projection._drop_edges
    with pytest.raises(RuntimeError), explain.drop_pairs_recorded():
        assert projection._drop_edges is not original
        raise RuntimeError("a failing frame")
    assert projection._drop_edges is original
