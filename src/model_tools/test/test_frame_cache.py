"""The decode-once frame cache and the cached training pipeline (batched augmentation), on the CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from model_tools.cli import main
from model_tools.data.datasets import SyntheticFolderDataset
from model_tools.data.frame_cache import FrameCache, plan_cache
from model_tools.data.synth import CameraRig, write_synthetic_folder
from model_tools.data.transforms import Compose, RandomScaleCrop, Resize
from model_tools.tasks.depth import depth_transform
from model_tools.tasks.segmentation import EngineSeededTransform


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    rig = CameraRig.default(width=64, height=48)
    write_synthetic_folder(root, rig, 6, seed=3, split="train", progress=False)
    write_synthetic_folder(root, rig, 2, seed=3, split="val", progress=False)
    return root


def test_cache_holds_the_decoded_frames_and_is_rebuilt_only_when_its_inputs_change(synth_root: Path, tmp_path: Path) -> None:
    data = SyntheticFolderDataset(synth_root, "train", EngineSeededTransform(Compose([RandomScaleCrop(24, 32)])))
    data.with_depth = False
    plan = plan_cache(data)
    folder = tmp_path / "cache"
    lines: list[str] = []
    cache = FrameCache.build_or_open(plan, folder, (0, 0), workers=0, log=lines.append, progress=False)
    assert len(cache) == 6 and cache.depth is None and cache.image.shape == (6, 48, 64, 3)
    for i in range(6):
        raw = data.load_raw(i)
        assert np.array_equal(cache.image[i], raw["image"]) and np.array_equal(cache.label[i], raw["label"])
        assert tuple(cache.sizes[i]) == (48, 64, 48, 64)
    stamp = (folder / "image.u8").stat().st_mtime_ns
    assert FrameCache.build_or_open(plan, folder, (0, 0), workers=0, log=lines.append, progress=False).meta == cache.meta
    assert (folder / "image.u8").stat().st_mtime_ns == stamp and len(lines) == 1  # reopened, not rebuilt

    # A smaller slot limit shrinks the frames (area for images); the source size stays recorded.
    small = FrameCache.build_or_open(plan, folder, (24, 40), workers=0, log=lines.append, progress=False)
    assert small.image.shape == (6, 24, 32, 3) and tuple(small.sizes[0]) == (24, 32, 48, 64)
    assert "for other data or settings" in lines[1] and "6 frames in 24x32 slots" in lines[2]

    # A changed file changes the key; an unfinished build (no meta.json) is built again.
    (folder / "meta.json").unlink()
    rebuilt = FrameCache.build_or_open(plan, folder, (24, 40), workers=0, log=lines.append, progress=False)
    assert rebuilt.meta["key"] == small.meta["key"] and "unfinished" in lines[3]
    path = data.samples[0].image
    path.write_bytes(path.read_bytes())  # same bytes, new mtime
    other = FrameCache.build_or_open(plan, folder, (24, 40), workers=0, log=lines.append, progress=False)
    assert other.meta["key"] != small.meta["key"]


def test_depth_cache_stores_the_resized_frames_and_metric_depth(synth_root: Path, tmp_path: Path) -> None:
    data = SyntheticFolderDataset(synth_root, "train", depth_transform(24, 32, train=True), seed=0)
    plan = plan_cache(data)
    assert [type(t) for t in plan.prefix] == [Resize] and plan.with_depth
    cache = FrameCache.build_or_open(plan, tmp_path / "c", (0, 0), workers=1, log=lambda _: None, progress=False)
    for i in range(6):
        expected = Resize(24, 32)(data.load_raw(i))
        assert np.array_equal(cache.depth[i], expected["depth"]) and np.array_equal(cache.image[i], expected["image"])


def _seg_config(tmp_path: Path, synth_root: Path, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "task": "segmentation", "run_name": "tiny", "seed": 5, "epochs": 2, "batch_size": 2, "num_workers": 0,
        "device": "cpu", "amp": False, "channels_last": False, "ema": True, "ema_decay": 0.9, "lr": 1e-3,
        "warmup_epochs": 1, "grad_clip": 5.0, "val_every_epochs": 1, "progress_bar": False, "log_every_steps": 1,
        "data_pipeline": "cached", "step_mode": "cuda_graph",
        "data": {"sources": [{"format": "synthetic", "root": str(synth_root)}], "train_hw": [32, 32], "val_hw": [48, 64]},
    }
    config.update(changes)
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cached_pipeline_trains_and_resumes_exactly(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    config = _seg_config(tmp_path, synth_root)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(straight)]) == 0
    out = capsys.readouterr().out
    assert "step_mode=cuda_graph needs a CUDA device" in out  # the CPU says it runs the step eagerly
    assert "frame cache" in out and (straight / "frame_cache" / "meta.json").is_file()
    # Stopped mid-epoch 1 after step 4 of 6, then resumed: the cached batches pick up at the same sample.
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(split), "--stop-after-steps", "4"]) == 0
    assert main(["seg", "train", "--config", str(config), "--run-dir", str(split), "--resume"]) == 0
    a = torch.load(straight / "last_fp16.pt", weights_only=True)
    b = torch.load(split / "last_fp16.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["steps"] == 6 and 0.0 <= summary["last_validation"]["miou"] <= 1.0
    # It trained: the weights moved from the initial ones.
    first = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(first[k].half(), a[k]) for k in a if a[k].is_floating_point())


def test_cached_pipeline_falls_back_to_workers_with_one_line_when_it_cannot_cache(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from test_training_engine import make_task, tiny_config

    from model_tools.training.config import load_config
    from model_tools.training.engine import Trainer

    torch.set_num_threads(1)
    config = tiny_config(tmp_path, epochs=1, data_pipeline="cached")
    summary = Trainer(make_task(config), config, tmp_path / "run").fit()
    assert summary["steps"] == 4
    assert "data_pipeline=cached is not possible here (TinyDepthSet is not a file-backed data set" in capsys.readouterr().out
    assert load_config(tmp_path / "run" / "config.yaml").data_pipeline == "cached"


def test_cached_depth_batches_carry_each_frames_camera(synth_root: Path, tmp_path: Path) -> None:
    # A camera-aware depth model's data set (FrameCameras around the frames) is cached like the bare frames,
    # and every batch carries the camera of each of its samples, as the worker loader's items do.
    import itertools

    from model_tools.data.frame_cache import CachedBatches
    from model_tools.tasks.depth import RELIEF_KEYS, FrameCameras
    from model_tools.training.engine import DistInfo, ResumableSampler

    data = FrameCameras(SyntheticFolderDataset(synth_root, "train", depth_transform(24, 32, train=True), seed=0), (24, 32))
    plan = plan_cache(data)
    assert sorted(plan.extras) == sorted(["camera_height_m", "focal_px", *RELIEF_KEYS])
    assert plan.extras["focal_px"].shape == (6,)
    cache = FrameCache.build_or_open(plan, tmp_path / "c", (0, 0), workers=0, log=lambda _: None, progress=False)
    sampler = ResumableSampler(data, DistInfo(), shuffle=True, seed=0, drop_last=True, endless_batch_size=3)
    batches = CachedBatches(cache, plan.augment, sampler, 3, 0, torch.device("cpu"), on_device=False, extras=plan.extras)
    batch = next(iter(batches))
    items = [data[index] for index, _, _ in itertools.islice(iter(sampler), 3)]
    for key in ("focal_px", "camera_height_m", *RELIEF_KEYS):
        assert batch[key].dtype == torch.float32 and batch[key].shape == (3,)
        assert torch.allclose(batch[key], torch.stack([item[key] for item in items]))
    assert float(batch["focal_px"].min()) > 0 and float(batch["camera_height_m"].min()) > 0
