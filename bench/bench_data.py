"""Benchmark: synthetic generator frames/s at 1280x1080 (1 process and --workers), and the
loader + seed-recipe augmentation at the 544x640 training size against plain cv2 decoding.

Usage: python bench/bench_data.py [--frames 6] [--workers 2]
Prints frames/s and the ratio against an in-run baseline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from model_tools.data.synth import CameraRig, frame_seed, render_frame, write_synthetic_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--items", type=int, default=24, help="loader items to time")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rig = CameraRig.default(1280, 1080)
    small = CameraRig.default(640, 544)
    render_frame(small, 0)  # warm caches

    start = time.perf_counter()
    for i in range(args.frames):
        render_frame(small, frame_seed(0, i))
    fps_small = args.frames / (time.perf_counter() - start)

    start = time.perf_counter()
    for i in range(args.frames):
        render_frame(rig, frame_seed(0, i))
    fps_render = args.frames / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_synthetic_folder(root / "one", rig, args.frames, seed=0, workers=1, progress=False)
        fps_write1 = args.frames / (time.perf_counter() - start)
        n_par = max(args.frames, 2 * args.workers)
        start = time.perf_counter()
        write_synthetic_folder(root / "par", rig, n_par, seed=0, workers=args.workers, progress=False)
        fps_writeN = n_par / (time.perf_counter() - start)  # noqa: N806

        print(f"generator 640x544   render only, 1 process : {fps_small:6.2f} frames/s")
        print(f"generator 1280x1080 render only, 1 process : {fps_render:6.2f} frames/s")
        print(f"generator 1280x1080 render+PNG, 1 process  : {fps_write1:6.2f} frames/s")
        print(f"generator 1280x1080 render+PNG, {args.workers} workers  : {fps_writeN:6.2f} frames/s "
              f"({fps_writeN / fps_write1:.2f}x one process; {os.cpu_count()} cores here)")

        # Loader + augmentation at the training size, against plain cv2 decoding of the same PNGs.
        from model_tools.data.datasets import SyntheticFolderDataset
        from model_tools.data.transforms import train_transforms

        split = root / "par" / "train"
        names = sorted(p.name for p in (split / "rgb").glob("*.png"))
        order = [names[i % len(names)] for i in range(args.items)]
        start = time.perf_counter()
        for name in order:
            cv2.imread(str(split / "rgb" / name), cv2.IMREAD_COLOR)
            cv2.imread(str(split / "depth" / name), cv2.IMREAD_UNCHANGED)
            cv2.imread(str(split / "label" / name), cv2.IMREAD_UNCHANGED)
        fps_decode = args.items / (time.perf_counter() - start)
        dataset = SyntheticFolderDataset(root / "par", "train", transform=train_transforms(544, 640), seed=0)
        start = time.perf_counter()
        for i in range(args.items):
            item = dataset[i % len(dataset)]
        fps_loader = args.items / (time.perf_counter() - start)
        assert item["image"].shape == (3, 544, 640) and np.isfinite(item["depth"].numpy()).all()
        print(f"baseline: cv2 decode of rgb+depth+label PNGs (1280x1080): {fps_decode:6.2f} items/s")
        print(f"loader + train augmentation -> 544x640 tensors          : {fps_loader:6.2f} items/s "
              f"({fps_loader / fps_decode:.2f}x the decode-only baseline)")


if __name__ == "__main__":
    main()
