"""Segmentation task in the shared engine: train, exact resume, eval reports (tiny synthetic data, CPU)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from model_tools.cli import main
from model_tools.data.datasets import to_model_batch
from model_tools.data.synth import CameraRig, write_synthetic_folder
from model_tools.tasks.segmentation import SegmentationTask
from model_tools.training.config import load_config
from perception_core.errors import ConfigError


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    rig = CameraRig.default(width=64, height=48)
    write_synthetic_folder(root, rig, 4, seed=3, split="train", progress=False)
    write_synthetic_folder(root, rig, 2, seed=3, split="val", progress=False)
    return root


def _config(tmp_path: Path, synth_root: Path, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "task": "segmentation", "run_name": "tiny", "seed": 5, "epochs": 2, "batch_size": 2, "num_workers": 0,
        "device": "cpu", "amp": False, "channels_last": False, "ema": True, "ema_decay": 0.9, "lr": 1e-3,
        "weight_decay": 0.01, "warmup_epochs": 1, "grad_clip": 5.0, "val_every_epochs": 1, "progress_bar": False,
        "log_every_steps": 1,
        "model": {"aux_head": True, "aux_weight": 0.4},
        "loss": {"gamma": 2.0, "class_weights": {"water": 5.0, "dynamic": 5.0}},
        "data": {"sources": [{"format": "synthetic", "root": str(synth_root)}], "train_hw": [32, 32], "val_hw": [48, 64]},
    }
    config.update(changes)
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_resume_is_exact(tmp_path: Path, synth_root: Path) -> None:
    torch.set_num_threads(1)
    config = _config(tmp_path, synth_root)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(straight)]) == 0
    # Same run killed (checkpointed) mid-epoch-1 after step 3, then resumed.
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(split), "--stop-after-steps", "3"]) == 0
    assert not (split / "last_fp16.pt").exists()
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(split), "--resume"]) == 0
    a = torch.load(straight / "last_fp16.pt", weights_only=True)
    b = torch.load(split / "last_fp16.pt", weights_only=True)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["best"]["metric"] == "miou"
    assert 0.0 <= summary["last_validation"]["miou"] <= 1.0
    assert (straight / "curves.png").stat().st_size > 0
    # The fp16 export holds the aux head too (11.5 MB class of file for the full model).
    assert "seghead_extra.conv2.weight" in a and a["final_layer.conv1.weight"].dtype == torch.float16


def test_resume_with_loader_workers_is_exact(tmp_path: Path, synth_root: Path) -> None:
    """With 2 loader worker processes, a stopped-and-resumed run ends with the weights of a straight run.

    Each training runs in its own process, as `model-tools seg train` does. Workers forked from a process
    whose OpenCV thread pool has already run hang in their `cv2.setNumThreads(1)`, and this pytest
    process has run OpenCV in earlier tests.
    """
    config = _config(tmp_path, synth_root, num_workers=2, persistent_workers=True, prefetch_factor=2)
    straight, split = tmp_path / "straight", tmp_path / "split"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(*extra: str) -> None:
        command = [sys.executable, "-m", "model_tools.cli", "seg", "train", "--config", str(config), *extra]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]

    train("--run-dir", str(straight))
    train("--run-dir", str(split), "--stop-after-steps", "3")
    train("--run-dir", str(split), "--resume")
    a = torch.load(straight / "last_fp16.pt", weights_only=True)
    b = torch.load(split / "last_fp16.pt", weights_only=True)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert json.loads((split / "summary.json").read_text())["steps"] == 4


def test_eval_writes_consistent_reports(tmp_path: Path, synth_root: Path) -> None:
    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert main(["seg", "train", "--config", str(_config(tmp_path, synth_root, epochs=1)), "--run-dir", str(run)]) == 0
    out = tmp_path / "eval"
    args = ["seg", "eval", "--checkpoint", str(run / "model_fp16.pt"), "--out", str(out), "--device", "cpu",
            "--workers", "0"]
    assert main(args) == 0
    report = json.loads((out / "eval_val.json").read_text())
    metrics = report["metrics"]
    matrix = np.array(report["confusion_matrix"])
    # Every labelled pixel of the 2 validation frames (resized to 48x64) is counted exactly once.
    task = SegmentationTask(load_config(run / "config.yaml"))
    _, val_set = task.build_datasets()
    labelled = sum(int((val_set[i]["label"] != 255).sum()) for i in range(len(val_set)))
    assert matrix.sum() == labelled and report["images"] == 2
    assert metrics["pixel_accuracy"] == pytest.approx(np.trace(matrix) / labelled)
    ious = [v for v in metrics["per_class_iou"].values() if v is not None]
    assert metrics["miou"] == pytest.approx(float(np.mean(ious)))
    assert list(metrics["per_class_iou"]) == task.class_names == report["class_names"]
    md = (out / "eval_val.md").read_text()
    assert f"{metrics['miou']:.4f}" in md and "water" in md
    assert (out / "eval_val_confusion.png").read_bytes()[:4] == b"\x89PNG"
    # Outputs are not overwritten silently.
    assert main(args) == 1
    assert main([*args, "--overwrite"]) == 0


def test_focal_loss_and_aux_head_in_compute_loss(tmp_path: Path, synth_root: Path) -> None:
    task = SegmentationTask(load_config(_config(tmp_path, synth_root)))
    model = task.build_model()
    train_set, _ = task.build_datasets()
    batch = to_model_batch({k: torch.stack([train_set[i][k] for i in range(2)]) for k in ("image", "label")}, "cpu")
    assert batch["image"].shape == (2, 3, 32, 32) and batch["label"].dtype == torch.int64
    assert "depth" not in train_set[0]  # the segmentation task never loads depth
    loss, parts = task.compute_loss(model, batch)
    assert set(parts) == {"focal", "focal_aux"}
    assert float(loss.detach()) == pytest.approx(float(parts["focal"]) + 0.4 * float(parts["focal_aux"]), rel=1e-5)
    loss.backward()
    assert model.seghead_extra.conv2.weight.grad is not None
    weights = task.criterion.weight.tolist()
    names = task.class_names
    assert weights[names.index("water")] == 5.0 and weights[names.index("dynamic")] == 5.0
    assert weights[names.index("sky")] == 1.0


def test_config_errors_name_the_field(tmp_path: Path, synth_root: Path) -> None:
    with pytest.raises(ConfigError, match="watr"):
        SegmentationTask(load_config(_config(tmp_path, synth_root, loss={"class_weights": {"watr": 5.0}})))
    with pytest.raises(ConfigError, match="train_hw"):
        SegmentationTask(load_config(_config(tmp_path, synth_root, data={"sources": [], "train_hw": [30, 32]})))
    task = SegmentationTask(load_config(_config(tmp_path, synth_root, data={"sources": [{"format": "kitti", "root": "x"}]})))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.format"):
        task.build_datasets()
    with pytest.raises(ConfigError, match="batch_size"):
        SegmentationTask(load_config(_config(tmp_path, synth_root, batch_size=1)))
    with pytest.raises(ConfigError, match=r"model\.arch"):
        SegmentationTask(load_config(_config(tmp_path, synth_root, model={"arch": "bisenet"})))


def test_train_refuses_a_depth_config(tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, synth_root, task="depth")
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 1
    assert "field task is 'depth', expected 'segmentation'" in capsys.readouterr().err


def test_two_process_ddp_run_under_torchrun(tmp_path: Path, synth_root: Path) -> None:
    """torchrun, 2 ranks on CPU (gloo): rank-0-only outputs, world size recorded, loader workers shut down, clean exit."""
    config = _config(tmp_path, synth_root, epochs=3, num_workers=1, persistent_workers=True, val_every_epochs=2)
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "model_tools.cli",
               "seg", "train", "--config", str(config), "--run-dir", str(run_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("seg train: done after 3 steps") == 1  # printed by rank 0 only
    summary = json.loads((run_dir / "summary.json").read_text())
    # 4 training frames, 2 per rank, batch 2 per rank: one step per epoch, each step seeing 4 images.
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["epochs_completed"] == 3
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    train = [r for r in rows if r["phase"] == "train"]
    assert [int(r["step"]) for r in train] == [1, 2, 3] and all(float(r["img_per_s"]) > 0 for r in train)
    assert [int(r["step"]) for r in rows if r["phase"] == "val"] == [2, 3]  # every 2nd epoch, and at the end
    state = torch.load(run_dir / "last_fp16.pt", weights_only=True)
    assert "final_layer.conv1.weight" in state and not any(k.startswith("module.") for k in state)


@pytest.mark.parametrize("in_hw,out_hw", [((68, 80), (544, 640)), ((5, 7), (17, 30)), ((9, 9), (9, 9)), ((10, 12), (7, 5))])
def test_resize_logits_equals_bilinear_interpolation_in_values_and_gradients(in_hw: tuple[int, int],
                                                                             out_hw: tuple[int, int]) -> None:
    # The recipe's x8 (68x80 -> 544x640), odd ratios, identity and shrinking; both memory layouts; fp16 input.
    import torch.nn.functional as F  # noqa: N812 - torch convention

    from model_tools.tasks.segmentation import resize_logits

    gen = torch.Generator().manual_seed(in_hw[0] * 100 + out_hw[1])
    for layout in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.float16):
            x = (torch.randn(2, 7, *in_hw, generator=gen) * 5).to(dtype).contiguous(memory_format=layout).requires_grad_()
            grad_out = torch.randn(2, 7, *out_hw, generator=gen)
            ours = resize_logits(x, out_hw)
            ref = F.interpolate(x.float(), size=out_hw, mode="bilinear", align_corners=False)
            assert ours.dtype == torch.float32 and ours.shape == ref.shape
            assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-6)
            (g_ours,) = torch.autograd.grad((ours * grad_out).sum(), x)
            (g_ref,) = torch.autograd.grad((ref * grad_out).sum(), x)
            assert g_ours.dtype == dtype
            assert torch.allclose(g_ours.float(), g_ref.float(), atol=1e-4 if dtype == torch.float32 else 2e-2, rtol=1e-3)


def test_seg_loss_equals_the_interpolate_then_focal_computation(tmp_path: Path, synth_root: Path) -> None:
    # compute_loss (matrix-product upsampling) against the loss as computed before: F.interpolate + focal loss.
    import torch.nn.functional as F  # noqa: N812 - torch convention

    task = SegmentationTask(load_config(_config(tmp_path, synth_root)))
    gen = torch.Generator().manual_seed(3)
    outputs = [torch.randn(2, task.num_classes, 8, 10, generator=gen) * 3 for _ in range(2)]
    label = torch.randint(0, task.num_classes, (2, 64, 80), generator=gen)
    label[:, :5] = 255  # ignored pixels
    batch = {"image": torch.rand(2, 3, 64, 80, generator=gen), "label": label}
    leaves = [o.clone().requires_grad_() for o in outputs]
    loss, parts = task.compute_loss(lambda _: tuple(leaves), batch)
    grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [o.clone().requires_grad_() for o in outputs]
    ref = [task.criterion(F.interpolate(o.float(), size=(64, 80), mode="bilinear", align_corners=False), label)
           for o in ref_leaves]
    ref_loss = ref[0] + task.model_cfg.aux_weight * ref[1]
    ref_grads = torch.autograd.grad(ref_loss, ref_leaves)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    assert float(parts["focal"]) == pytest.approx(float(ref[0]), rel=1e-6)
    assert float(parts["focal_aux"]) == pytest.approx(float(ref[1]), rel=1e-6)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert torch.allclose(grad, ref_grad, atol=1e-8, rtol=1e-4)
