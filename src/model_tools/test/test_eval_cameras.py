"""model_tools.eval_cameras on a tiny camera-aware model: every set rendered, scored through the pipeline, reported."""

from __future__ import annotations

import json

import pytest

from model_tools.eval_cameras import main
from perception_core.testing.tiny_models import make_tiny_depth_model


def test_reports_every_camera_set_with_its_goal_verdict(tmp_path):
    model = make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=16, max_depth=15.0, min_depth=0.1,
                                  depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                  canonical_height_m=0.8)
    argv = ["--model", str(model), "--out", str(tmp_path / "report"), "--work", str(tmp_path / "work"),
            "--heights", "0.8", "2.2", "--pitches", "10", "--hfovs", "90", "--frames", "1", "--default-frames", "1",
            "--random-frames", "1", "--width", "64", "--height", "48", "--workers", "1",
            "--goal-any", "5.0", "0.0"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report" / "cameras.json").read_text())
    names = [s["name"] for s in report["sets"]]
    assert names == ["default", "random", "h0.8_p10_fov90", "h2.2_p10_fov90"]
    grid = report["sets"][2:]
    assert [s["cell"]["mount_height"] for s in grid] == [0.8, 2.2]
    for entry in report["sets"]:
        assert entry["frames"] == 1 and 0 < entry["metrics"]["n_valid"] and entry["metrics"]["abs_rel"] >= 0
        assert entry["metrics"]["scale"] > 0
        # Obstacle pixels are a part of the valid ones, scored alike.
        assert 0 <= entry["obstacle_metrics"]["n_valid"] < entry["metrics"]["n_valid"]
    assert sum(s["obstacle_metrics"]["n_valid"] for s in report["sets"]) > 0  # the scenes hold obstacles
    for entry in report["sets"]:  # ground pixels, split by relief: a part of the valid ones, apart from obstacles
        ground = entry["ground_metrics"]
        assert ground["level"]["n_valid"] > 0
        assert ground["level"]["n_valid"] + ground["relief"]["n_valid"] + entry["obstacle_metrics"]["n_valid"] \
            <= entry["metrics"]["n_valid"]
    # A grey-level model is not a depth model: the vehicle-camera goal fails, the loosened any-camera goal holds.
    assert not report["sets"][0]["goal_met"] and all(s["goal_met"] for s in grid)
    assert report["summary"]["grid_cells"] == 2 == report["summary"]["grid_cells_meeting_goal"]
    assert report["metadata"]["depth_camera"] == "canonical_focal_height"
    md = (tmp_path / "report" / "cameras.md").read_text()
    assert "| h2.2_p10_fov90 | 2.2 | 10 | 90 | 1 |" in md and (tmp_path / "report" / "cameras.png").stat().st_size > 1000
    # The rendered sets are reused: a second run renders nothing new and scores the same.
    assert main(argv) == 0
    again = json.loads((tmp_path / "report" / "cameras.json").read_text())
    assert [s["metrics"] for s in again["sets"]] == [s["metrics"] for s in report["sets"]]
    # The network's own composition by default; the node's interpolated depth when asked, and the report says which.
    assert report["interpolate_levels"] is False
    assert main([*argv[:3], str(tmp_path / "interpolated"), *argv[4:], "--interpolate-levels"]) == 0
    interpolated = json.loads((tmp_path / "interpolated" / "cameras.json").read_text())
    assert interpolated["interpolate_levels"] is True and "--interpolate-levels" in interpolated["command"]
    assert [s["name"] for s in interpolated["sets"]] == names
    with pytest.raises(SystemExit):
        main(["--model", str(model)])  # --out is required


def test_ground_relief_is_the_ground_whose_true_point_leaves_the_vehicle_plane(tmp_path):
    """Flat terrain (``--flat``): every ground pixel is level. The terrain world holds relief at some mount."""
    from model_tools.data.synth import CameraRig, write_synthetic_folder
    from model_tools.eval_cameras import score_folder
    from perception_core.pipelines import DepthPipeline
    from perception_core.runtime.loader import load_model

    model = make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=16, max_depth=15.0, min_depth=0.1,
                                  depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                  canonical_height_m=0.8)
    pipeline = DepthPipeline(load_model(model, backend="cpu", expected_task="depth"))
    rig = CameraRig.default(96, 72, mount_height=1.4, pitch_deg=10.0)
    scores = {}
    for flat in (True, False):
        root = tmp_path / f"flat{flat}"
        write_synthetic_folder(root, rig, 3, 5, "test", flat=flat, progress=False)
        scores[flat] = score_folder(pipeline, root / "test")
    assert scores[True]["ground_level"]["n_valid"] > 0 and scores[True]["ground_relief"]["n_valid"] == 0
    assert scores[False]["ground_relief"]["n_valid"] > 0


def test_obstacle_pixels_are_the_standing_lethal_classes_of_the_ontology():
    import numpy as np

    from perception_core.costmap import class_map_from_ontology

    # static_obstacle and dynamic stand up; water is lethal but flat, sky and undefined ids are no obstacle.
    assert np.flatnonzero(class_map_from_ontology().defined_standing).tolist() == [4, 5]
