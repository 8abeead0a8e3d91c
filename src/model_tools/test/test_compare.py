"""FP32 vs INT8 report on tiny models: task metrics, head analysis, HTP agreement, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from quant_fixtures import write_dataset

from model_tools.quant.compare import HeadErrors, Thresholds, compare_models, output_agreement, rate_metrics
from model_tools.quant.compile import compile_context_binary
from model_tools.quant.evaluate import TaskScorer, decoder, scored_depth
from model_tools.quant.images import ImageSource
from model_tools.quant.quantize import QuantSettings, quantize_model
from perception_core.errors import ConfigError, OutputExistsError
from perception_core.model_metadata import read_metadata
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cmpdata") / "ds", n=4)


@pytest.mark.htp
def test_depth_report_metrics_heads_and_htp_agreement(tmp_path, data_root):
    fp32 = make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=32)
    qdq = tmp_path / "d_qdq.onnx"
    quantize_model(fp32, qdq, ImageSource(folder=str(data_root), split="train"), QuantSettings(head_bits=16), count=4,
                   progress=False)
    ctx = tmp_path / "d_ctx.onnx"
    compile_context_binary(qdq, ctx, check_run=False)
    out = tmp_path / "report"
    report = compare_models(fp32, qdq, ImageSource(folder=str(data_root), split="val"), out, htp_frames=2,
                            htp_model=ctx, progress=False)
    assert report["frames"] == 4 and report["has_ground_truth"]
    f, q = report["fp32_metrics"], report["int8_metrics"]
    assert f["n_valid"] == q["n_valid"] > 0 and f["abs_rel"] < 0.2  # 32 levels: 0.48 m steps
    rated = report["acceptability"]["metrics"]["abs_rel"]
    assert rated["int8_worse_by"] == pytest.approx(q["abs_rel"] - f["abs_rel"])
    assert report["acceptability"]["overall"] in ("excellent", "good", "warning", "unacceptable")
    heads = report["head_errors"]
    assert heads["integer_head_mean_abs_change_m"] + heads["fractional_head_mean_abs_change_m"] >= \
        heads["mean_abs_depth_change_m"] - 1e-6  # |d(a+b)| <= |da| + |db|
    assert 0.0 <= heads["integer_level_changed_fraction"] <= 1.0
    assert sum(heads["by_depth"]["pixels"]) > 0 and len(heads["by_depth"]["bin_edges_m"]) == 11
    ha = report["htp_agreement"]
    assert ha["frames"] == 2 and ha["integer_level_agreement"] > 0.9 and "HTP" in ha["backend"]
    assert set(ha["outputs"]) == {"integer", "fractional"}
    on_frames = ha["metrics_on_these_frames"]  # FP32, QDQ-on-CPU and HTP against GT on the same 2 frames
    assert set(on_frames) == {"fp32", "qdq_cpu", "htp"} and all(0 < m["abs_rel"] < 1 for m in on_frames.values())
    assert 0.0 <= f["pipeline_invalid_fraction"] <= 1.0
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["int8_quantization"]["label"] == "w8a8+head16"
    npz = np.load(out / "outputs" / "000000.npz")
    assert {"fp32_integer", "int8_integer", "fp32_fractional", "int8_fractional", "ground_truth"} <= set(npz.files)
    md = (out / "comparison.md").read_text()
    assert "## Depth heads" in md and "HTP vs QDQ-on-CPU agreement" in md and "![error_vs_depth.png]" in md
    assert (out / "error_vs_depth.png").stat().st_size > 1000
    with pytest.raises(OutputExistsError, match=r"comparison\.json exists"):
        compare_models(fp32, qdq, ImageSource(folder=str(data_root), split="val"), out, htp_frames=0, progress=False)


def test_camera_aware_depth_is_decoded_and_scored_with_each_folder_frames_camera(tmp_path):
    """Frames of a synthetic folder carry their camera; a camera-aware model's depth is scaled with it."""
    from model_tools.data.synth import CameraRanges, camera_for, frame_seed, write_synthetic_folder
    from model_tools.quant.images import read_frame

    ranges = CameraRanges(64, 48)
    split = write_synthetic_folder(tmp_path / "ds", ranges, 2, seed=4, split="val", progress=False)
    meta = read_metadata(make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=16, max_depth=15.0,
                                               depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                               canonical_height_m=2.0))
    integer_name, fractional_name = meta.output_names
    outputs = {integer_name: np.full((1, 1, 32, 32), 4 / 15, np.float32),
               fractional_name: np.full((1, 1, 32, 32), 0.5, np.float32)}
    for i in range(2):
        frame = read_frame(split / "rgb" / f"{i:06d}.png")
        rig = camera_for(ranges, frame_seed(4, i, "val"))
        np.testing.assert_allclose(frame.camera["camera_k"], rig.K)
        scale = np.sqrt(rig.fx * 32 / 64 * rig.fy * 32 / 48) / 20.0 * rig.mount_height / 2.0
        decoded = decoder(meta)(outputs, frame)
        assert decoded.depth_scale == pytest.approx(scale, rel=1e-6)
        np.testing.assert_allclose(decoded.depth, np.where(4.5 * scale <= 15.0, 4.5 * scale, np.nan), rtol=1e-6)
        np.testing.assert_allclose(scored_depth(decoded, meta), 4.5 * scale, rtol=1e-6)
    with pytest.raises(ConfigError, match="needs the camera's K"):
        decoder(meta)(outputs)


