"""Ground geometry in the costmap on analytic terrain: ramps, steps, a ditch and a cliff, seen by a camera.

Each scene is a height field h(x, y) in base_link, ray-cast here (independently of the projection under
test) into a depth image whose every pixel is drivable-by-label ground: whatever the costmap marks
CAUTION or BLOCKED, it marks from geometry alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from perception_core.costmap import UNKNOWN, Category, CostmapConfig, build_costmap, class_map_from_ontology
from perception_core.costmap.terrain import ground_geometry
from perception_core.errors import ConfigError

CAM_HEIGHT, CAM_PITCH = 1.5, 0.25
WIDTH, HEIGHT, FOCAL = 320, 240, 200.0
GROUND = 0  # smooth_ground: FREE by label
Heights = Callable[[np.ndarray, np.ndarray], np.ndarray]


def k_matrix() -> np.ndarray:
    return np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]], dtype=np.float64)


def render(heights: Heights, max_t: float = 20.0) -> np.ndarray:
    """Depth (optical z; NaN where no ground within max_t) of the height field, by marching and bisection."""
    k = k_matrix()
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    a, b = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    forward = np.array([math.cos(CAM_PITCH), 0.0, -math.sin(CAM_PITCH)])
    right, down = np.array([0.0, -1.0, 0.0]), np.array([-math.sin(CAM_PITCH), 0.0, -math.cos(CAM_PITCH)])
    rays = forward + a[..., None] * right + b[..., None] * down  # optical z = 1: the ray parameter is the depth
    origin = np.array([0.0, 0.0, CAM_HEIGHT])

    def below(t: np.ndarray) -> np.ndarray:
        p = origin + rays * t[..., None]
        return p[..., 2] <= heights(p[..., 0], p[..., 1])

    step = 0.05  # no feature of these scenes is thinner; bisection then finds the surface to 1e-5 m
    hit_far = np.full(a.shape, np.nan)
    for t in np.arange(0.3, max_t, step):
        open_ = np.isnan(hit_far)
        newly = below(np.full(a.shape, t))
        hit_far[open_ & newly] = t
    lo, hi = hit_far - step, hit_far.copy()
    for _ in range(12):
        mid = (lo + hi) / 2
        under = below(np.nan_to_num(mid, nan=1.0))
        hi = np.where(under, mid, hi)
        lo = np.where(under, lo, mid)
    return hi.astype(np.float32)


def build(heights: Heights, **overrides: float) -> object:
    config = CostmapConfig(mount_z=CAM_HEIGHT, mount_pitch=CAM_PITCH, **overrides)
    depth = render(heights)
    labels = np.full(depth.shape, GROUND, np.uint8)
    return build_costmap(depth, labels, k_matrix(), config, class_map_from_ontology()), config


def cells_along_x(result: object, config: CostmapConfig, x0: float, x1: float, y: float = 0.05) -> np.ndarray:
    """Categories of the cells with centres in [x0, x1] on the row through y."""
    row = math.floor((y - config.origin_y) / config.resolution)
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    return result.category[row, (xs >= x0) & (xs <= x1)]


def flat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.zeros_like(x)


def ramp(degrees: float, start: float = 4.0) -> Heights:
    return lambda x, y: np.maximum(x - start, 0.0) * math.tan(math.radians(degrees))


def test_flat_ground_has_no_geometric_cost() -> None:
    result, _ = build(flat)
    seen = result.category != UNKNOWN
    assert seen.sum() > 1000
    assert (result.category[seen] == Category.FREE).all()
    assert result.drop_edge_cells == 0


@pytest.mark.parametrize(("degrees", "expected"), [(12.0, Category.FREE), (25.0, Category.CAUTION),
                                                   (40.0, Category.BLOCKED)])
def test_a_ramp_is_costed_by_its_slope(degrees: float, expected: Category) -> None:
    """Limits 20 / 30 degrees (the defaults): a 12-degree ramp is free, 25 caution, 40 blocked."""
    result, config = build(ramp(degrees))
    on_ramp = cells_along_x(result, config, 4.6, 6.0)
    assert (on_ramp != UNKNOWN).all()
    assert np.mean(on_ramp == expected) > 0.9, on_ramp
    assert (cells_along_x(result, config, 2.5, 3.6) == Category.FREE).all(), "flat ground before the ramp"
    slope = result.ground.slope_deg[result.category == expected]
    assert np.nanmedian(slope) == pytest.approx(degrees, abs=2.0)


@pytest.mark.parametrize(("rise", "expected"), [(0.1, Category.FREE), (0.2, Category.CAUTION),
                                                (0.5, Category.BLOCKED)])
def test_a_step_up_marks_its_upper_edge(rise: float, expected: Category) -> None:
    """A kerb at x = 5.05: the cells at its top edge carry its cost, the ground in front stays free."""
    result, config = build(lambda x, y: np.where(x > 5.05, rise, 0.0))
    edge = cells_along_x(result, config, 5.0, 5.3)
    assert expected in edge.tolist(), edge
    assert max(edge.tolist()) == expected
    assert (cells_along_x(result, config, 3.0, 4.8) == Category.FREE).all()
    assert (cells_along_x(result, config, 5.6, 7.0) == Category.FREE).all(), "the flat top is free again"


def test_a_ditch_is_blocked_at_its_near_edge_and_its_hidden_floor_is_not_free() -> None:
    """1 m deep, 1.5 m wide, vertical walls from x = 6: the camera sees the brink, not the floor."""
    result, config = build(lambda x, y: np.where((x > 6.0) & (x < 7.5), -1.0, 0.0))
    assert Category.BLOCKED in cells_along_x(result, config, 5.7, 6.0).tolist()
    assert result.drop_edge_cells > 0
    inside = cells_along_x(result, config, 6.1, 7.4)
    assert not (inside == Category.FREE).any(), inside
    assert (cells_along_x(result, config, 3.0, 5.5) == Category.FREE).all()


def test_a_cliff_is_blocked_at_its_edge_and_the_ground_past_it_is_not_free() -> None:
    """The ground drops 1.5 m at x = 6: its edge is BLOCKED; the sight line over the edge meets the low
    ground at x = 6 + 1.5 / (1.5 / 6) = 12 m, and the ground hidden before that is unknown."""
    result, config = build(lambda x, y: np.where(x > 6.0, -1.5, 0.0))
    assert Category.BLOCKED in cells_along_x(result, config, 5.7, 6.0).tolist()
    past = cells_along_x(result, config, 6.1, 11.5)
    assert (past == UNKNOWN).all(), past
    # Where the camera sees the low ground again it is free ground, at its true height.
    beyond = cells_along_x(result, config, 12.5, 13.5)
    assert (beyond == Category.FREE).all(), beyond
    row = math.floor((0.05 - config.origin_y) / config.resolution)
    col = math.floor((13.0 - config.origin_x) / config.resolution)
    assert result.elevation[row, col] == pytest.approx(-1.5, abs=0.05)


def test_a_drop_the_vehicle_can_step_down_is_not_blocked() -> None:
    """A 0.2 m step down: CAUTION (above step_caution_m), never BLOCKED."""
    result, config = build(lambda x, y: np.where(x > 6.0, -0.2, 0.0))
    near_edge = cells_along_x(result, config, 5.5, 6.5)
    assert Category.BLOCKED not in near_edge.tolist()
    assert Category.CAUTION in near_edge.tolist()


def test_limits_are_per_vehicle_parameters() -> None:
    """A vehicle that climbs 0.6 m steps and 45-degree slopes drives the 0.5 m kerb and the 40-degree ramp."""
    kerb = lambda x, y: np.where(x > 5.05, 0.5, 0.0)  # noqa: E731
    result, config = build(kerb, step_caution_m=0.55, step_blocked_m=0.6, slope_caution_deg=60.0,
                           slope_blocked_deg=70.0)
    assert Category.BLOCKED not in cells_along_x(result, config, 4.5, 6.0).tolist()
    off, config = build(kerb, ground_geometry=False)
    assert (cells_along_x(off, config, 3.0, 7.0)[cells_along_x(off, config, 3.0, 7.0) != UNKNOWN]
            == Category.FREE).all(), "ground_geometry: false costs by label alone"


def test_ground_geometry_of_an_elevation_map() -> None:
    """The operator alone: a plane of slope 0.5 (26.6 deg) is CAUTION; a 0.4 m wall marks its top cells."""
    config = CostmapConfig(resolution=0.1)
    x = np.arange(40) * 0.1
    plane = np.tile(0.5 * x, (20, 1)).astype(np.float32)
    geometry = ground_geometry(plane, config)
    inner = geometry.slope_deg[5:-5, 5:-5]
    assert np.allclose(inner, math.degrees(math.atan(0.5)), atol=0.1)
    assert geometry.caution[5:-5, 5:-5].all() and not geometry.blocked.any()

    wall = np.zeros((20, 40), np.float32)
    wall[:, 20:] = 0.4
    wall[:, :5] = np.nan  # unknown cells are skipped, never a step
    geometry = ground_geometry(wall, config, top=wall, bottom=wall)
    assert (geometry.step_m[:, 20] == pytest.approx(0.4)) and (geometry.step_m[:, 19] == 0).all()
    # The slope window (5 cells) straddling the wall marks two cells each side of it, no more.
    assert geometry.blocked[1:-1, 18:22].all() and geometry.blocked[:, 20].all()
    assert not geometry.blocked[:, :17].any() and not geometry.blocked[:, 23:].any()
    assert np.isnan(geometry.step_m[:, :5]).all()


def test_a_slope_seen_in_part_reads_its_full_gradient() -> None:
    """A 35-degree face whose upper part the camera cannot see (past a crest, a grazing view): the windows
    at the edge of the seen part hold only its lower cells, and the slope is still the face's, not less."""
    config = CostmapConfig(resolution=0.1)
    rise = math.tan(math.radians(35.0))
    x = np.arange(40) * 0.1
    face = np.tile(rise * x, (30, 1)).astype(np.float32)
    seen_to = 20 + (np.arange(30) % 3)  # a ragged edge of the view: columns beyond it are unseen
    face[np.arange(40)[None, :] >= seen_to[:, None]] = np.nan
    face[::4, ::5] = np.nan  # and scattered cells without points
    geometry = ground_geometry(face, config)
    rows = np.arange(3, 27)  # away from the map's own border
    last_seen = 39 - np.argmax(np.isfinite(face[rows, ::-1]), axis=1)
    edge = geometry.slope_deg[rows, last_seen]
    measured = np.isfinite(edge)  # a window with under a third of its cells seen has no slope
    assert measured.sum() >= 16, edge
    assert np.allclose(edge[measured], 35.0, atol=0.5), edge  # nominal two-cell differences read 22-26 here
    assert geometry.blocked[rows, last_seen][measured].all()
    inner = np.isfinite(geometry.slope_deg)
    assert np.allclose(geometry.slope_deg[inner], 35.0, atol=0.5)


