"""Live-evaluation set-up and verdict, without starting the stack: the stack parameters and path agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from model_tools.bags.scoring import EvalScorer
from perception_tools.live import (
    STARTUP_ALLOWANCE_S,
    PathComparison,
    live_depth_timeout_s,
    write_live_report,
    write_stack_params,
)


def test_depth_timeout_scales_with_the_replay_rate_and_is_capped() -> None:
    assert live_depth_timeout_s(1.0, 1.0, 60.0) == pytest.approx(1.0 + STARTUP_ALLOWANCE_S)
    # 0.05x: frames every 2 s instead of 0.1 s, so 1 s of silence is 20 s of wall time.
    assert live_depth_timeout_s(1.0, 0.05, 60.0) == pytest.approx(20.0 + STARTUP_ALLOWANCE_S)
    assert live_depth_timeout_s(1.0, 0.01, 60.0) == 60.0
    with pytest.raises(ValueError, match="rate"):
        live_depth_timeout_s(1.0, 0.0, 60.0)


def test_stack_params_keep_the_base_file_and_set_mount_and_scaled_timeout(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "depth_node": {"ros__parameters": {"model_path": "models/d.onnx"}},
        "costmap_node": {"ros__parameters": {"depth_timeout_s": 0.5, "resolution": 0.2, "mount_z": 9.0}},
    }))
    out = write_stack_params(tmp_path / "stack.yaml", base, {"mount_z": 1.4, "mount_pitch": 0.17}, rate=0.1,
                             exact_pairing=True)
    data = yaml.safe_load(out.read_text())
    costmap = data["costmap_node"]["ros__parameters"]
    assert data["depth_node"]["ros__parameters"]["model_path"] == "models/d.onnx"
    assert costmap["resolution"] == 0.2 and costmap["mount_z"] == 1.4 and costmap["mount_pitch"] == 0.17
    assert costmap["depth_timeout_s"] == pytest.approx(0.5 / 0.1 + STARTUP_ALLOWANCE_S)
    assert costmap["pairing_max_skew_s"] == 0.0, "a run compared frame by frame must pair exact stamps only"
    assert data["depth_node"]["ros__parameters"]["camera_height"] == 1.4  # the bag's mount, as TF would give it
    assert "fused_node" not in data
    namespaced = tmp_path / "namespaced.yaml"
    namespaced.write_text(yaml.safe_dump({"/**/depth_node": {"ros__parameters": {"camera_height": 2.0}},
                                          "/**/fused_node": {"ros__parameters": {"depth": {"model_path": "d.onnx"}}}}))
    data = yaml.safe_load(write_stack_params(tmp_path / "ns.yaml", namespaced, {"mount_z": 1.1}).read_text())
    assert data["/**/depth_node"]["ros__parameters"]["camera_height"] == 1.1 and "depth_node" not in data
    assert data["/**/fused_node"]["ros__parameters"]["depth"] == {"model_path": "d.onnx", "camera_height": 1.1}
    bare = yaml.safe_load(write_stack_params(tmp_path / "bare.yaml", None, None, rate=0.25).read_text())
    from seg_perception.costmap_node import PARAMETERS

    node_default = PARAMETERS["depth_timeout_s"][0]  # no base file: the node's own default, scaled
    assert bare["costmap_node"]["ros__parameters"]["depth_timeout_s"] == pytest.approx(
        node_default / 0.25 + STARTUP_ALLOWANCE_S)
    assert "pairing_max_skew_s" not in bare["costmap_node"]["ros__parameters"]  # the node's default applies


def _verdict(tmp_path: Path, comparison: PathComparison) -> dict:
    scorer = EvalScorer(["ground", "tree"])
    counts = {"frames_in_bag": 2, "frames_with_outputs": 2, "frames_scored": 2, "frames_dropped": 0}
    metrics = write_live_report(tmp_path, scorer, counts, None, comparison, EvalScorer(["ground", "tree"]), [], {})
    assert json.loads((tmp_path / "metrics.json").read_text())["agreement_with_offline"] == json.loads(
        json.dumps(metrics["agreement_with_offline"]))
    return metrics["agreement_with_offline"]


def test_paths_agree_only_when_every_costmap_cell_matches(tmp_path: Path) -> None:
    same = PathComparison(frames_compared=2, depth_max_abs_diff_m=[0.0, 0.0], label_agreement=[1.0, 1.0],
                          costmap_cell_agreement=[1.0, 1.0])
    assert _verdict(tmp_path / "same", same)["agree"] is True
    # One costmap off by 0.05 % of its cells (less than the metric tolerance) still differs.
    flat = PathComparison(frames_compared=2, depth_max_abs_diff_m=[0.0, 0.0], label_agreement=[1.0, 1.0],
                          costmap_cell_agreement=[1.0, 0.9995], costmap_flat_ground_stamps=[7])
    verdict = _verdict(tmp_path / "flat", flat)
    assert verdict["agree"] is False
    assert verdict["costmap_frames_differing"] == 1 and verdict["costmap_flat_ground_frames"] == 1
    assert verdict["costmap_flat_ground_stamps_ns"] == [7]
