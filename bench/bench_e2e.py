"""End-to-end benchmark of the node stack over DDS: image publish -> costmap, at 10 Hz, CPU backend.

Starts perception-stack (depth, segmentation, costmap nodes) in a second
process, replays a synthetic drive bag in a loop at its recorded 10 Hz, and
measures in this process:

- latency from publishing each image to receiving its costmap (matched by
  header stamp), as a distribution;
- the drop rate (images that never produced a costmap: the nodes keep only
  the newest frame, so a stack slower than the camera drops, by design);
- the stack process's resident memory over the loop (growth should be ~0).

Baseline, measured in the same run: the same models and costmap code run
offline on the same frames (eval-bag's per-frame compute time); the ratio
end-to-end / offline shows what the ROS shell and DDS add.

    python bench/bench_e2e.py                 # 30 frames x 10 loops at 10 Hz (~30 s of replay)
    python bench/bench_e2e.py --loops 3 --size 320x240
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "npu", "auto"))
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))

    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.executors import SingleThreadedExecutor

    from model_tools.bags.bagio import camera_mount_from_bag, header_stamp_from_cdr
    from model_tools.bags.eval_bag import DEFAULT_PARAMS, evaluate_bag
    from model_tools.data.synth import CameraRig, write_drive_bag
    from perception_core.geometry import stamp_ns
    from perception_tools.live import StackProcess, rss_mb, write_stack_params
    from perception_tools.replay import BagReplayer

    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    depth_model, seg_model = ROOT / "models" / "depth_levels_r18.onnx", ROOT / "models" / "ddrnet23s_offroad.onnx"
    if not (depth_model.is_file() and seg_model.is_file()):
        from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

        hw = (round(160 * height / width), 160)
        depth_model = make_tiny_depth_model(work / "tiny_depth.onnx", hw=hw)
        seg_model = make_tiny_seg_model(work / "tiny_seg.onnx", hw=hw)
        print("NOTE: models/ has no demo models; benchmarking TINY test models (the shell and DDS dominate)")
    bag = write_drive_bag(work / "drive", CameraRig.default(width=width, height=height), n_frames=args.frames,
                          fps=args.fps, seed=11, progress=False)

    offline = evaluate_bag(bag, depth_model, seg_model, work / "offline", backend=args.backend, progress=False)
    baseline = offline.metrics["latency_ms"]["total_ms"]

    stack = StackProcess(write_stack_params(work / "params.yaml", DEFAULT_PARAMS, camera_mount_from_bag(bag)),
                         depth_model, seg_model, args.backend, work / "stack.log")
    context = rclpy.Context()
    rclpy.init(context=context)
    published: dict[int, int] = {}
    latencies_ms: list[float] = []
    received = 0

    def on_costmap(msg: OccupancyGrid) -> None:
        nonlocal received
        received += 1
        sent = published.get(stamp_ns(msg.header))
        if sent is not None:
            latencies_ms.append((time.time_ns() - sent) / 1e6)

    def on_publish(topic: str, _bag_ns: int, wall_ns: int, data: bytes) -> None:
        if topic == "/camera/image_raw":
            stamp = header_stamp_from_cdr(data)
            if stamp is not None:
                published[stamp] = wall_ns

    node = rclpy.create_node("bench_e2e", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.create_subscription(OccupancyGrid, "/perception/costmap", on_costmap, 50)
    replayer = BagReplayer(node, bag, rate=1.0, loop=True, topics=["/camera/image_raw", "/camera/camera_info"],
                           on_publish=on_publish, first_topics=["/camera/camera_info"])
    rss: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (node.count_subscribers("/camera/image_raw") >= 2
                                                    and node.count_publishers("/perception/costmap") >= 1):
            stack.check_alive()
            executor.spin_once(timeout_sec=0.1)
        warm_until = time.monotonic() + 1.0
        while time.monotonic() < warm_until:
            executor.spin_once(timeout_sec=0.05)
        start = time.monotonic()
        replayer.start(max_loops=args.loops)
        next_sample = start
        while not replayer.finished:
            executor.spin_once(timeout_sec=0.02)
            if time.monotonic() >= next_sample:
                rss.append((time.monotonic() - start, rss_mb(stack.pid)))
                next_sample += 1.0
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)
        rss.append((time.monotonic() - start, rss_mb(stack.pid)))
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stack.stop()

    sent = replayer.stats.published.get("/camera/image_raw", 0)
    lat = np.asarray(latencies_ms)
    print(f"bench_e2e: {sent} images at {args.fps:g} Hz ({args.loops} loops of {args.frames}), {width}x{height}, "
          f"backend {args.backend}, models {depth_model.name} + {seg_model.name}")
    if lat.size:
        print(f"  end-to-end image -> costmap latency ms: p50 {np.percentile(lat, 50):.1f}  "
              f"p90 {np.percentile(lat, 90):.1f}  p99 {np.percentile(lat, 99):.1f}  max {lat.max():.1f}  (n={lat.size})")
    print(f"  costmaps received {received}, drop rate {1 - received / sent if sent else float('nan'):.1%}")
    print(f"  baseline (offline, same models, no ROS): p50 {baseline['p50']:.1f} ms per frame")
    if lat.size:
        print(f"  ratio end-to-end / offline p50: {np.percentile(lat, 50) / baseline['p50']:.2f}x")
    # Growth: compare the second half's mean to the first half's after warm-up (first 20 % skipped).
    values = np.asarray([v for _, v in rss if np.isfinite(v)])
    if values.size >= 6:
        steady = values[values.size // 5:]
        half = steady.size // 2
        growth = steady[half:].mean() - steady[:half].mean()
        slope = np.polyfit([t for t, _ in rss][values.size // 5:], steady, 1)[0] * 60
        print(f"  stack RSS MiB: start {values[0]:.0f}, end {values[-1]:.0f}, late-minus-early {growth:+.1f} MiB, "
              f"trend {slope:+.2f} MiB/min")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
