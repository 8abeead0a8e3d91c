"""Measure a depth model's range bias over a grid of cameras and write its correction (``perception_core.range_correction``).

For each camera of the grid (mount heights x horizontal fields of view, at the
vehicle camera's image size), renders synthetic drives (``model_tools.data.synth.drive_frames``,
scene seeds that no bench uses, the pitch spread over ``--pitches`` drive by
drive: the node does not know the pitch), runs the model as the depth node does
(no correction), and bins the pixels by predicted depth: the median truth /
prediction per bin, less a dead band toward 1 (``--dead-band``: a bias as small
as the scene-to-scene spread is not corrected), is that camera's curve. Prints and records, per camera and
band of predicted depth, the median ratio and abs_rel before and after on the
same frames; whether it helps on other drives is for ``bench/bench_costmap.py``
to show.

    python -m model_tools.depth_range_fit --model models/depth_levels_r18.onnx \\
        --out config/range_correction/depth_levels_r18.yaml --workers 2   # the synthetic camera ranges (5 x 5)
    python -m model_tools.depth_range_fit --model M.onnx --out X.yaml --heights 1.4 --hfovs 90   # one camera
    python -m model_tools.depth_range_fit --replot X.yaml --figure X.png      # the figure of a correction file

The depth node applies it with ``range_correction_file`` (docs/depth.md, "Range correction").
"""

from __future__ import annotations

import argparse
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SEEDS = (1201, 1202, 1203, 1204, 1205, 1206)  # scene seeds no bench or test drives on
DEFAULT_HEIGHTS = (0.8, 1.1, 1.4, 1.8, 2.2)  # m: the synthetic mount range, about 0.2-0.3 apart in log
DEFAULT_HFOVS = (60.0, 75.0, 90.0, 100.0, 110.0)  # deg: the synthetic lens range
DEFAULT_PITCHES = (0.0, 4.0, 8.0, 12.0, 16.0, 20.0)  # deg down, one per drive in turn
BANDS_M = ((0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 12.0), (12.0, 15.0))


