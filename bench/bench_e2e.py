"""End-to-end benchmark of the node stack over DDS: costmaps per image (separate vs fused) and camera delivery.

Part ``pairing``: perception-stack runs in a second process, once with the
separate depth and segmentation nodes and once with the fused node (each with
the costmap node); this process replays a synthetic drive bag in a loop at
its recorded rate (10 Hz) into it and measures:

- costmaps per image: the three independent latest-frame-wins nodes skip
  different frames on a slow host, so the costmap node gets few depth/label
  pairs; the fused node runs both models on every frame it takes;
- latency from publishing each image to receiving its costmap (matched by
  header stamp): p50, p95, max;
- frames each inference node processed.
The in-run baseline is the same models and costmap code run offline on the
same frames (eval-bag's per-frame compute time).

Part ``delivery``: a synthetic camera process (perception_tools.synthetic_camera)
publishes the vehicle camera's frames, 1280x1080 rgb8 and NV12 at 30 Hz, to
the stack's depth and segmentation nodes and to a light subscriber in this
process; frames received / frames sent per subscriber. The in-run baseline is
the same camera without the Fast DDS profile (config/fastdds.xml); the stack
and this process always load it, as shipped.

    python bench/bench_e2e.py                                  # both parts, printed
    python bench/bench_e2e.py --part pairing --json docs/measurements/e2e_pairing.json
    python bench/bench_e2e.py --part delivery --json docs/measurements/transport_delivery.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
STATS_TOPICS = {"depth": "/perception/depth/stats", "segmentation": "/perception/segmentation/stats"}


def _models(work: Path, width: int, height: int) -> tuple[Path, Path, str]:
    depth, seg = ROOT / "models" / "depth_levels_r18.onnx", ROOT / "models" / "ddrnet23s_offroad.onnx"
    if depth.is_file() and seg.is_file():
        return depth, seg, "demo models"
    from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

    hw = (round(160 * height / width), 160)
    print("NOTE: models/ has no demo models; benchmarking TINY test models (the shell and DDS dominate)")
    return (make_tiny_depth_model(work / "tiny_depth.onnx", hw=hw), make_tiny_seg_model(work / "tiny_seg.onnx", hw=hw),
            "tiny test models")


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    array = np.asarray(values)
    return {"n": int(array.size), "p50": round(float(np.percentile(array, 50)), 1),
            "p95": round(float(np.percentile(array, 95)), 1), "max": round(float(array.max()), 1)}


# --------------------------------------------------------------------------- pairing: separate vs fused


def run_pairing(mode: str, bag: Path, params: Path, depth_model: Path, seg_model: Path, backend: str, loops: int,
                work: Path) -> dict[str, Any]:
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.executors import SingleThreadedExecutor

    from model_tools.bags.bagio import header_stamp_from_cdr
    from perception_core.geometry import stamp_ns
    from perception_msgs.msg import InferenceStats
    from perception_tools.live import StackProcess
    from perception_tools.replay import BagReplayer

    nodes = "depth,segmentation,costmap" if mode == "separate" else "fused,costmap"
    image_subscribers = 2 if mode == "separate" else 1
    stack = StackProcess(params, depth_model, seg_model, backend, work / f"stack_{mode}.log",
                         extra_args=["--nodes", nodes])
    context = rclpy.Context()
    rclpy.init(context=context)
    published: dict[int, int] = {}
    latencies_ms: list[float] = []
    costmap_stamps: set[int] = set()
    processed: dict[str, set[int]] = {key: set() for key in STATS_TOPICS}

    def on_costmap(msg: OccupancyGrid) -> None:
        stamp = stamp_ns(msg.header)
        sent = published.get(stamp)
        if sent is not None and stamp not in costmap_stamps:  # the first costmap of each image
            latencies_ms.append((time.time_ns() - sent) / 1e6)
        costmap_stamps.add(stamp)

    def on_publish(topic: str, _bag_ns: int, wall_ns: int, data: bytes) -> None:
        if topic == "/camera/image_raw":
            stamp = header_stamp_from_cdr(data)
            if stamp is not None:
                published[stamp] = wall_ns

    node = rclpy.create_node("bench_e2e", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.create_subscription(OccupancyGrid, "/perception/costmap", on_costmap, 50)
    for key, topic in STATS_TOPICS.items():
        node.create_subscription(InferenceStats, topic,
                                 lambda m, key=key: processed[key].add(stamp_ns(m.header)) if m.total_ms > 0 else None,
                                 50)
    replayer = BagReplayer(node, bag, rate=1.0, loop=True, topics=["/camera/image_raw", "/camera/camera_info"],
                           on_publish=on_publish, first_topics=["/camera/camera_info"])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
                node.count_subscribers("/camera/image_raw") >= image_subscribers
                and node.count_publishers("/perception/costmap") >= 1):
            stack.check_alive()
            executor.spin_once(timeout_sec=0.1)
        warm_until = time.monotonic() + 1.0
        while time.monotonic() < warm_until:
            executor.spin_once(timeout_sec=0.05)
        replayer.start(max_loops=loops)
        while not replayer.finished:
            executor.spin_once(timeout_sec=0.02)
        settle = time.monotonic() + 5.0
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stack.stop()
    sent = replayer.stats.published.get("/camera/image_raw", 0)
    inferred = {key: len(stamps & set(published)) for key, stamps in processed.items()}
    both = len(processed["depth"] & processed["segmentation"] & set(published))
    return {
        "mode": mode, "nodes": nodes, "images_sent": sent, "costmaps": len(costmap_stamps & set(published)),
        "costmaps_per_image": round(len(costmap_stamps & set(published)) / sent, 4) if sent else None,
        "frames_inferred": inferred, "frames_inferred_by_both_models": both,
        "latency_image_to_costmap_ms": _percentiles(latencies_ms),
    }


def pairing(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from model_tools.bags.bagio import camera_mount_from_bag
    from model_tools.bags.eval_bag import DEFAULT_PARAMS, evaluate_bag, node_parameters
    from model_tools.data.synth import CameraRig
    from model_tools.data.synth_bag import write_drive_bag
    from perception_tools.live import write_stack_params

    width, height = (int(v) for v in args.size.split("x"))
    depth_model, seg_model, models = _models(work, width, height)
    bag = write_drive_bag(work / "drive", CameraRig.default(width=width, height=height), n_frames=args.frames,
                          fps=args.fps, seed=11, progress=False)
    offline = evaluate_bag(bag, depth_model, seg_model, work / "offline", backend=args.backend, progress=False)
    baseline = offline.metrics["latency_ms"]["total_ms"]
    params = write_stack_params(work / "params.yaml", DEFAULT_PARAMS, camera_mount_from_bag(bag))
    runs = [run_pairing(mode, bag, params, depth_model, seg_model, args.backend, args.loops, work)
            for mode in ("separate", "fused")]
    return {
        "images": f"{args.frames} synthetic frames x {args.loops} loops at {args.fps:g} Hz, {width}x{height} rgb8",
        "models": f"{depth_model.name} + {seg_model.name} ({models}), backend {args.backend}",
        "costmap_pairing_max_skew_s": node_parameters(params, "costmap_node").get("pairing_max_skew_s"),
        "offline_baseline_ms_per_frame": {"p50": round(baseline["p50"], 1), "p90": round(baseline["p90"], 1)},
        "runs": runs,
    }


# --------------------------------------------------------------------------- delivery at the vehicle's size and rate


def _diagnostic_counts(array: Any, counts: dict[str, dict[str, int]]) -> None:
    for status in array.status:
        values = {kv.key: kv.value for kv in status.values}
        if "frames_received" in values:
            counts[status.name.split(":")[0]] = {
                "received": int(values["frames_received"]), "skipped": int(values["frames_skipped_latest_wins"]),
                "lost": int(values["frames_lost_in_transport"])}


def _start_camera(env: dict[str, str], encoding: str, width: int, height: int, args: argparse.Namespace,
                  spin_for: Any) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run the synthetic camera until it has sent its frames; it stays up (``--linger``) until stopped."""
    camera = subprocess.Popen(
        [sys.executable, "-m", "perception_tools.synthetic_camera", "--size", f"{width}x{height}", "--encoding",
         encoding, "--rate", str(args.camera_rate), "--frames", str(args.camera_frames), "--wait-subscribers", "3",
         "--linger", "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report: list[str] = []
    threading.Thread(target=lambda: report.append(camera.stdout.readline()), daemon=True).start()
    spin_for(120, lambda: bool(report) or camera.poll() is not None)
    if not report or not report[0].strip():
        raise RuntimeError(f"synthetic camera failed: {camera.communicate(timeout=30)[1]}")
    return camera, json.loads(report[0])


def delivery(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from model_tools.bags.eval_bag import DEFAULT_PARAMS
    from perception_core.geometry import stamp_ns
    from perception_ros.health import ArrivalMonitor
    from perception_tools.live import StackProcess

    width, height = 1280, 1080
    depth_model, seg_model, models = _models(work, width, height)
    profile = os.environ[PROFILE_ENV]
    stack = StackProcess(DEFAULT_PARAMS, depth_model, seg_model, args.backend, work / "stack_delivery.log",
                         extra_args=["--nodes", "depth,segmentation"])
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_delivery", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    probe = [ArrivalMonitor()]  # the same accounting as the nodes'; a new one per run
    counts: dict[str, dict[str, int]] = {}

    def on_probe_image(msg: Image, info: dict[str, Any]) -> None:
        probe[0].on_frame(stamp_ns(msg.header), info.get("publication_sequence_number") or None)

    node.create_subscription(Image, "/camera/image_raw", on_probe_image, qos_profile_sensor_data,
                             event_callbacks=SubscriptionEventCallbacks(
                                 message_lost=lambda info: probe[0].on_lost(info.total_count_change)))
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda a: _diagnostic_counts(a, counts), 50)

    def spin_for(seconds: float, until: Any = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            stack.check_alive()
            executor.spin_once(timeout_sec=0.05)

    rows = []
    try:
        spin_for(180, lambda: node.count_subscribers("/camera/image_raw") >= 3 and len(counts) >= 2)
        for encoding in ("rgb8", "nv12"):
            for with_profile in (False, True):
                env = dict(os.environ)
                if not with_profile:
                    env.pop(PROFILE_ENV, None)
                before = {name: dict(c) for name, c in counts.items()}
                probe[0] = ArrivalMonitor()
                camera, sent = _start_camera(env, encoding, width, height, args, spin_for)
                # A busy node takes the last frame when it finishes the one in hand: wait until every frame is
                # accounted for at every node, or their counts stopped moving for 20 s (at most 60 s).

                def accounted(before: dict[str, dict[str, int]] = before, sent: int = sent["sent"]) -> bool:
                    return len(counts) >= 2 and all(
                        sum(c[k] - before.get(name, {}).get(k, 0) for k in ("received", "skipped", "lost")) >= sent
                        for name, c in counts.items())

                stable_since, last_seen, deadline = time.monotonic(), None, time.monotonic() + 60
                while not accounted() and time.monotonic() - stable_since < 20.0 and time.monotonic() < deadline:
                    spin_for(0.5)
                    seen = json.dumps(counts, sort_keys=True)
                    if seen != last_seen:
                        stable_since, last_seen = time.monotonic(), seen
                spin_for(1.2)  # one more diagnostics period
                camera.send_signal(signal.SIGINT)  # the camera stayed up so that no reader lost its last frame
                camera.communicate(timeout=30)
                nodes = {}
                for name, after in sorted(counts.items()):
                    delta = {k: after[k] - before.get(name, {}).get(k, 0) for k in after}
                    delivered = delta["received"] + delta["skipped"]
                    nodes[name] = {**delta, "delivered": delivered,
                                   "delivered_per_sent": round(delivered / sent["sent"], 4)}
                rows.append({
                    "encoding": encoding, "camera_loads_profile": with_profile, "sent": sent["sent"],
                    "camera_achieved_rate_hz": round(sent["achieved_rate_hz"], 2), "frame_bytes": sent["frame_bytes"],
                    "light_subscriber": {"received": probe[0].received, "skipped": probe[0].skipped,
                                         "lost": probe[0].lost, "delivered": probe[0].received + probe[0].skipped,
                                         "delivered_per_sent": round((probe[0].received + probe[0].skipped)
                                                                     / sent["sent"], 4)},
                    "nodes": nodes,
                })
                light = rows[-1]["light_subscriber"]
                print(f"  delivery {encoding} camera profile {'on ' if with_profile else 'off'}: light subscriber "
                      f"{light['delivered']}/{sent['sent']} (lost {light['lost']}); " + "; ".join(
                          f"{n} {v['delivered']}/{sent['sent']} (lost {v['lost']})" for n, v in nodes.items()),
                      flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stack.stop()
    return {
        "camera": f"perception_tools.synthetic_camera, {width}x{height}, {args.camera_frames} frames at "
                  f"{args.camera_rate:g} Hz, sensor-data QoS (best effort, depth 1 subscribers)",
        "subscribers": "depth_node and segmentation_node (perception-stack, one process, nodes side by side) and a "
                       "light subscriber in the benchmark process; all three load the profile",
        "profile": str(Path(profile).relative_to(ROOT)) if Path(profile).is_relative_to(ROOT) else profile,
        "models": f"{depth_model.name} + {seg_model.name} ({models}), backend {args.backend}",
        "counting": "delivered = frames that reached the node's DDS reader: taken by its callback (received) or "
                    "replaced in its 1-deep queue while it was busy (skipped, from publisher sequence gaps); "
                    "lost = DDS sample-lost events",
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("pairing", "delivery", "both"), default="both")
    parser.add_argument("--frames", type=int, default=30, help="pairing: frames in the synthetic drive")
    parser.add_argument("--loops", type=int, default=3, help="pairing: loops over the drive")
    parser.add_argument("--fps", type=float, default=10.0, help="pairing: replay rate")
    parser.add_argument("--size", default="640x480", help="pairing: image size")
    parser.add_argument("--camera-frames", type=int, default=90, help="delivery: frames per run")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="delivery: camera rate")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "npu", "auto"))
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))
    from perception_ros.transport import use_transport_profile

    if use_transport_profile() is None:  # before this process creates its DDS participant
        raise SystemExit("bench_e2e: no Fast DDS profile (set FASTRTPS_DEFAULT_PROFILES_FILE or build the bringup)")

    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    report: dict[str, Any] = {
        "command": "python bench/bench_e2e.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "host": f"{platform.machine()}, {os.cpu_count()} CPU cores "
        "(shared with other work: read the ratios, not the absolute times)",
        "load_average_1min_at_start": round(os.getloadavg()[0], 1),
    }
    try:
        if args.part in ("pairing", "both"):
            report["pairing"] = result = pairing(args, work)
            print(f"bench_e2e pairing: {result['images']}; {result['models']}")
            print(f"  offline baseline (no ROS): p50 {result['offline_baseline_ms_per_frame']['p50']} ms per frame")
            for run in result["runs"]:
                lat = run["latency_image_to_costmap_ms"]
                print(f"  {run['mode']:8s}: {run['costmaps']} costmaps from {run['images_sent']} images "
                      f"({run['costmaps_per_image']:.1%}); frames inferred {run['frames_inferred']}, by both "
                      f"{run['frames_inferred_by_both_models']}; image->costmap ms p50 {lat['p50']} p95 {lat['p95']}")
        if args.part in ("delivery", "both"):
            print("bench_e2e delivery at 1280x1080, 30 Hz:")
            report["delivery"] = delivery(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
