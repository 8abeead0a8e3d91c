"""Which drop edges the models' depth finds, and how many of them exact depth confirms, by what lies beyond.

A drop edge (docs/costmap.md, "Ground geometry", rule 4) is a pair of vertically neighbouring pixels: ground
(the near pixel) under something much farther and lower (the far pixel). What the far pixel is decides how the
drop is judged: ground or a standing obstacle seen at its own depth, sky along a descending ray, or nothing
within range (REP 117 +Inf, taken as at ``max_range``). This builds each frame's costmap twice with the
models' labels, once from the models' depth and once from the GT depth at the model's size, and counts the
BLOCKED-sized drop pairs of the models' depth by the kind of their far pixel and by whether the same pair is
a drop edge (either size) with exact depth. Unconfirmed pairs are the false drop edges' source; their median
depths say how the depth got them wrong.

    python bench/explain_drop_edges.py --out docs/measurements/drop_edges.json
    python bench/explain_drop_edges.py --seeds 2121 3232 --frames 6 --mount-height 0.8 --pitch-deg 0 \\
        --hfov-deg 110 --out docs/measurements/drop_edges_mount_0.8m_0deg_110deg.json

The pairs are read from ``perception_core.costmap.projection._drop_edges`` while a frame is built (wrapped for
the call, restored after): the costmap keeps only their cells, not the pixels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

FAR_KINDS = ("ground", "lethal_class", "sky", "beyond_range")


def far_pixel_kinds(z: np.ndarray, categories: np.ndarray, far: np.ndarray, max_range: float) -> np.ndarray:
    """Index into FAR_KINDS of each far pixel (flat indices into the working image): sky (a category < 0),
    beyond range (+Inf, NaN-free and at least ``max_range``), a BLOCKED/HAZARD class, else ground."""
    depth = z.ravel()[far]
    category = categories.ravel()[far]
    kind = np.zeros(far.size, np.int64)
    kind[category >= 2] = 1
    with np.errstate(invalid="ignore"):
        kind[(category >= 0) & (depth >= max_range)] = 3
    kind[category < 0] = 2
    return kind


def confirmed_mask(pairs: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
                   image_size: int) -> np.ndarray:
    """Which (near, far) pairs (flat pixel indices into an image of ``image_size`` pixels) are also in
    ``reference``: the same near and the same far pixel."""
    def key(p: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return p[0].astype(np.int64) * image_size + p[1]
    return np.isin(key(pairs), key(reference))


def count_by_kind(kinds: np.ndarray, confirmed: np.ndarray) -> dict[str, dict[str, int]]:
    """Per far-pixel kind (FAR_KINDS): pairs, and how many of them are confirmed."""
    return {name: {"pairs": int((kinds == i).sum()), "confirmed": int((confirmed & (kinds == i)).sum())}
            for i, name in enumerate(FAR_KINDS)}


@contextlib.contextmanager
def drop_pairs_recorded() -> Iterator[dict[str, Any]]:
    """Within the block, each costmap build leaves its drop pairs and working depth in the yielded dict."""
    from perception_core.costmap import projection

    seen: dict[str, Any] = {}
    original = projection._drop_edges

    def recording(*args: Any) -> Any:  # the wrapped function's arguments, passed on unchanged
        result = original(*args)
        seen.update(z=args[0].copy(), categories=args[3].copy(), pairs=result)
        return result

    projection._drop_edges = recording
    try:
        yield seen
    finally:
        projection._drop_edges = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 202, 303, 404, 505, 606])
    parser.add_argument("--frames", type=int, default=8, help="frames per drive")
    parser.add_argument("--hfov-deg", type=float, default=90.0)
    parser.add_argument("--mount-height", type=float, default=1.4)
    parser.add_argument("--pitch-deg", type=float, default=10.0)
    parser.add_argument("--depth-model", type=Path, default=ROOT / "models" / "depth_levels_r18.onnx")
    parser.add_argument("--seg-model", type=Path, default=ROOT / "models" / "ddrnet23s_offroad.onnx")
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "perception.yaml")
    parser.add_argument("--range-correction", default=None, metavar="YAML",
                        help="as bench_costmap.py's: default the depth node's range_correction_file; '' for none")
    parser.add_argument("--interpolate-levels", choices=("true", "false"), default=None,
                        help="as bench_costmap.py's: default the depth node's interpolate_levels")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args(argv)

    import cv2
    from bench_costmap import costmap_parameters, drive_frames, interpolate_levels, range_correction_path
    from tqdm import tqdm

    from model_tools.bags.eval_bag import OfflineStack
    from model_tools.data.synth import CameraRig
    from perception_core.costmap import CostmapConfig, build_costmap, class_map_from_ontology
    from perception_core.metrics.costmap import BevGrid

    rig = CameraRig.default(1280, 1080, hfov_deg=args.hfov_deg, mount_height=args.mount_height,
                            pitch_deg=args.pitch_deg)
    params = costmap_parameters(args.params, rig, [])
    config = CostmapConfig.from_mapping(params)
    classes = class_map_from_ontology()
    correction = range_correction_path(args)
    stack = OfflineStack(args.depth_model, args.seg_model, "cpu", config, classes, num_threads=args.threads,
                         depth_params={"range_correction_file": str(correction or ""),
                                       "interpolate_levels": interpolate_levels(args)})
    grid = BevGrid(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)
    # Per frame: each BLOCKED pair's far-pixel kind, whether exact depth confirms it, and its depths (near model,
    # near GT, far GT); pooled at the end.
    kinds_seen: list[np.ndarray] = []
    confirmed_seen: list[np.ndarray] = []
    depths_seen: list[np.ndarray] = []
    bar = tqdm(total=len(args.seeds) * args.frames, desc="explain_drop_edges", unit="frame")
    with drop_pairs_recorded() as seen:
        for seed in args.seeds:
            for frame in drive_frames(rig, seed, args.frames, 2.0, 4.0, grid):
                depth = stack.depth.infer(frame.rgb, "RGB", camera_k=frame.k, camera_height=frame.camera_height).depth
                labels = stack.seg.infer(frame.rgb, "RGB").labels
                gt_small = cv2.resize(frame.depth, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_NEAREST)
                build_costmap(gt_small, labels, frame.k, config, classes, k_hw=frame.depth.shape)
                exact_z, (exact_caution, exact_blocked) = seen["z"], seen["pairs"]
                exact = (np.concatenate([exact_caution[0], exact_blocked[0]]),
                         np.concatenate([exact_caution[1], exact_blocked[1]]))
                build_costmap(depth, labels, frame.k, config, classes, k_hw=frame.depth.shape)
                z, (near, far) = seen["z"], seen["pairs"][1]
                kinds_seen.append(far_pixel_kinds(z, seen["categories"], far, config.max_range))
                confirmed_seen.append(confirmed_mask((near, far), exact, z.size))
                depths_seen.append(np.stack([z.ravel()[near], exact_z.ravel()[near], exact_z.ravel()[far]]))
                bar.update(1)
    bar.close()
    kinds = np.concatenate(kinds_seen) if kinds_seen else np.empty(0, np.int64)
    confirmed = np.concatenate(confirmed_seen) if confirmed_seen else np.empty(0, bool)
    depths = np.concatenate(depths_seen, axis=1) if depths_seen else np.empty((3, 0), np.float32)
    depths = np.where(np.isfinite(depths), depths, np.nan)  # +Inf (beyond range) has no median depth

    report: dict[str, Any] = {
        "command": "python bench/explain_drop_edges.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "mount": {"height_m": args.mount_height, "pitch_deg": args.pitch_deg, "hfov_deg": args.hfov_deg},
        "seeds": args.seeds, "frames_per_seed": args.frames,
        "range_correction": str(correction.relative_to(ROOT)) if correction and correction.is_relative_to(ROOT)
        else str(correction or ""),
        "blocked_drop_pairs_by_far_pixel": {},
    }
    print(f"BLOCKED-sized drop pairs of the models' depth, {len(args.seeds)} drives x {args.frames} frames, mount "
          f"{args.mount_height} m / {args.pitch_deg} deg / {args.hfov_deg} deg")
    print(f"{'far pixel':>14} {'pairs':>7} {'confirmed':>10} {'share':>6}   unconfirmed, median depth (m): near model / "
          "near GT / far GT")
    for i, (name, counts) in enumerate(count_by_kind(kinds, confirmed).items()):
        wrong = depths[:, (kinds == i) & ~confirmed]
        with warnings.catch_warnings():  # a kind without unconfirmed pairs has no median: NaN, said in the table
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = [float(np.nanmedian(row)) if row.size else float("nan") for row in wrong]
        pairs, hits = counts["pairs"], counts["confirmed"]
        share = hits / pairs if pairs else float("nan")
        report["blocked_drop_pairs_by_far_pixel"][name] = {
            "pairs": pairs, "confirmed_by_exact_depth": hits, "share_confirmed": share,
            "unconfirmed_median_depth_m": dict(zip(("near_model", "near_gt", "far_gt"), medians, strict=True))}
        print(f"{name:>14} {pairs:>7} {hits:>10} {share:>6.3f}   " + " / ".join(f"{m:.2f}" for m in medians))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
