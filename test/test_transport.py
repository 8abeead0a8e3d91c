"""Camera-size frames between processes: the shipped Fast DDS profile delivers them, and a loss is reported.

A camera process (perception_tools.synthetic_camera, as a camera driver is
its own process) publishes the vehicle camera's frames, 1280x1080 rgb8 or NV12 at
30 Hz, to a segmentation node in this process (which loads the profile, as
every test does through conftest.py). Without the profile in the camera
process, Fast DDS loses most frames silently; the node must say so in
/diagnostics with the numbers. With it, every frame reaches the node or was
replaced in its 1-deep queue while it was busy (latest frame wins), none lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from inference_node_harness import Probe, ros_context
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from perception_core.testing.tiny_models import make_tiny_seg_model

pytestmark = pytest.mark.system
PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
FRAMES, RATE_HZ, WIDTH, HEIGHT = 45, 30.0, 1280, 1080



def _run_camera_into_node(tmp_path: Path, encoding: str, with_profile: bool
                          ) -> tuple[object, list[DiagnosticArray], list[int]]:
    """The camera's frames into a segmentation node; returns it, its /diagnostics and the frames it took.

    The camera stays up (``--linger``) until the node took its last frame or 30 s passed: a frame still
    queued when the camera process exits can vanish with it, which would be the test's doing.
    """
    from seg_perception.segmentation_node import SegmentationNode

    env = dict(os.environ)
    if not with_profile:
        env.pop(PROFILE_ENV, None)
    model = make_tiny_seg_model(tmp_path / "seg.onnx")
    with ros_context() as context:
        node = SegmentationNode(context=context, parameter_overrides=[
            Parameter("model_path", value=str(model)), Parameter("backend", value="cpu"),
            Parameter("expected_rate_hz", value=RATE_HZ)])
        probe = Probe(context, node)
        diagnostics = probe.listen(DiagnosticArray, "/diagnostics")
        labels = probe.listen(Image, "/perception/segmentation/labels")
        camera = subprocess.Popen([sys.executable, "-m", "perception_tools.synthetic_camera", "--size",
                                   f"{WIDTH}x{HEIGHT}", "--encoding", encoding, "--rate", str(RATE_HZ), "--frames",
                                   str(FRAMES), "--linger", "60"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        report: list[str] = []
        threading.Thread(target=lambda: report.append(camera.stdout.readline()), daemon=True).start()
        try:
            assert probe.spin_until(lambda: bool(report) or camera.poll() is not None, timeout=90.0), \
                "the camera did not finish"
            if with_profile:  # without it the last frame is usually lost: nothing to wait for
                probe.spin_until(lambda: any(_frame_index(m) == FRAMES - 1 for m in labels), timeout=30.0)
            probe.spin_until(lambda: False, timeout=1.5)  # a diagnostics period after the last frame
        finally:
            camera.send_signal(signal.SIGINT)
            err = camera.communicate(timeout=30)[1]
        assert camera.returncode == 0 and report and json.loads(report[0])["sent"] == FRAMES, err
        probe.close()
        node.destroy_node()
    return node, diagnostics, sorted({_frame_index(m) for m in labels})


def _frame_index(msg: Image) -> int:
    """The synthetic camera stamps frame i at 1000 s + i / rate."""
    return round((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - 1000.0) * RATE_HZ)


@pytest.mark.reliability(case="1280x1080 rgb8 frames at 30 Hz from a camera process without the Fast DDS profile",
                         outcome="flagged state: /diagnostics WARN/ERROR with the frames lost and sent")
def test_frames_lost_in_transport_are_reported_with_the_numbers(tmp_path: Path) -> None:
    node, diagnostics, _ = _run_camera_into_node(tmp_path, "rgb8", with_profile=False)
    arrival = node.arrival
    assert arrival.lost > 0, "default Fast DDS delivered every camera-size frame: the profile would be unnecessary"
    assert arrival.received + arrival.lost + arrival.skipped <= FRAMES
    flagged = [s for a in diagnostics for s in a.status
               if s.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR) and "lost in transport" in s.message]
    assert flagged, [s.message for a in diagnostics for s in a.status]
    values = {kv.key: kv.value for kv in flagged[-1].values}
    assert int(values["frames_lost_in_transport"]) > 0
    assert f"of {values['frames_sent_5s'].split('.')[0]} frames on camera/image_raw" in flagged[-1].message


@pytest.mark.parametrize("encoding", [
    pytest.param(encoding, marks=pytest.mark.reliability(
        case=f"1280x1080 {encoding} frames at 30 Hz from a camera process with the shipped Fast DDS profile",
        outcome="every frame sent reaches the node or is replaced while it is busy; none lost"))
    for encoding in ("rgb8", "nv12")])
def test_the_shipped_profile_delivers_every_camera_frame(tmp_path: Path, encoding: str) -> None:
    node, diagnostics, taken = _run_camera_into_node(tmp_path, encoding, with_profile=True)
    arrival = node.arrival
    assert arrival.lost == 0
    # From the first frame the node took (a frame before it can only have been replaced while the executor
    # started up: its sequence gap has no earlier frame to be counted from) to the last frame, every one is
    # accounted for: taken, or replaced in the 1-deep queue while the node was busy.
    assert taken and taken[0] <= 3 and taken[-1] == FRAMES - 1, taken
    assert arrival.received + arrival.skipped == FRAMES - taken[0], (arrival.received, arrival.skipped, taken[0])
    assert node.stats.processed >= 1 and node.stats.dropped == 0, node.stats.last_error
    assert not [s for a in diagnostics for s in a.status if "lost in transport" in s.message]
    assert np.isclose(float({kv.key: kv.value for kv in diagnostics[-1].status[0].values}["expected_rate_hz"]),
                      RATE_HZ)