def band_stats(predicted: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    """Per band of predicted depth: pixels, median truth / prediction, abs_rel."""
    rows = []
    for lo, hi in BANDS_M:
        inside = (predicted >= lo) & (predicted < hi)
        n = int(inside.sum())
        ratio = truth[inside] / predicted[inside] if n else np.array([np.nan])
        abs_rel = np.abs(predicted[inside] - truth[inside]) / truth[inside] if n else np.array([np.nan])
        rows.append({"from_m": lo, "to_m": hi, "pixels": n, "median_ratio": float(np.median(ratio)),
                     "abs_rel": float(np.mean(abs_rel))})
    return rows


def measure_camera(job: dict[str, Any]) -> dict[str, Any]:
    """One camera of the grid: its ratios, its fitted curve and the before / after statistics (a worker's job)."""
    import cv2

    from model_tools.data.synth import CameraRig, drive_frames
    from perception_core.pipelines import DepthPipeline, camera_ratios
    from perception_core.range_correction import fit_camera_curve
    from perception_core.runtime.loader import load_model

    pipeline = DepthPipeline(load_model(job["model"], backend="cpu", expected_task="depth",
                                        num_threads=job["threads"]))
    predicted, truth, drive = [], [], []
    rig = None
    for index, seed in enumerate(job["seeds"]):
        pitch = job["pitches"][index % len(job["pitches"])]
        rig = CameraRig.default(job["width"], job["height"], hfov_deg=job["hfov"], mount_height=job["mount_height"],
                                pitch_deg=pitch)
        for _, _, frame in drive_frames(rig, seed, job["frames"], job["fps"], job["speed"]):
            out = pipeline.infer(frame.rgb, "RGB", camera_k=np.asarray(frame.K, np.float64),
                                 camera_height=float(rig.mount_height)).depth
            gt = cv2.resize(frame.depth.astype(np.float32), (out.shape[1], out.shape[0]),
                            interpolation=cv2.INTER_NEAREST)
            with np.errstate(invalid="ignore"):
                both = np.isfinite(out) & (out > 0) & np.isfinite(gt) & (gt > 0)
            predicted.append(out[both])
            truth.append(gt[both])
            drive.append(np.full(int(both.sum()), index, np.int16))
    predicted_all, truth_all = np.concatenate(predicted), np.concatenate(truth)
    focal, height = camera_ratios(pipeline.metadata, np.asarray(rig.K, np.float64), (job["height"], job["width"]),
                                  float(job["mount_height"]))
    edges = np.arange(pipeline.min_depth, pipeline.max_depth + job["bin_m"], job["bin_m"])
    curve, bins = fit_camera_curve(predicted_all, truth_all, edges, job["min_pixels"], np.concatenate(drive),
                                   job["dead_band"])
    after = predicted_all * curve.at(predicted_all)
    return {"mount_height": job["mount_height"], "hfov": job["hfov"], "focal_ratio": focal, "height_ratio": height,
            "curve": curve, "bins": bins, "pixels": int(predicted_all.size),
            "model_sha256": pipeline.metadata.content_sha256,
            "weights_sha256": str(pipeline.metadata.extra.get("weights_sha256", "") or ""),
            "input_shape": [int(v) for v in pipeline.metadata.input_shape],
            "before": band_stats(predicted_all, truth_all), "after": band_stats(after, truth_all)}


def write_figure(correction: Any, path: Path) -> None:
    """One panel per mount height: each lens's factor over predicted depth, and the fit frames' truth /
    prediction before the correction (dots, per band of predicted depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cameras = correction.source.get("cameras", [])
    heights = sorted({c["mount_height"] for c in cameras})
    fig, axes = plt.subplots(1, max(len(heights), 1), figsize=(3.2 * max(len(heights), 1), 3.2), sharey=True,
                             squeeze=False)
    for j, height in enumerate(heights):
        ax = axes[0][j]
        for i, camera in enumerate(c for c in cameras if c["mount_height"] == height):
            row = [r for r in range(len(correction.focal_ratios))
                   if abs(correction.focal_ratios[r] - camera["focal_ratio"]) < 1e-6]
            col = [k for k in range(len(correction.height_ratios))
                   if abs(correction.height_ratios[k] - camera["height_ratio"]) < 1e-6]
            colour = f"C{i}"
            if row and col:
                curve = correction.curves[row[0]][col[0]]
                ax.plot(curve.depths_m, curve.factors, color=colour, label=f"{camera['hfov']:.0f} deg")
            bands = [(b["from_m"] + b["to_m"]) / 2 for b in camera["before"] if b["pixels"]]
            ax.plot(bands, [b["median_ratio"] for b in camera["before"] if b["pixels"]], "o", color=colour, ms=3)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title(f"camera {height:g} m")
        ax.set_xlabel("predicted depth (m)")
    axes[0][0].set_ylabel("truth / prediction")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("range correction per camera (lines) and the fit frames' bias by band (dots)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="depth ONNX model (FP32 or QDQ) to measure")
    parser.add_argument("--out", type=Path, help="correction YAML to write")
    parser.add_argument("--figure", type=Path, help="also draw the correction into this PNG")
    parser.add_argument("--replot", type=Path, metavar="YAML", help="only draw --figure from this correction file")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--heights", type=float, nargs="+", default=list(DEFAULT_HEIGHTS),
                        help="camera heights above the ground, m (the grid's rows)")
    parser.add_argument("--hfovs", type=float, nargs="+", default=list(DEFAULT_HFOVS),
                        help="horizontal fields of view, degrees (the grid's columns)")
    parser.add_argument("--pitches", type=float, nargs="+", default=list(DEFAULT_PITCHES),
                        help="degrees down, one per drive in turn")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="scene seeds, one drive each")
    parser.add_argument("--frames", type=int, default=8, help="frames per drive")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--speed", type=float, default=4.0, help="m/s")
    parser.add_argument("--bin-m", type=float, default=1.0, help="width of a bin of predicted depth, m")
    parser.add_argument("--min-pixels", type=int, default=20000, help="pixels a bin needs to count")
    parser.add_argument("--dead-band", type=float, default=0.02,
                        help="a bin's bias is corrected only beyond this (truth / prediction within 1 +- it: none); "
                             "about one drive's spread of the bias at a camera")
    parser.add_argument("--max-camera-difference", type=float, default=0.1,
                        help="|ln ratio| beyond the grid's edge within which the correction still applies")
    parser.add_argument("--workers", type=int, default=1, help="cameras measured in parallel")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per worker")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from perception_core.errors import PerceptionError
    from perception_core.range_correction import RangeCorrection, load_range_correction, save_range_correction

    if args.replot:
        if not args.figure:
            parser.error("--replot needs --figure")
        try:
            write_figure(load_range_correction(args.replot), args.figure)
        except PerceptionError as exc:
            print(f"depth_range_fit: error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.figure}")
        return 0
    if not (args.model and args.out):
        parser.error("--model and --out are required (or --replot YAML --figure PNG)")

    heights, hfovs = sorted(set(args.heights)), sorted(set(args.hfovs), reverse=True)  # wider lens: shorter focal
    jobs = [{"model": str(args.model), "threads": args.threads, "seeds": list(args.seeds), "pitches": list(args.pitches),
             "width": args.width, "height": args.height, "hfov": hfov, "mount_height": h, "frames": args.frames,
             "fps": args.fps, "speed": args.speed, "bin_m": args.bin_m, "min_pixels": args.min_pixels,
             "dead_band": args.dead_band}
            for hfov in hfovs for h in heights]
    results: list[dict[str, Any]] = []
    try:
        bar = tqdm(total=len(jobs), desc="depth_range_fit", unit="camera", disable=args.no_progress)
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                for result in pool.map(measure_camera, jobs):
                    results.append(result)
                    bar.update(1)
        else:
            for job in jobs:
                results.append(measure_camera(job))
                bar.update(1)
        bar.close()
        grid = [[results[i * len(heights) + j] for j in range(len(heights))] for i in range(len(hfovs))]
        cameras = [{k: r[k] for k in ("mount_height", "hfov", "focal_ratio", "height_ratio", "pixels", "bins",
                                      "before", "after")} for r in results]
        source = {"command": "python -m model_tools.depth_range_fit " + shlex.join(argv if argv is not None
                                                                                 else sys.argv[1:]),
                  "model": str(args.model), "image_size": [args.width, args.height], "seeds": list(args.seeds),
                  "pitches_deg": list(args.pitches), "frames_per_seed": args.frames, "dead_band": args.dead_band,
                  "cameras": cameras}
        # One ratio per row / column: the focal ratio depends only on the lens, the height ratio on the height.
        correction = RangeCorrection(
            focal_ratios=tuple(float(np.mean([r["focal_ratio"] for r in row])) for row in grid),
            height_ratios=tuple(float(np.mean([grid[i][j]["height_ratio"] for i in range(len(hfovs))]))
                                for j in range(len(heights))),
            curves=tuple(tuple(r["curve"] for r in row) for row in grid), model_sha256=results[0]["model_sha256"],
            weights_sha256=results[0]["weights_sha256"],
            input_shape=tuple(results[0]["input_shape"]) if results[0]["weights_sha256"] else (),
            max_camera_difference=args.max_camera_difference, source=source)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_range_correction(correction, args.out)
        if args.figure:
            write_figure(correction, args.figure)
    except PerceptionError as exc:
        print(f"depth_range_fit: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model.name}: {len(jobs)} cameras at {args.width}x{args.height}, {len(args.seeds)} drives x "
          f"{args.frames} frames each; truth / prediction (median) before -> after, by predicted depth")
    print("camera          | " + " | ".join(f"{lo:.0f}-{hi:.0f} m" for lo, hi in BANDS_M))
    for r in results:
        cells = [f"{b['median_ratio']:.3f}->{a['median_ratio']:.3f}" if b["pixels"] else "-"
                 for b, a in zip(r["before"], r["after"], strict=True)]
        print(f"{r['mount_height']:.1f} m {r['hfov']:>5.0f} deg | " + " | ".join(cells))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
