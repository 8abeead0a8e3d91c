"""The depth task reads KITTI and any mix of sources from its training config, trains on them and evaluates them.

The KITTI and synthetic folders are written by the test in the loaders' on-disk formats (depth_fixtures), so
every expected value (pixels, counts, metrics) comes from what the test wrote, not from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from depth_fixtures import tiny_depth_config, write_kitti, write_synthetic

from model_tools.cli import main
from model_tools.tasks.depth import DepthTask
from model_tools.training.config import load_config
from perception_core.errors import ConfigError

HW = (64, 96)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("depth_sources")
    kitti = write_kitti(base / "kitti_depth", base / "kitti_raw", {"train": 4, "val": 2}, HW)
    synth = write_synthetic(base / "synth", {"train": 2, "val": 2}, HW)
    return {"base": base, "kitti": kitti, "synth": synth, "kitti_source": {
        "format": "kitti", "root": str(base / "kitti_depth"), "raw_root": str(base / "kitti_raw")},
        "synth_source": {"format": "synthetic", "root": str(base / "synth")}}


def test_a_kitti_source_in_the_config_yields_the_kitti_ground_truth(tmp_path: Path, roots: dict) -> None:
    config = load_config(tiny_depth_config(tmp_path / "c.yaml", HW, [roots["kitti_source"]]))
    train, val = DepthTask(config).build_datasets()
    assert len(train) == 4 and len(val) == 2
    for dataset, expected in ((train, roots["kitti"]["train"]), (val, roots["kitti"]["val"])):
        for i, gt in enumerate(expected):
            item = dataset[i]
            assert item["source"] == "kitti"
            np.testing.assert_array_equal(item["depth"][0].numpy(), gt)  # PNG16 / 256, zeros kept invalid


def test_a_mix_of_sources_concatenates_them_in_order(tmp_path: Path, roots: dict) -> None:
    config = load_config(tiny_depth_config(tmp_path / "c.yaml", HW, [roots["synth_source"], roots["kitti_source"]]))
    train, val = DepthTask(config).build_datasets()
    assert [train[i]["source"] for i in range(len(train))] == ["synthetic"] * 2 + ["kitti"] * 4
    expected = roots["synth"]["val"] + roots["kitti"]["val"]
    assert len(val) == len(expected)
    for i, gt in enumerate(expected):
        np.testing.assert_array_equal(val[i]["depth"][0].numpy(), gt)


def test_max_val_samples_spreads_over_every_source(tmp_path: Path, roots: dict) -> None:
    path = tiny_depth_config(tmp_path / "c.yaml", HW, [roots["synth_source"], roots["kitti_source"]])
    config = load_config(path, ["data.max_val_samples=2"])
    _, val = DepthTask(config).build_datasets()
    assert [val[i]["source"] for i in range(len(val))] == ["synthetic", "kitti"]


def test_sources_without_depth_or_with_typos_are_config_errors(tmp_path: Path, roots: dict) -> None:
    rellis = {"format": "rellis", "root": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.format 'rellis' has no depth ground truth"):
        DepthTask(load_config(tiny_depth_config(tmp_path / "a.yaml", HW, [rellis]))).build_datasets()
    typo = {**roots["kitti_source"], "raw_rot": "x"}
    with pytest.raises(ConfigError, match=r"data\.sources\[0\] has unknown field\(s\) \['raw_rot'\]"):
        DepthTask(load_config(tiny_depth_config(tmp_path / "b.yaml", HW, [typo]))).build_datasets()
    with pytest.raises(ConfigError, match=r"data\.sources is empty"):
        DepthTask(load_config(tiny_depth_config(tmp_path / "c.yaml", HW, []))).build_datasets()


def test_root_is_one_synthetic_source(tmp_path: Path, roots: dict) -> None:
    path = tiny_depth_config(tmp_path / "c.yaml", HW, [])
    config = load_config(path, [f"data.root={roots['synth_source']['root']}"])
    _, val = DepthTask(config).build_datasets()
    assert len(val) == 2 and val[0]["source"] == "synthetic"


def eigen_oracle(preds: list[np.ndarray], gts: list[np.ndarray], min_depth: float, max_depth: float) -> dict[str, float]:
    """abs_rel, rmse and a1 pooled over pixels, written out here from their definitions."""
    p = np.concatenate([x.ravel() for x in preds]).astype(np.float64)
    g = np.concatenate([x.ravel() for x in gts]).astype(np.float64)
    keep = (g > min_depth) & (g < max_depth)
    p, g = np.clip(p[keep], min_depth, max_depth), g[keep]
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
            "a1": float(np.mean(np.maximum(p / g, g / p) < 1.25)), "n_valid": int(keep.sum())}


def test_train_on_kitti_through_the_cli_then_eval_reports_the_kitti_metrics(tmp_path: Path, roots: dict) -> None:
    """depth train with --source kitti=... runs the engine on KITTI; depth eval scores exactly the GT on disk."""
    torch.set_num_threads(1)
    base_config = tiny_depth_config(tmp_path / "c.yaml", HW, [roots["synth_source"]])
    run = tmp_path / "run"
    kitti = roots["kitti_source"]
    argv = ["depth", "train", "--config", str(base_config), "--run-dir", str(run), "--set", "data.max_val_samples=1",
            "--source", f"kitti={kitti['root']},raw_root={kitti['raw_root']}"]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2  # two batches of 2 from the 4 KITTI training frames
    saved = load_config(run / "config.yaml")
    assert saved.data["sources"] == [kitti]  # --source replaced the synthetic folder of the config

    out = tmp_path / "eval"
    args = ["depth", "eval", "--checkpoint", str(run / "model_fp16.pt"), "--out", str(out), "--device", "cpu",
            "--workers", "0"]
    assert main(args) == 0
    report = json.loads((out / "eval_val.json").read_text())
    # The whole split: eval is not capped by the training validation's data.max_val_samples (1).
    assert report["sources"] == [kitti] and report["images"] == 2 and report["split"] == "val"

    from model_tools.depth_cli import load_depth_model
    from model_tools.models.depth_net import normalize

    net, model_cfg = load_depth_model(run / "model_fp16.pt")
    gts = roots["kitti"]["val"]
    preds = []
    rgb_dir = Path(kitti["raw_root"]) / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data"
    import cv2

    for path in sorted(rgb_dir.glob("00000001*.png")):  # the val frames are numbered from 100
        rgb = cv2.imread(str(path))[..., ::-1].copy()
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            preds.append(net.predict_depth(normalize(image))[0, 0].numpy())
    expected = eigen_oracle(preds, gts, model_cfg.min_depth, model_cfg.max_depth)
    metrics = report["metrics"]
    assert metrics["n_valid"] == expected["n_valid"] > 0
    for key in ("abs_rel", "rmse", "a1"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    md = (out / "eval_val.md").read_text()
    assert f"{metrics['abs_rel']:.4f}" in md and "kitti" in md
    # An evaluation is never replaced silently: the same command fails until --overwrite.
    before = (out / "eval_val.json").read_bytes()
    assert main(args) == 1
    assert (out / "eval_val.json").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    # --data (one synthetic folder) evaluates another source with the same checkpoint.
    assert main([*args, "--data", roots["synth_source"]["root"], "--split", "train"]) == 0
    assert json.loads((out / "eval_train.json").read_text())["images"] == 2
    assert main([*args, "--overwrite", "--max-images", "1"]) == 0
    assert json.loads((out / "eval_val.json").read_text())["images"] == 1
