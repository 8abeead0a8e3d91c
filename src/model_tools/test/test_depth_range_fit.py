"""`python -m model_tools.depth_range_fit` on the shipped depth model: a correction the pipeline accepts for that
camera, which brings the fit frames' truth / prediction toward 1, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_tools import depth_range_fit
from model_tools.data.synth import CameraRig
from perception_core.model_metadata import read_metadata
from perception_core.pipelines import camera_ratios
from perception_core.range_correction import load_range_correction

ROOT = Path(__file__).resolve().parents[3]
DEPTH_MODEL = ROOT / "models" / "depth_levels_r18.onnx"
SEG_MODEL = ROOT / "models" / "ddrnet23s_offroad.onnx"
pytestmark = pytest.mark.skipif(not DEPTH_MODEL.is_file(), reason="demo models are exported by make setup")


def test_the_fit_writes_a_correction_for_this_model_and_camera(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Frames at about the shipped model's input (768x896) and the vehicle camera's aspect: the model reads frames
    # upsampled from a much smaller camera badly (docs/depth.md), which is the camera's problem, not the fit's.
    out = tmp_path / "rc.yaml"
    args = ["--model", str(DEPTH_MODEL), "--out", str(out), "--width", "896", "--height", "756", "--hfovs", "80",
            "--heights", "1.6", "--pitches", "10", "--seeds", "1201", "--frames", "2", "--min-pixels", "300",
            "--threads", "1", "--no-progress"]
    assert depth_range_fit.main(args) == 0
    corr = load_range_correction(out)
    meta = read_metadata(DEPTH_MODEL)
    rig = CameraRig.default(896, 756, hfov_deg=80.0, mount_height=1.6, pitch_deg=10.0)
    focal, height = camera_ratios(meta, np.asarray(rig.K, float), (756, 896), 1.6)
    assert corr.model_sha256 == meta.content_sha256
    assert (corr.focal_ratios, corr.height_ratios) == (pytest.approx((focal,)), pytest.approx((height,)))
    assert corr.model_refusal(meta.content_sha256) is None and corr.camera_refusal(focal, height) is None
    curve = corr.curves[0][0]
    assert len(curve.depths_m) >= 5 and all(0.8 <= f <= 1.25 for f in curve.factors)
    camera = corr.source["cameras"][0]
    before, after = camera["before"], camera["after"]
    assert corr.source["seeds"] == [1201] and camera["pixels"] == sum(b["pixels"] for b in before)
    assert set(curve.factors) <= {b["factor"] for b in camera["bins"]}  # the curve is the recorded bins' factors
    assert all(b["spread"] == 0.0 for b in camera["bins"])  # one drive: no spread to shrink by
    for b, a in zip(before, after, strict=True):
        if b["pixels"] >= 300 and a["pixels"] >= 300:  # the correction moves each band's median toward the truth
            assert abs(a["median_ratio"] - 1.0) <= abs(b["median_ratio"] - 1.0) + 0.01
    assert f"wrote {out}" in capsys.readouterr().out


def test_a_model_that_is_not_a_depth_model_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--model", str(SEG_MODEL), "--out", str(tmp_path / "rc.yaml"), "--width", "160", "--height", "135",
            "--heights", "1.4", "--hfovs", "90", "--seeds", "1201", "--frames", "1", "--no-progress"]
    assert depth_range_fit.main(args) == 1
    assert "depth_range_fit: error:" in capsys.readouterr().err and not (tmp_path / "rc.yaml").exists()


def test_a_checkpoint_hash_covers_every_split_part_in_order(tmp_path) -> None:
    import hashlib

    import torch

    from model_tools.training.checkpoint import checkpoint_sha256, save_split

    state = {f"w{i}": torch.full((64, 64), float(i)) for i in range(4)}
    paths = save_split(state, tmp_path / "net_fp16", max_part_bytes=64 * 1024 + 40_000)  # 64 KiB framing + 2 tensors
    assert len(paths) > 1
    expected = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()
    assert checkpoint_sha256(tmp_path / "net_fp16") == expected
    assert checkpoint_sha256(paths[0]) == hashlib.sha256(paths[0].read_bytes()).hexdigest()  # one file: itself
    state["w0"][0, 0] = 5.0
    save_split(state, tmp_path / "net_fp16", max_part_bytes=64 * 1024 + 40_000)
    assert checkpoint_sha256(tmp_path / "net_fp16") != expected
