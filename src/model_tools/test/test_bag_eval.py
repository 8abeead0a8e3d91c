"""eval-bag on tiny synthetic drive bags the tests render: outputs, oracle scoring, and failure paths."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_tools.bags import bagio
from model_tools.bags.eval_bag import FramePrediction, OfflineStack, evaluate_bag
from perception_core.errors import BagError, OutputExistsError
from perception_core.testing.cli import one_line_error, run_command, unwritable_folder

CAMERA_WH = (64, 48)
MODEL_HW = (24, 32)  # the camera's aspect ratio, as the costmap requires


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

    folder = tmp_path_factory.mktemp("models")
    return (make_tiny_depth_model(folder / "depth.onnx", hw=MODEL_HW),
            make_tiny_seg_model(folder / "seg.onnx", hw=MODEL_HW))


def _drive(path: Path, frames: int, size: tuple[int, int] = CAMERA_WH, seed: int = 14) -> Path:
    """A synthetic terrain drive bag (camera, GT depth, labels and elevation)."""
    from model_tools.data.synth import CameraRig
    from model_tools.data.synth_bag import write_drive_bag

    return write_drive_bag(path, CameraRig.default(width=size[0], height=size[1]), n_frames=frames, fps=10.0,
                           seed=seed, progress=False)


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _drive(tmp_path_factory.mktemp("bags") / "drive", 3)


def test_eval_bag_writes_complete_metrics_csv_and_self_contained_report(drive_bag, models, tmp_path) -> None:
    result = evaluate_bag(drive_bag, *models, tmp_path / "eval", progress=False, num_samples=2)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["partial"] is False and metrics["partial_reason"] is None
    assert metrics["frames_in_bag"] == metrics["frames_evaluated"] == 3
    assert metrics["backend_used"] == "cpu"
    assert all(check.startswith("verified") for check in metrics["model_content_check"].values())
    assert metrics["costmap_setup"]["mount"] == "bag"  # the synthetic rig's mount, from the bag's metadata
    assert metrics["costmap_setup"]["mount_values"]["mount_z"] == pytest.approx(1.4)
    for key in ("abs_rel", "rmse", "a1"):
        assert 0.0 <= metrics["depth"][key] < 100.0
    assert set(metrics["segmentation"]["per_class_iou"]) == set(result.stack.class_names)
    assert 0.0 <= metrics["costmap"]["agreement_observed"] <= 1.0
    assert metrics["latency_ms"]["total_ms"]["count"] == 3
    rows = (tmp_path / "eval" / "frames.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "PARTIAL" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 3 + 2 * 5  # plots + 2 sample frames of >= 5 panels
    assert all(src.startswith("data:image/png;base64,") for src in images)  # self-contained
    assert "Costmap vs GT-derived costmap" in html and "Sample frames" in html
    assert "What the planner sees" in html and metrics["costmap_measures"]["frames"] == 3
    assert "By distance ahead" in html and metrics["costmap_by_range"]["frames"] == 3


@pytest.mark.parametrize("seed", [7, 21])
def test_eval_bag_scores_ground_truth_as_prediction_perfectly(models, tmp_path, monkeypatch, seed: int) -> None:
    """An oracle stack that returns the bag's GT proves the frame matching, resizing and GT costmap line up.

    Drives past a ditch and a drop-off, at 320x270 (a 64x48 pixel spans several cells at range, too coarse
    for steps and slopes): the truth includes what the bag's terrain elevation blocks.
    """

    def oracle(self: OfflineStack, frame) -> FramePrediction:
        depth = frame.gt_depth.astype(np.float32)
        result = self.costmap(depth, frame.gt_labels, frame)
        return FramePrediction(depth, frame.gt_labels, result.category, {"total_ms": 1.0})

    bag = _drive(tmp_path / "drive", 3, size=(320, 270), seed=seed)
    monkeypatch.setattr(OfflineStack, "process", oracle)
    metrics = evaluate_bag(bag, *models, tmp_path / "oracle", progress=False).metrics
    assert metrics["depth"]["abs_rel"] == 0.0 and metrics["depth"]["a1"] == 1.0
    assert metrics["segmentation"]["miou"] == 1.0
    assert metrics["costmap"]["agreement_observed"] == 1.0
    present = [v for v in metrics["costmap"]["per_category"].values() if v["gt_cells"]]
    assert present and all(v["precision"] == 1.0 and v["recall"] == 1.0 for v in present)
    # GT in: the bird's-eye truth (projected independently at full resolution, raised by the exact terrain's
    # steps and slopes) is met, up to what the camera cannot see of a drop (bench/bench_costmap.py measures
    # the vehicle size).
    measures = metrics["costmap_measures"]
    assert measures["obstacle_precision"] > 0.92 and measures["obstacle_recall"] > 0.97
    assert measures["object_recall"] > 0.95 and measures["drop_recall"] > 0.95
    assert measures["holes"] < 0.01 and measures["false_lethal"] < 0.005


def test_eval_bag_corruption_of_labels_lowers_miou_by_hand_computed_amount(drive_bag, models, tmp_path,
                                                                            monkeypatch) -> None:
    """Relabel every pixel of GT class a as class b: IoU(a) becomes 0 and IoU(b) = |b| / (|a| + |b|)."""
    from model_tools.bags.frames import iter_frames

    gt = [f.gt_labels for f in iter_frames(drive_bag, bagio.summarize_bag(drive_bag))]
    counts = np.bincount(np.concatenate([g.ravel() for g in gt]), minlength=256)[:7]
    a, b = (int(c) for c in np.argsort(counts)[::-1][:2])  # the two most common classes
    assert counts[a] > 0 and counts[b] > 0

    def corrupt(self: OfflineStack, frame) -> FramePrediction:
        labels = frame.gt_labels.copy()
        labels[labels == a] = b
        return FramePrediction(frame.gt_depth, labels, self.costmap(frame.gt_depth, labels, frame).category, {})

    monkeypatch.setattr(OfflineStack, "process", corrupt)
    metrics = evaluate_bag(drive_bag, *models, tmp_path / "corrupt", progress=False).metrics
    names = metrics["segmentation"]["class_names"]
    iou = metrics["segmentation"]["per_class_iou"]
    assert iou[names[a]] == 0.0
    assert iou[names[b]] == pytest.approx(counts[b] / (counts[a] + counts[b]))
    untouched = [names[c] for c in range(7) if c not in (a, b) and counts[c] > 0]
    assert all(iou[name] == 1.0 for name in untouched)
    assert metrics["depth"]["abs_rel"] == 0.0  # depth was left exact


def test_eval_bag_cli_reports_and_refuses_to_overwrite(drive_bag, models, tmp_path, capsys) -> None:
    from model_tools.cli import main

    args = ["eval-bag", str(drive_bag), "--depth-model", str(models[0]), "--seg-model", str(models[1]),
            "--out", str(tmp_path / "cli"), "--max-frames", "2", "--samples", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "eval-bag: 2 frames" in out and "report.html" in out
    assert main(args) == 1
    assert "metrics.json" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        evaluate_bag(drive_bag, *models, tmp_path / "cli", progress=False)


def test_eval_bag_without_camera_info_names_the_topic(tmp_path, models) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    source = _drive(tmp_path / "full", 1)
    typestore = bagio.make_typestore()
    cut = tmp_path / "no_info"
    with Writer(cut, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        for message in bagio.iter_raw(source, ["/camera/image_raw"]):
            writer.write(conn, message.timestamp_ns, message.data)
    with pytest.raises(BagError, match="/camera/camera_info"):
        evaluate_bag(cut, *models, tmp_path / "eval", progress=False)


def test_eval_bag_missing_bag_is_a_bag_error(tmp_path, models) -> None:
    with pytest.raises(BagError, match=r"missing_bag.*does not exist"):
        evaluate_bag(tmp_path / "missing_bag", *models, tmp_path / "eval", progress=False)


def _break_message(bag: Path, topic: str, index: int) -> None:
    """Overwrite the length field of one stored message record so reading its mcap chunk fails."""
    data = [m.data for m in bagio.iter_raw(bag, [topic])][index]
    mcap = next(bag.glob("*.mcap"))
    blob = bytearray(mcap.read_bytes())
    at = blob.find(data)
    assert at > 0
    # Message record: opcode(1) length(8) channel(2) sequence(4) log_time(8) publish_time(8) data.
    record = at - 31
    assert blob[record] == 0x05
    blob[record + 1 : record + 9] = (2**62).to_bytes(8, "little")
    mcap.write_bytes(bytes(blob))


def test_bag_broken_mid_way_gives_partial_results_and_an_error(tmp_path, models) -> None:
    # 160x120 frames are ~150 kB of messages each, so 9 frames span two 1 MiB mcap chunks.
    bag = _drive(tmp_path / "long", 9, size=(160, 120))
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    _break_message(broken, "/camera/image_raw", 8)
    with pytest.raises(BagError, match=r"broken.*partial results for \d+ frames"):
        evaluate_bag(broken, *models, tmp_path / "eval", progress=False)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["partial"] is True
    assert "broken" in metrics["partial_reason"]
    assert 0 < metrics["frames_evaluated"] < 9
    assert "PARTIAL RESULTS" in (tmp_path / "eval" / "report.html").read_text()


def test_eval_bag_without_ground_truth_reports_latency_only(tmp_path, models) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    source = _drive(tmp_path / "full", 2)
    typestore = bagio.make_typestore()
    camera_only = tmp_path / "camera_only"
    with Writer(camera_only, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, m, typestore=typestore) for t, m in
                 (("/camera/image_raw", "sensor_msgs/msg/Image"), ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"))}
        for message in bagio.iter_raw(source, list(conns)):
            writer.write(conns[message.topic], message.timestamp_ns, message.data)
    metrics = evaluate_bag(camera_only, *models, tmp_path / "eval", progress=False).metrics
    assert metrics["partial"] is False and metrics["frames_evaluated"] == 2
    assert metrics["depth"] is None and metrics["segmentation"] is None and metrics["costmap"] is None
    assert metrics["frames_without_gt"] == 2
    assert metrics["latency_ms"]["total_ms"]["count"] == 2
    assert any("no ground truth" in note for note in metrics["notes"])


def _eval_bag_cli(bag: Path, depth: Path, seg: Path, out: Path, *extra: str | Path):
    return run_command("model_tools.cli", "eval-bag", bag, "--depth-model", depth, "--seg-model", seg, "--out", out, *extra, cwd=out.parent if out.parent.is_dir() else None)


@pytest.mark.reliability(case="output folder not writable: model-tools eval-bag --out",
                         outcome="exit 1 before the evaluation starts, one error line naming --out and the folder")
def test_eval_bag_checks_its_output_before_evaluating(drive_bag, models, tmp_path) -> None:
    with unwritable_folder(tmp_path) as locked:
        if locked is None:
            pytest.skip("no folder on this machine refuses new files")
        result = _eval_bag_cli(drive_bag, *models, locked / "eval")
        line = one_line_error(result, "--out", locked)
        assert "not writable" in line and "frames" not in result.stdout


@pytest.mark.reliability(case="model-tools eval-bag --params naming a file that does not exist",
                         outcome="exit 1 before the evaluation, one error line naming the parameter file")
def test_eval_bag_params_file_that_does_not_exist(drive_bag, models, tmp_path) -> None:
    missing = tmp_path / "perception_typo.yaml"
    result = _eval_bag_cli(drive_bag, *models, tmp_path / "eval", "--params", missing)
    assert "does not exist" in one_line_error(result, missing)
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.reliability(case="model-tools eval-bag with a model file whose weights have a flipped byte",
                         outcome="exit 1 at model load, one error line: content hash mismatch naming the model file")
def test_eval_bag_refuses_a_model_with_flipped_weight_bytes(drive_bag, models, tmp_path) -> None:
    from perception_core.testing.faults import flip_weight_byte

    bad = flip_weight_byte(models[1], tmp_path / "seg_flipped.onnx")
    result = _eval_bag_cli(drive_bag, models[0], bad, tmp_path / "eval")
    assert "content hash mismatch" in one_line_error(result, bad)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def _k_for_twice_the_resolution(info) -> None:
    info.k[[0, 2, 4, 5]] *= 2.0


def _nan_fx(info) -> None:
    info.k[0] = float("nan")


def _negative_fy(info) -> None:
    info.k[4] = -info.k[4]


def _all_zero_k(info) -> None:
    info.k[:] = 0.0


def _square_size_for_a_4_by_3_image(info) -> None:
    info.width = info.height = 64  # the images stay 64x48; K stays centred on the stated size
    info.k[2] = info.k[5] = 31.5


CAMERA_INFO_OUTCOME = "frames not evaluated, listed in camera_info_rejected; partial with the named problem; exit 1"


def _camera_info_case(edit, problem: str, test_id: str, case: str):
    return pytest.param(edit, problem, id=test_id, marks=pytest.mark.reliability(
        case=f"eval-bag: camera_info {case}", outcome=CAMERA_INFO_OUTCOME))


@pytest.mark.parametrize(("edit", "problem"), [
    _camera_info_case(_k_for_twice_the_resolution, r"principal point \(64, 48\) is not in the middle half",
                      "K-for-2x-resolution", "K for twice the image resolution (principal point at the edge)"),
    _camera_info_case(_nan_fx, r"K has non-finite values", "nan-fx", "with non-finite fx"),
    _camera_info_case(_negative_fy, r"focal lengths fx=\S+, fy=-\S+ must be > 0", "negative-fy", "with fy <= 0"),
    _camera_info_case(_all_zero_k, r"K is all zero", "all-zero-K", "with an all-zero K"),
    _camera_info_case(_square_size_for_a_4_by_3_image, r"the image is 64x48 but its camera_info states 64x64",
                      "aspect-mismatch", "width/height with another aspect ratio than the image"),
])
def test_eval_bag_flags_frames_whose_camera_info_cannot_describe_the_image(drive_bag, models, tmp_path, edit,
                                                                           problem) -> None:
    """Scoring such frames would compare a costmap with a reference built from the same wrong K, and agree."""
    from model_tools.testing.bag_faults import rewrite_camera_info

    bad = rewrite_camera_info(drive_bag, tmp_path / "bad_info", edit)
    out = tmp_path / "eval"
    line = one_line_error(_eval_bag_cli(bad, *models, out), "/camera/camera_info")
    assert re.search(problem, line), line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["partial"] is True and metrics["frames_evaluated"] == 0
    assert metrics["costmap"] is None  # no score at all, rather than a plausible one
    assert [r["stamp_ns"] for r in metrics["camera_info_rejected"]] == sorted(
        r["stamp_ns"] for r in metrics["camera_info_rejected"])
    assert len(metrics["camera_info_rejected"]) == 3 and all(re.search(problem, r["problem"])
                                                            for r in metrics["camera_info_rejected"])


def test_a_wrong_k_would_raise_the_costmap_score_if_it_were_scored(drive_bag, models, tmp_path, monkeypatch) -> None:
    """The fault behind the flag: with the check switched off, K for twice the resolution scores higher."""
    from model_tools.bags import eval_bag
    from model_tools.testing.bag_faults import rewrite_camera_info

    bad = rewrite_camera_info(drive_bag, tmp_path / "bad_info", _k_for_twice_the_resolution)
    monkeypatch.setattr(eval_bag, "camera_info_problem", lambda *_: None)
    good_score = evaluate_bag(drive_bag, *models, tmp_path / "good", progress=False).metrics["costmap"]
    bad_score = evaluate_bag(bad, *models, tmp_path / "bad", progress=False).metrics["costmap"]
    assert bad_score["agreement_observed"] > good_score["agreement_observed"]


def test_elevation_on_grid_reads_the_bags_cells_into_the_costmap_grid() -> None:
    """The bag's elevation grid (x -5..15, y -10..10 at 0.1 m) under the costmap's 30 x 30 m window: each
    costmap cell takes the bag cell with the same centre; outside the bag's grid the height is unknown."""
    from model_tools.bags.eval_bag import elevation_on_grid
    from model_tools.data.synth_bag import ElevationGrid
    from perception_core.metrics.costmap import BevGrid

    bag_grid = ElevationGrid()
    gx, gy = bag_grid.centers()
    heights = (0.01 * gx + 0.1 * gy).astype(np.float32)
    cloud = np.stack([gx, gy, heights], axis=-1).astype(np.float32)
    grid = BevGrid(0.1, -15.0, -15.0, 300, 300)
    out = elevation_on_grid(cloud, grid)
    xs, ys = grid.centres()
    inside = ((xs > -5) & (xs < 15))[None, :] & ((ys > -10) & (ys < 10))[:, None]
    expected = (0.01 * xs[None, :] + 0.1 * ys[:, None]).astype(np.float32)
    np.testing.assert_allclose(out[inside], np.broadcast_to(expected, out.shape)[inside], atol=1e-5)
    assert np.isnan(out[~inside]).all()


def test_the_offline_stack_says_why_a_correction_folder_has_none_for_its_model(models, tmp_path) -> None:
    """A correction folder without a file for the running model: no correction, and the reason (which the costmap
    bench prints beside 'off'), as the depth node reports it."""
    from perception_core import costmap
    from perception_core.range_correction import CameraCurve, RangeCorrection, save_range_correction

    folder = tmp_path / "corrections"
    folder.mkdir()
    flat = CameraCurve((2.0, 10.0), (1.0, 1.0))
    save_range_correction(RangeCorrection((1.0,), (1.0,), ((flat,),), model_sha256="ab" * 32), folder / "other.yaml")
    stack = OfflineStack(*models, "cpu", costmap.CostmapConfig(), costmap.class_map_from_ontology(),
                         depth_params={"range_correction_file": str(folder)})
    assert stack.depth.range_correction is None
    assert stack.range_correction_missing.startswith(f"none of the 1 correction file(s) in {folder} was measured")