def test_depth_scoring_keeps_pixels_the_pipeline_marks_invalid(tmp_path):
    """Depth at or past the pipeline's range (REP 117 +Inf) is scored as its composition clipped, not as missing."""
    meta = read_metadata(make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=16, max_depth=15.0))
    integer_name, fractional_name = meta.output_names
    # 15 + 0.5 and 15 + 1.5 are at or beyond max_depth: +Inf for the node (REP 117), scored as 15.5 / 16.5 clipped.
    outputs = {integer_name: np.array([[[[1.0, 0.5, 1.0]]]], np.float32),
               fractional_name: np.array([[[[0.5, 0.25, 1.5]]]], np.float32)}
    decoded = decoder(meta)(outputs)
    assert np.isposinf(decoded.depth[0, [0, 2]]).all() and decoded.depth[0, 1] == pytest.approx(7.75)
    np.testing.assert_allclose(scored_depth(decoded, meta), [[15.5, 7.75, 16.5]])
    scorer = TaskScorer(meta)
    scorer.update(decoded, np.array([[14.5, 7.75, 14.5]], np.float32))
    metrics = scorer.compute()
    assert metrics["pipeline_invalid_fraction"] == pytest.approx(2 / 3)
    assert metrics["abs_rel"] == pytest.approx(2 * (15.0 - 14.5) / 14.5 / 3, rel=1e-5)  # 16.5 clipped to max_depth


