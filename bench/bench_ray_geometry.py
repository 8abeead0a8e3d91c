"""Time the costmap's ray geometry (what a camera moving on its mount recomputes) against another revision's.

    python bench/bench_ray_geometry.py --base 1527069 --out docs/measurements/ray_geometry.json

Imports ``perception_core`` as it was at ``--base`` beside today's (``bench_costmap_build.import_revision``: the
package exported under another name) and times, frame by frame in turns on one core's CPU clock, on the bench_host
scene (the vehicle camera's 768x896 depth image): the base revision's full computation, today's full computation,
and today's geometry for a mount moved a hundredth of a degree from a cached one (the tables kept, the rays
exact). Timing them in turns in one process keeps a shared machine's slow spells out of the comparison, which
bench_host's separate stages do not.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. a commit id)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_costmap_build
    import bench_host

    from perception_core import costmap
    from perception_core.costmap import projection

    folder = tempfile.TemporaryDirectory()  # the base revision's package, for the run
    base = bench_costmap_build.import_revision(args.base, Path(folder.name), "costmap.projection")
    depth, _, k, mount = bench_host._costmap_scene()
    config = costmap.CostmapConfig(**mount)
    k_depth = bench_host.scale_intrinsics(k, bench_host.CAMERA_HW, depth.shape)

    def transform(pitch_deg: float):
        return costmap.camera_to_grid_transform(
            costmap.CostmapConfig(**{**mount, "mount_pitch": mount["mount_pitch"] + math.radians(pitch_deg)}))

    samples: dict[str, list[float]] = {"base, full": [], "today, full": [], "today, moved 0.01 deg": []}
    for frame in range(args.frames + 1):  # the first round warms up
        mounted, moved = transform(0.001 * frame), transform(0.001 * frame + 0.01)
        for name, module, mount_now, clear in (("base, full", base, mounted, True),
                                               ("today, full", projection, mounted, True),
                                               ("today, moved 0.01 deg", projection, moved, False)):
            if clear:
                module._GEOMETRY_CACHE.clear()
            start = time.process_time()
            module._depth_geometry(k_depth, depth.shape, mount_now, config)
            if frame:
                samples[name].append((time.process_time() - start) * 1e3)
    folder.cleanup()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    reference = medians["base, full"]
    print(f"ray geometry at {depth.shape[0]}x{depth.shape[1]} (median of {args.frames}, CPU clock, in turns):")
    for name, ms in medians.items():
        print(f"  {name:<24}{ms:8.2f} ms{ms / reference:8.2f}x of base")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python bench/bench_ray_geometry.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "base": args.base, "frames": args.frames, "depth_hw": list(depth.shape), "clock": "cpu",
            "median_ms": medians, "ratio_to_base": {name: ms / reference for name, ms in medians.items()},
        }, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
