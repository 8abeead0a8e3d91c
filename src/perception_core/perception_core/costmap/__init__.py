"""Traversability costmap from depth and labels (numpy + cv2, no ROS): geometry, fusion, timing, corridor.

The costmap node and offline evaluation share this package, so everything is
tested without DDS. Modules: ``config`` (validated parameters), ``classes``
(label id -> category, surface, known), ``projection`` (one frame -> cells),
``terrain`` (ground geometry: step and slope against the vehicle's limits),
``rolling`` (the fixed-frame window and temporal fusion), ``pose`` (a
time-indexed pose buffer), ``sync`` (pairing, flat-ground timing and the
staleness watchdog on an injectable clock), ``corridor`` (distances ahead)
and ``inputs`` (sanity rules for camera_info and depth images).
"""

from perception_core.costmap.classes import (
    DEFAULT_FLAT_OBSTACLE_CLASSES,
    ClassMap,
    class_categories_from_ontology,
    class_map_from_ontology,
)
from perception_core.costmap.config import CATEGORIES, MAX_GRID_CELLS, UNKNOWN, CorridorConfig, CostmapConfig
from perception_core.costmap.corridor import (
    CorridorReport,
    CorridorVerdict,
    check_corridor_fits,
    corridor_distances,
    corridor_report,
    unknown_report,
)
from perception_core.costmap.inputs import check_camera_info, depth_from_16uc1, depth_problem
from perception_core.costmap.pose import PoseBuffer
from perception_core.costmap.projection import (
    CostmapResult,
    GridWindow,
    build_costmap,
    camera_to_grid_transform,
    column_step,
    grid_from_points,
    project_points,
    resize_nearest,
    warm_up,
)
from perception_core.costmap.rolling import FusedCostmap, RollingGrid, costs_of
from perception_core.costmap.sync import DepthLabelSync, ExactStampPairer, StalenessWatchdog, Work
from perception_core.ontology import NOT_PROJECTED, Category

__all__ = [
    "CATEGORIES", "DEFAULT_FLAT_OBSTACLE_CLASSES", "MAX_GRID_CELLS", "NOT_PROJECTED", "UNKNOWN", "Category",
    "ClassMap", "CorridorConfig", "CorridorReport", "CorridorVerdict", "CostmapConfig", "CostmapResult",
    "DepthLabelSync", "ExactStampPairer", "FusedCostmap", "GridWindow", "PoseBuffer", "RollingGrid",
    "StalenessWatchdog", "Work", "build_costmap", "camera_to_grid_transform", "check_camera_info",
    "check_corridor_fits", "class_categories_from_ontology", "class_map_from_ontology", "column_step",
    "corridor_distances",
    "corridor_report", "costs_of", "depth_from_16uc1", "depth_problem", "grid_from_points", "project_points",
    "resize_nearest", "unknown_report", "warm_up",
]