def test_depth_change_counts_only_pixels_valid_in_both_outputs(tmp_path):
    """A pixel finite in one model and not in the other (+Inf: beyond the range) is a validity change, not a depth
    change."""
    meta = read_metadata(make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate", levels=16, max_depth=15.0))
    integer_name, fractional_name = meta.output_names
    step = 1.0  # 15 m over 15 level steps
    # pixel:        0: 5.0 -> 5.5   1: 14.9 -> 16.5 (+Inf)   2: 3.0 -> 3.0   3: 16.5 (+Inf) -> 14.0
    fp32_int, fp32_frac = [5 / 15, 14 / 15, 3 / 15, 1.0], [0.0, 0.9, 0.0, 1.5]
    int8_int, int8_frac = [5 / 15, 1.0, 3 / 15, 14 / 15], [0.5, 1.5, 0.0, 0.0]
    decode = decoder(meta)

    def outputs(integer, fractional):
        return {integer_name: np.array(integer, np.float32).reshape(1, 1, 1, 4),
                fractional_name: np.array(fractional, np.float32).reshape(1, 1, 1, 4) * step}

    d32, d8 = decode(outputs(fp32_int, fp32_frac)), decode(outputs(int8_int, int8_frac))
    np.testing.assert_allclose(d32.depth[0], [5.0, 14.9, 3.0, np.inf], atol=1e-5)  # the pipeline's own ranges
    np.testing.assert_allclose(d8.depth[0], [5.5, np.inf, 3.0, 14.0], atol=1e-5)
    heads = HeadErrors(meta)
    heads.update(d32, d8, None)
    summary = heads.summary()
    assert summary["pixels_compared"] == 2 and summary["validity_changed_fraction"] == pytest.approx(0.5)
    assert summary["mean_abs_depth_change_m"] == pytest.approx(0.5 / 2, abs=1e-5)  # pixels 0 and 2 only
    assert summary["integer_head_mean_abs_change_m"] == pytest.approx(0.0, abs=1e-5)
    assert summary["fractional_head_mean_abs_change_m"] == pytest.approx(0.5 / 2, abs=1e-5)
    assert summary["integer_level_changed_fraction"] == 0.0
    agreement = output_agreement(meta, outputs(fp32_int, fp32_frac), outputs(int8_int, int8_frac))
    assert agreement["depth_validity_agreement"] == pytest.approx(0.5)
    assert agreement["depth_mean_abs_m"] == pytest.approx(0.25, abs=1e-5)
    assert agreement["depth_max_abs_m"] == pytest.approx(0.5, abs=1e-5)
    assert agreement["depth_within_1cm_fraction"] == pytest.approx(0.5)


def test_seg_report_per_class_iou_without_htp(tmp_path, data_root):
    fp32 = make_tiny_seg_model(tmp_path / "s.onnx", output="class_id")
    qdq = tmp_path / "s_qdq.onnx"
    quantize_model(fp32, qdq, ImageSource(folder=str(data_root), split="train"), count=4, progress=False)
    report = compare_models(fp32, qdq, ImageSource(folder=str(data_root), split="val"), tmp_path / "r",
                            htp_frames=0, progress=False)
    names = report["fp32_metrics"]["class_names"]
    assert len(names) == 7 and set(report["int8_metrics"]["per_class_iou"]) == set(names)
    assert 0.0 <= report["label_agreement_int8_vs_fp32"] <= 1.0
    assert report["htp_agreement"]["frames"] == 0
    md = (tmp_path / "r" / "comparison.md").read_text()
    assert "## Per-class IoU" in md and "| smooth_ground |" in md
    assert (tmp_path / "r" / "confusion_int8.png").is_file()


def test_thresholds_levels_and_file(tmp_path):
    t = Thresholds()
    fp32 = {"abs_rel": 0.0304, "rmse": 0.5, "a1": 0.97}
    assert rate_metrics(fp32, {"abs_rel": 0.0310, "rmse": 0.51, "a1": 0.968}, "depth", t)["overall"] == "excellent"
    seeds = rate_metrics(fp32, {"abs_rel": 0.1133, "rmse": 0.5, "a1": 0.97}, "depth", t)
    assert seeds["metrics"]["abs_rel"]["level"] == "unacceptable" and seeds["overall"] == "unacceptable"
    assert rate_metrics(fp32, {"abs_rel": 0.0384, "rmse": 0.5, "a1": 0.97}, "depth", t)["overall"] == "warning"
    custom = tmp_path / "thr.yaml"
    custom.write_text("depth:\n  abs_rel: [0.01, 0.05, 0.1]\n")
    assert rate_metrics(fp32, {"abs_rel": 0.0384, "rmse": 0.5, "a1": 0.97}, "depth",
                        Thresholds.load(custom))["metrics"]["abs_rel"]["level"] == "excellent"
    custom.write_text("depth:\n  abs_rel: [0.1, 0.05, 0.01]\n")
    with pytest.raises(ConfigError, match=r"depth.abs_rel must be 3 ascending numbers"):
        Thresholds.load(custom)
