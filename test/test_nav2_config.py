"""config/nav2_costmap.yaml agrees with the costmap node it consumes (frames, cells, topics, QoS, ranges).

The Nav2 rules each setting follows are cited in docs/costmap.md ("Nav2"); Nav2 is not installable here, so
this checks the file against the node's declared parameters and config/perception.yaml instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seg_perception.costmap_node import CLEARING_POINTS_TOPIC, COSTMAP_TOPIC, OBSTACLE_POINTS_TOPIC

ROOT = Path(__file__).resolve().parents[1]


def sections() -> tuple[dict, dict]:
    nav2 = yaml.safe_load((ROOT / "config" / "nav2_costmap.yaml").read_text())
    node = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    return nav2["local_costmap"]["local_costmap"]["ros__parameters"], node["/**/costmap_node"]["ros__parameters"]


def test_frames_cells_and_topics_match_the_costmap_node() -> None:
    costmap, node = sections()
    assert costmap["global_frame"] == node["fixed_frame"] and costmap["robot_base_frame"] == node["base_frame"]
    assert costmap["rolling_window"] is True and costmap["resolution"] == node["resolution"]
    assert isinstance(costmap["width"], int) and isinstance(costmap["height"], int)  # Jazzy declares them int
    assert costmap["width"] <= node["width_m"] and costmap["height"] <= node["height_m"]
    grid = costmap["perception_grid"]
    assert grid["map_topic"] == "/" + COSTMAP_TOPIC and grid["map_subscribe_transient_local"] is True
    sources = costmap["perception_obstacles"]
    topics = {sources[name]["topic"] for name in sources["observation_sources"].split()}
    assert topics == {"/" + OBSTACLE_POINTS_TOPIC, "/" + CLEARING_POINTS_TOPIC}


def test_unknown_stays_unknown_and_grades_survive() -> None:
    costmap, node = sections()
    assert costmap["track_unknown_space"] is True and costmap["use_maximum"] is False
    assert costmap["trinary_costmap"] is False and costmap["lethal_cost_threshold"] == 100
    assert node["cost_blocked"] == 100 and node["cost_caution"] < 100
    assert costmap["perception_obstacles"]["combination_method"] == 2
    assert costmap["plugins"][0] == "perception_grid", "the StaticLayer overwrites: it must come first"


def test_observation_sources_see_the_whole_depth_range_and_watch_liveness() -> None:
    costmap, node = sections()
    layer = costmap["perception_obstacles"]
    for name in layer["observation_sources"].split():
        source = layer[name]
        assert source["data_type"] == "PointCloud2" and source["clearing"] is True
        assert source["obstacle_max_range"] > node["max_range"] and source["raytrace_max_range"] > node["max_range"]
        assert source["max_obstacle_height"] > node["max_point_height"] and source["min_obstacle_height"] < 0
        assert 0 < source["expected_update_rate"] <= node["stale_timeout_s"]
    assert layer["perception_obstacles"]["marking"] is True and layer["perception_clearing"]["marking"] is False
