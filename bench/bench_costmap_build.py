"""Time the costmap build against another revision's, build by build in turns in one process.

    python bench/bench_costmap_build.py --base ae7876d --out docs/measurements/costmap_build_turns.json

Exports ``perception_core`` as it was at ``--base`` (``git archive``) into a temporary folder under another
package name (``perception_core_base``: its own imports renamed), imports it beside today's, and times on one
core's CPU clock, on the bench_host scene (the vehicle camera's frame at the models' sizes), the base's build and
today's one after the other, frame after frame: the default base-frame build, labels alone (``ground_geometry``
off) and a fixed-frame (odom) window at a pose that changes every frame. Timing in turns keeps a shared machine's
slow spells out of the ratio; bench_host's stages, minutes apart, differ by up to 1.5x here. Both revisions must
build the same grid (checked on every frame), so a speed-up that changes the output is reported as an error.

Also records what today's compiled loops cost a node at start (``costmap.warm_up``, in two new processes sharing an
empty ``NUMBA_CACHE_DIR``): compiling them (the first) and loading them from the cache (the second).
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/perception_core/perception_core"
BASE_NAME = "perception_core_base"


def export_revision(rev: str, into: Path) -> None:
    """``perception_core`` of ``rev`` as package ``BASE_NAME`` under ``into`` (imports renamed)."""
    try:
        archive = subprocess.run(["git", "archive", rev, PACKAGE], cwd=ROOT, check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"bench_costmap_build: cannot export {PACKAGE} at {rev!r}: "
                         f"{error.stderr.decode().strip()}") from error
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    target = into / BASE_NAME
    (into / PACKAGE).rename(target)
    for path in target.rglob("*.py"):
        path.write_text(re.sub(r"\bperception_core\b", BASE_NAME, path.read_text()))


def import_revision(rev: str, into: Path, module: str = "costmap") -> ModuleType:
    """``perception_core.<module>`` as it was at ``rev``, exported under ``into`` (which must outlive its use) and
    imported as ``BASE_NAME.<module>``; a base revision imported before in this process is forgotten first."""
    for name in [name for name in sys.modules if name == BASE_NAME or name.startswith(BASE_NAME + ".")]:
        del sys.modules[name]
    export_revision(rev, into)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{BASE_NAME}.{module}")


WARM_UP = ("import time; t = time.perf_counter(); from perception_core import costmap; "
           "costmap.warm_up(costmap.CostmapConfig(), costmap.class_map_from_ontology()); "
           "print(time.perf_counter() - t)")


def warm_up_seconds() -> dict[str, float]:
    """Seconds to import the costmap and run ``warm_up`` in a new process: with an empty numba cache, then with
    the cache the first one wrote."""
    seconds = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name in ("compile (empty cache)", "load (cached)"):
            run = subprocess.run([sys.executable, "-c", WARM_UP], env=env, check=True, capture_output=True, text=True)
            seconds[name] = float(run.stdout.strip().splitlines()[-1])
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. a commit id)")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_host
    from tqdm import tqdm

    from perception_core import costmap as today
    from perception_core.geometry import pose_matrix

    depth, labels, k, mount = bench_host._costmap_scene()
    with tempfile.TemporaryDirectory() as folder:
        base = import_revision(args.base, Path(folder))

        def stages(module) -> dict:
            config = module.CostmapConfig(**mount)
            labels_only = module.CostmapConfig(**mount, ground_geometry=False)
            classes = module.class_map_from_ontology()
            rolling = module.RollingGrid(config)
            poses = itertools.cycle([pose_matrix(0.01 * i, 0.02 * i, 0.0, 0.0, 0.0, math.radians(i)) for i in range(50)])
            return {
                "costmap build": lambda: module.build_costmap(depth, labels, k, config, classes,
                                                              k_hw=bench_host.CAMERA_HW),
                "labels alone": lambda: module.build_costmap(depth, labels, k, labels_only, classes,
                                                             k_hw=bench_host.CAMERA_HW),
                "odom window": lambda: module.build_costmap(depth, labels, k, config, classes,
                                                            k_hw=bench_host.CAMERA_HW,
                                                            window=rolling.window_for(next(poses))),
            }

        runs = {"base": stages(base), "today": stages(today)}
        samples = {name: {"base": [], "today": []} for name in runs["today"]}
        for name in samples:
            for frame in tqdm(range(args.frames + 3), desc=name, unit="frame", leave=False):  # 3 warm-up rounds
                grids = []
                for side in ("base", "today"):
                    start = time.process_time()
                    result = runs[side][name]()
                    elapsed = time.process_time() - start
                    grids.append(result.grid)
                    if frame >= 3:
                        samples[name][side].append(elapsed * 1e3)
                if not (grids[0].shape == grids[1].shape and (grids[0] == grids[1]).all()):
                    raise SystemExit(f"bench_costmap_build: {name}: the base and today build different grids")
    report = {
        "command": "python " + shlex.join(["bench/bench_costmap_build.py", *(argv if argv is not None else
                                                                              sys.argv[1:])]),
        "base": args.base,
        "frames": args.frames,
        "clock": "cpu (time.process_time), one thread, base and today in turns",
        "depth_hw": list(depth.shape),
        "labels_hw": list(labels.shape),
        "stages": {},
        "warm_up_s": warm_up_seconds(),
    }
    print(f"costmap build, {args.frames} frames in turns, median ms (CPU clock)")
    print(f"{'stage':16s} {'base ' + args.base:>18s} {'today':>8s} {'ratio':>7s}")
    for name, values in samples.items():
        base_ms, today_ms = statistics.median(values["base"]), statistics.median(values["today"])
        report["stages"][name] = {"base_ms": base_ms, "today_ms": today_ms, "ratio": today_ms / base_ms}
        print(f"{name:16s} {base_ms:18.2f} {today_ms:8.2f} {today_ms / base_ms:6.2f}x")
    print("warm_up (import + costmap.warm_up, new process): " + ", ".join(
        f"{name} {value:.2f} s" for name, value in report["warm_up_s"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