@pytest.mark.parametrize(("field", "value"), [("step_caution_m", 0.5), ("slope_caution_deg", 40.0),
                                              ("slope_blocked_deg", 95.0), ("slope_window_m", 0.0),
                                              ("ground_geometry", "yes")])
def test_bad_limits_are_one_config_error(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CostmapConfig(**{field: value})


def strip_grid(length_m: float) -> tuple:
    """A 4 m wide strip of 0.1 m cells from x = 0 to ``length_m``: (config, grid, x, y), x and y per cell."""
    from perception_core.metrics.costmap import BevGrid

    config = CostmapConfig(resolution=0.1, width_m=length_m, height_m=4.0, origin_x=0.0, origin_y=-2.0)
    grid = BevGrid(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)
    xs, ys = grid.centres()
    return (config, grid, np.broadcast_to(xs, (config.rows, config.cols)),
            np.broadcast_to(ys[:, None], (config.rows, config.cols)))


def rock_before_a_drop(x: np.ndarray, y: np.ndarray, brink_x: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heights, truth, rock): level ground to a 1 m drop at ``brink_x`` (seen up to the brink), a labelled rock
    at x 2.0-2.4 m."""
    heights = np.where(x < brink_x, 0.0, -1.0).astype(np.float32)
    truth = np.where(x < brink_x, np.int8(Category.FREE), np.int8(UNKNOWN))
    rock = (x > 2.0) & (x < 2.4) & (y > -1.0) & (y < -0.6)
    truth[rock] = Category.BLOCKED
    return heights, truth, rock


def test_ground_truth_geometry_and_the_terrain_measures() -> None:
    """A 1 m drop at x = 5: the truth blocks the seen brink (drop recall counts it) and the hidden face
    (a prediction may mark it, recall does not ask for it); a 15-degree hillside counts for false lethal
    on slopes."""
    from perception_core.metrics.costmap import CostmapMeasures, ground_truth_geometry

    config, grid, x, y = strip_grid(10.0)
    heights = np.where(x < 5.0, 0.0, -1.0) + np.where(y > 0.5, (y - 0.5) * math.tan(math.radians(15)), 0.0)
    heights = heights.astype(np.float32)
    truth = np.where(x < 5.0, np.int8(Category.FREE), np.int8(UNKNOWN))  # the camera sees up to the brink
    raised = ground_truth_geometry(truth, heights, config)
    brink = (x > 4.8) & (x < 5.0)  # the last two cells: each stands over the face's bottom half-way to it
    assert (raised.category[brink] == Category.BLOCKED).all() and (raised.drops == brink).all()
    assert raised.unseen_lethal[(x > 5.0) & (x < 5.15)].all() and not raised.drops[x > 5.0].any()
    assert (raised.category[(x < 4.5) & (y < 0.3)] == Category.FREE).all()
    hillside = (x > 0.5) & (x < 4.5) & (y > 1.0) & (y < 1.7)  # away from the window's border
    assert raised.slopes[hillside].all()

    perfect, late, hidden_only = CostmapMeasures(), CostmapMeasures(), CostmapMeasures()
    perfect.add(raised.category, raised, grid)
    assert perfect.summary()["drop_recall"] == 1.0 and perfect.summary()["false_lethal_on_slopes"] == 0.0
    # A prediction that marks the face past the brink is not a false alarm, but it misses the brink by
    # more than the tolerance where it lies 0.4 m on.
    shifted = np.where(x > 4.5, np.int8(Category.FREE), raised.category)
    shifted[x > 5.0] = UNKNOWN
    shifted[(x > 5.3) & (x < 5.4)] = Category.BLOCKED  # 0.4 m past the brink
    late.add(shifted, raised, grid)
    assert late.summary()["drop_recall"] == 0.0 and late.summary()["obstacle_precision"] == 1.0
    on_hillside = raised.category.copy()
    on_hillside[raised.slopes] = Category.BLOCKED
    hidden_only.add(on_hillside, raised, grid)
    assert hidden_only.summary()["false_lethal_on_slopes"] == 1.0


def test_labelled_object_recall_counts_the_groups_the_labels_make() -> None:
    """Two obstacle groups on terrain: a rock the labels mark and a drop only geometry finds. A costmap that
    marks the drop and not the rock has object recall 1/2 and labelled object recall 0; the reverse, 1/2 and 1."""
    from perception_core.metrics.costmap import CostmapMeasures, ground_truth_geometry

    config, grid, x, y = strip_grid(10.0)
    heights, truth, rock = rock_before_a_drop(x, y, 5.0)
    raised = ground_truth_geometry(truth, heights, config)
    assert raised.labelled_lethal[rock].all() and not raised.labelled_lethal[raised.drops].any()
    drop_only = np.where(rock, np.int8(Category.FREE), raised.category)
    rock_only = np.where(rock, np.int8(Category.BLOCKED), truth)  # nothing at or past the brink
    rock_only[x >= 5.0] = UNKNOWN
    for prediction, objects, labelled in ((drop_only, 0.5, 0.0), (rock_only, 0.5, 1.0), (raised.category, 1.0, 1.0)):
        measures = CostmapMeasures()
        measures.add(prediction, raised, grid)
        assert measures.summary()["object_recall"] == objects
        assert measures.summary()["labelled_object_recall"] == labelled
    flat = CostmapMeasures()  # without terrain every group is one the labels make
    flat.add(truth, truth, grid)
    assert flat.summary()["labelled_object_recall"] == flat.summary()["object_recall"] == 1.0


def test_range_bands_split_recall_by_kind_and_precision_by_source() -> None:
    """A rock at 2 m (labelled) and a drop at 7.5 m (geometry): a prediction that marks the rock and, well past
    the brink, a false cell, scores recall 1 for labelled cells in 0-3 m and 0 for the drop in 6-9 m, and
    precision 1 / 0 in those bands; each lethal cell counts under the source the caller names."""
    from perception_core.metrics.costmap import CostmapMeasures, RangeBandMeasures, ground_truth_geometry

    config, grid, x, y = strip_grid(12.0)
    heights, truth, rock = rock_before_a_drop(x, y, 7.5)
    raised = ground_truth_geometry(truth, heights, config)
    predicted = np.where(rock, np.int8(Category.BLOCKED), np.int8(Category.FREE))
    # 1.3 m past the brink: farther than the hidden face that excuses a cell (HIDDEN_REACH_M) plus the tolerance
    late = (x > 8.7) & (x < 8.9) & (np.abs(y) < 0.5)
    predicted[late] = Category.BLOCKED
    bands = RangeBandMeasures()
    bands.add(predicted, raised, grid, {"labels": rock, "geometry": late})
    summary = bands.summary()
    assert summary["bands_m"] == [[0.0, 3.0], [3.0, 6.0], [6.0, 9.0], [9.0, 12.0]]
    assert summary["recall_labelled"][0] == 1.0 and math.isnan(summary["recall_labelled"][2])
    assert summary["recall_drop"][2] == 0.0 and summary["counts"]["gt_drop_cells"][2] == int(raised.drops.sum())
    assert summary["precision_all"][0] == 1.0 and summary["precision_all"][2] == 0.0
    assert summary["precision_labels"][0] == 1.0 and summary["precision_geometry"][2] == 0.0
    assert math.isnan(summary["precision_labels"][2]) and summary["counts"]["lethal_geometry_cells"][2] == late.sum()
    totals = CostmapMeasures()  # the bands split the totals' cells, no more and no fewer
    totals.add(predicted, raised, grid)
    for band_key, total_key in (("gt_all_cells", "gt_obstacle_cells"), ("gt_all_cells_hit", "gt_obstacle_cells_hit"),
                                ("lethal_all_cells", "lethal_cells"), ("lethal_all_cells_near_gt", "lethal_cells_near_gt")):
        assert sum(summary["counts"][band_key]) == totals.counts[total_key]
    bands.add(predicted, raised, grid, {"labels": rock, "geometry": late})  # counts add up frame by frame
    assert bands.summary()["counts"]["gt_all_cells"] == [2 * n for n in summary["counts"]["gt_all_cells"]]
