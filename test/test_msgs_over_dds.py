"""System test: perception_msgs travel between two processes over real DDS."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.system

TALKER = textwrap.dedent(
    """
    import sys, rclpy
    from perception_msgs.msg import InferenceStats, SegmentationSummary
    rclpy.init()
    node = rclpy.create_node("talker_under_test")
    stats = node.create_publisher(InferenceStats, "/test/stats", 10)
    summary = node.create_publisher(SegmentationSummary, "/test/summary", 10)
    n = 0
    def tick():
        global n
        n += 1
        stats.publish(InferenceStats(node_name="talker_under_test", backend_used="cpu",
                                     inference_ms=12.5, frames_processed=n, frames_dropped=3))
        summary.publish(SegmentationSummary(class_ids=[0, 6], class_names=["smooth_ground", "sky"],
                                            pixel_counts=[30, 10], fractions=[0.75, 0.25], height=4, width=10))
    node.create_timer(0.05, tick)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    """
)


def test_two_processes_exchange_perception_msgs() -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from perception_msgs.msg import InferenceStats, SegmentationSummary

    talker = subprocess.Popen([sys.executable, "-c", TALKER])
    rclpy.init()
    try:
        node = rclpy.create_node("listener_under_test")
        stats: list[InferenceStats] = []
        summaries: list[SegmentationSummary] = []
        node.create_subscription(InferenceStats, "/test/stats", stats.append, 10)
        node.create_subscription(SegmentationSummary, "/test/summary", summaries.append, 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while (len(stats) < 3 or not summaries) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        talker.terminate()
        talker.wait(timeout=10)

    assert len(stats) >= 3, "listener received fewer than 3 InferenceStats over DDS in 30 s"
    assert stats[0].node_name == "talker_under_test"
    assert stats[0].inference_ms == pytest.approx(12.5)
    assert stats[0].frames_dropped == 3
    counts = [m.frames_processed for m in stats]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), "frames arrived out of order"
    assert list(summaries[0].class_names) == ["smooth_ground", "sky"]
    assert list(summaries[0].fractions) == pytest.approx([0.75, 0.25])
