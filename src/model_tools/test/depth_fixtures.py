"""Depth data sets written by the tests in the on-disk formats the loaders read: KITTI depth and synthetic folders.

Each writer returns the ground truth it wrote, so a test can compare what
the loaders and the metrics report with what is on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

KITTI_DRIVE = "2011_09_26_drive_0001_sync"


def depth_png16(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> KITTI PNG16 values (metres * 256, 0 = invalid)."""
    return np.rint(np.clip(depth_m, 0.0, 255.0) * 256.0).astype(np.uint16)


def scene(index: int, hw: tuple[int, int], sparse: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8, depth metres as stored: PNG16-exact) of one frame; sparse keeps every 5th pixel (a LiDAR-like GT)."""
    h, w = hw
    rng = np.random.default_rng(index)
    rows = np.linspace(18.0, 1.0, h, dtype=np.float64)[:, None]  # far at the top, near at the bottom
    depth = np.repeat(rows, w, axis=1) * (0.8 + 0.4 * rng.random())
    if sparse:
        keep = np.zeros((h, w), bool)
        keep.flat[index % 5::5] = True
        depth = np.where(keep, depth, 0.0)
    depth = depth_png16(depth).astype(np.float32) / 256.0
    shade = np.clip(255.0 * (1.0 - np.repeat(rows, w, axis=1) / 20.0), 0, 255)
    rgb = np.stack([shade, shade * 0.8, 255 - shade], axis=-1).astype(np.uint8)
    return rgb, depth


def write_kitti(depth_root: Path, raw_root: Path, frames: dict[str, int], hw: tuple[int, int]) -> dict[str, list[np.ndarray]]:
    """KITTI depth layout: <depth_root>/<split>/<drive>/proj_depth/groundtruth/image_02/N.png (PNG16)
    and <raw_root>/<date>/<drive>/image_02/data/N.png (RGB). Returns the ground truth per split, in file order."""
    import cv2

    written: dict[str, list[np.ndarray]] = {}
    for s_index, (split, count) in enumerate(frames.items()):
        gt_dir = depth_root / split / KITTI_DRIVE / "proj_depth" / "groundtruth" / "image_02"
        rgb_dir = raw_root / KITTI_DRIVE[:10] / KITTI_DRIVE / "image_02" / "data"
        gt_dir.mkdir(parents=True, exist_ok=True)
        rgb_dir.mkdir(parents=True, exist_ok=True)
        written[split] = []
        for i in range(count):
            index = 100 * s_index + i
            rgb, depth = scene(index, hw, sparse=True)
            name = f"{index:010d}.png"
            cv2.imwrite(str(gt_dir / name), depth_png16(depth))
            cv2.imwrite(str(rgb_dir / name), rgb[..., ::-1])
            written[split].append(depth)
    return written


def write_synthetic(root: Path, frames: dict[str, int], hw: tuple[int, int]) -> dict[str, list[np.ndarray]]:
    """The `model-tools synth` folder layout with dense depth and all-ignore labels; returns the depth per split."""
    import cv2
    import yaml

    from perception_core.ontology import load_ontology

    written: dict[str, list[np.ndarray]] = {}
    h, w = hw
    for s_index, (split, count) in enumerate(frames.items()):
        for sub in ("rgb", "depth", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        camera: dict[str, Any] = {"K": [[w / 2.0, 0.0, w / 2.0], [0.0, w / 2.0, h / 2.0], [0.0, 0.0, 1.0]],
                                  "width": w, "height": h, "ontology_version": load_ontology().version}
        (root / split / "camera.yaml").write_text(yaml.safe_dump(camera))
        written[split] = []
        for i in range(count):
            rgb, depth = scene(1000 + 100 * s_index + i, hw, sparse=False)
            name = f"{i:06d}.png"
            cv2.imwrite(str(root / split / "rgb" / name), rgb[..., ::-1])
            cv2.imwrite(str(root / split / "depth" / name), depth_png16(depth))
            cv2.imwrite(str(root / split / "label" / name), np.full(hw, 255, np.uint8))
            written[split].append(depth)
    return written


def tiny_depth_config(path: Path, hw: tuple[int, int], sources: list[dict[str, Any]], **changes: Any) -> Path:
    """A complete depth training config for a width-8 network at ``hw`` on the CPU (a few seconds per step)."""
    import yaml

    config: dict[str, Any] = {
        "task": "depth", "run_name": "tiny_depth", "seed": 4, "epochs": 1, "max_steps": 2, "batch_size": 2,
        "num_workers": 0, "device": "cpu", "amp": False, "channels_last": False, "ema": False, "lr": 1e-3,
        "warmup_steps": 1, "progress_bar": False, "log_every_steps": 1, "checkpoint_every_steps": 0,
        "model": {"width": 8, "decoder_channels": [4, 8, 8, 16, 16], "kind": "levels", "levels": 32,
                  "max_depth": 15.0, "min_depth": 0.1, "input_height": hw[0], "input_width": hw[1]},
        "data": {"sources": sources, "augment": False},
        "loss": {"scales": 2},
    }
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
