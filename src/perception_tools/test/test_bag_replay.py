"""Replay and recorder over real DDS, and bag reading errors, on bags these tests write with rosbags."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from model_tools.bags import bagio
from model_tools.testing import bag_faults
from perception_core.errors import BagError, OutputExistsError
from perception_core.geometry import stamp_ns
from perception_core.testing.cli import one_line_error, run_command, unwritable_folder

# Recorded offsets (ms) of the image messages: uneven gaps so a replay that ignored timing would show.
OFFSETS_MS = [0, 100, 350, 400, 700, 750, 1000]
BASE_NS = 1_700_000_000_000_000_000


def _image(typestore, index: int, stamp_ns: int):
    image_cls = typestore.types["sensor_msgs/msg/Image"]
    header_cls = typestore.types["std_msgs/msg/Header"]
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    pixels = np.full((2, 3, 3), index, dtype=np.uint8)
    return image_cls(
        header=header_cls(stamp=time_cls(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                          frame_id="camera_optical_frame"),
        height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=pixels.reshape(-1),
    )


def _tf_static(typestore):
    t = typestore.types
    header_cls, time_cls = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
    stamped = t["geometry_msgs/msg/TransformStamped"](
        header=header_cls(stamp=time_cls(sec=0, nanosec=0), frame_id="base_link"),
        child_frame_id="camera_optical_frame",
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=0.5, y=0.0, z=1.2),
            # optical frame of a level, forward-looking camera: q for R = [[0,0,1],[-1,0,0],[0,-1,0]]
            rotation=t["geometry_msgs/msg/Quaternion"](x=-0.5, y=0.5, z=-0.5, w=0.5),
        ),
    )
    return t["tf2_msgs/msg/TFMessage"](transforms=[stamped])


def write_timed_bag(path: Path, storage: str = "mcap") -> Path:
    """A bag with images at OFFSETS_MS, one std_msgs/String per image, and one /tf_static."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    typestore = bagio.make_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        notes = writer.add_connection("/notes", "std_msgs/msg/String", typestore=typestore)
        tf = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=typestore)
        writer.write(tf, BASE_NS, typestore.serialize_cdr(_tf_static(typestore), "tf2_msgs/msg/TFMessage"))
        for index, offset in enumerate(OFFSETS_MS):
            stamp = BASE_NS + offset * 1_000_000
            writer.write(images, stamp, typestore.serialize_cdr(_image(typestore, index, stamp), "sensor_msgs/msg/Image"))
            note = typestore.types["std_msgs/msg/String"](data=f"frame {index}")
            writer.write(notes, stamp + 1, typestore.serialize_cdr(note, "std_msgs/msg/String"))
    return path


@pytest.fixture()
def ros():
    import rclpy

    rclpy.init()
    try:
        yield rclpy
    finally:
        rclpy.try_shutdown()


def _spin_until(executor, predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()


# ----------------------------------------------------------------------------- reading


def test_summary_lists_topics_counts_and_span(tmp_path: Path) -> None:
    bag = write_timed_bag(tmp_path / "timed")
    summary = bagio.summarize_bag(bag)
    assert summary.topics["/camera/image_raw"].count == len(OFFSETS_MS)
    assert summary.topics["/tf_static"].msgtype == "tf2_msgs/msg/TFMessage"
    assert summary.duration_s == pytest.approx(OFFSETS_MS[-1] / 1000, abs=0.01)


def test_missing_bag_and_missing_topic_are_named(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"nowhere.*does not exist"):
        bagio.summarize_bag(tmp_path / "nowhere")
    bag = write_timed_bag(tmp_path / "timed")
    with pytest.raises(BagError, match="/ground_truth/depth"):
        bagio.require_topics(bagio.summarize_bag(bag), ["/camera/image_raw", "/ground_truth/depth"])
    with pytest.raises(BagError, match="/nope"):
        list(bagio.iter_raw(bag, topics=["/nope"]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_raises_bag_error_naming_it(tmp_path: Path, storage: str) -> None:
    bag = write_timed_bag(tmp_path / "whole", storage=storage)
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    data_file = next(p for p in broken.iterdir() if p.suffix in (".mcap", ".db3"))
    with open(data_file, "r+b") as stream:
        stream.truncate(data_file.stat().st_size // 2)
    with pytest.raises(BagError, match=r"broken.*(truncated|corrupt)"):
        list(bagio.iter_raw(broken))


def test_camera_mount_read_from_tf_static_in_body_convention(tmp_path: Path) -> None:
    mount = bagio.camera_mount_from_bag(write_timed_bag(tmp_path / "timed"))
    assert mount is not None
    # A level forward-looking optical frame is a body frame with no rotation.
    assert [mount[k] for k in bagio.MOUNT_FIELDS] == pytest.approx([0.5, 0.0, 1.2, 0.0, 0.0, 0.0], abs=1e-9)


def test_mount_from_transform_recovers_pitch_of_a_tilted_camera() -> None:
    from perception_core.costmap import CostmapConfig, camera_to_grid_transform

    config = CostmapConfig(mount_x=0.3, mount_y=-0.1, mount_z=1.4, mount_roll=0.02, mount_pitch=0.25, mount_yaw=-0.1)
    optical = camera_to_grid_transform(config)
    mount = bagio.mount_from_transform(optical[:3, :3], optical[:3, 3], optical=True)
    assert [mount[k] for k in bagio.MOUNT_FIELDS] == pytest.approx([0.3, -0.1, 1.4, 0.02, 0.25, -0.1], abs=1e-9)


# ----------------------------------------------------------------------------- replay


@pytest.mark.system
@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_replay_keeps_order_and_recorded_gaps_scaled_by_rate(tmp_path: Path, ros, rate: float) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from perception_tools.replay import BagReplayer

    bag = write_timed_bag(tmp_path / "timed")
    player_node = ros.create_node("replay_under_test")
    listener = ros.create_node("replay_listener")
    arrivals: list[tuple[int, float]] = []
    listener.create_subscription(
        Image, "/camera/image_raw", lambda m: arrivals.append((stamp_ns(m.header), time.monotonic())), 50
    )
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    replayer = BagReplayer(player_node, bag, rate=rate, topics=["/camera/image_raw", "/tf_static"])
    assert replayer.stats.skipped_topics == {"/tf_static": "tf2_msgs/msg/TFMessage"}  # not importable here
    assert replayer.topics == ["/camera/image_raw"]
    assert replayer.wait_for_subscribers(timeout_s=10.0)
    replayer.start()
    assert _spin_until(executor, lambda: len(arrivals) == len(OFFSETS_MS), 15.0), f"got {len(arrivals)} images"
    assert replayer.join(5.0)
    executor.shutdown()

    stamps = [s for s, _ in arrivals]
    assert stamps == [BASE_NS + o * 1_000_000 for o in OFFSETS_MS]  # all of them, in recorded order
    gaps = np.diff([t for _, t in arrivals])
    expected = np.diff(OFFSETS_MS) / 1000.0 / rate
    # Loose: a shared 2-core machine jitters, but uneven recorded gaps must show through.
    assert np.all(np.abs(gaps - expected) < 0.06 + 0.25 * expected), f"gaps {gaps} vs expected {expected}"
    total = arrivals[-1][1] - arrivals[0][1]
    assert total == pytest.approx(OFFSETS_MS[-1] / 1000.0 / rate, rel=0.2, abs=0.05)
    assert replayer.stats.published == {"/camera/image_raw": len(OFFSETS_MS)}


@pytest.mark.system
def test_replay_loops_and_selects_topics(tmp_path: Path, ros) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from perception_tools.replay import BagReplayer

    bag = write_timed_bag(tmp_path / "timed")
    player_node = ros.create_node("replay_loop_under_test")
    listener = ros.create_node("replay_loop_listener")
    notes: list[str] = []
    listener.create_subscription(String, "/notes", lambda m: notes.append(m.data), 50)
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    replayer = BagReplayer(player_node, bag, rate=4.0, loop=True, topics=["/notes"])
    assert replayer.topics == ["/notes"]
    assert replayer.wait_for_subscribers(timeout_s=10.0)
    replayer.start(max_loops=2)
    expected = [f"frame {i}" for i in range(len(OFFSETS_MS))] * 2
    assert _spin_until(executor, lambda: len(notes) >= len(expected), 15.0)
    assert replayer.join(5.0)
    executor.shutdown()
    assert notes == expected
    assert replayer.stats.loops_completed == 2


@pytest.mark.system
def test_loop_restarts_one_mean_gap_after_the_last_message(tmp_path: Path, ros) -> None:
    """Across the loop boundary the schedule continues as if the recording went on: one mean gap, then pass 2."""
    from perception_tools.replay import BagReplayer

    rate = 0.5
    node = ros.create_node("replay_loop_boundary")
    published: list[tuple[int, int]] = []  # (bag time, wall time of publish)
    replayer = BagReplayer(node, write_timed_bag(tmp_path / "timed"), rate=rate, loop=True, topics=["/notes"],
                           on_publish=lambda _topic, bag_ns, wall_ns, _data: published.append((bag_ns, wall_ns)))
    stats = replayer.play(max_loops=2)
    notes_ns = [BASE_NS + o * 1_000_000 + 1 for o in OFFSETS_MS]
    assert [b for b, _ in published] == notes_ns * 2  # the bag's own times, twice: replay never rewrites them
    assert stats.loops_completed == 2 and stats.published == {"/notes": 2 * len(OFFSETS_MS)}
    mean_gap_s = (OFFSETS_MS[-1] - OFFSETS_MS[0]) / (len(OFFSETS_MS) - 1) / 1000.0
    recorded = [o / 1000.0 for o in OFFSETS_MS]
    expected = [t / rate for t in recorded] + [(recorded[-1] + mean_gap_s + t) / rate for t in recorded]
    wall = [(w - published[0][1]) / 1e9 for _, w in published]
    # Each publish is due at its scheduled time and leaves late by the replay's lateness plus the wake-up
    # delay of a loaded machine, so the gaps match the schedule within that much.
    slack = stats.max_lateness_ms / 1000.0 + 0.08
    gaps, expected_gaps = np.diff(wall), np.diff(expected)
    assert expected_gaps[len(OFFSETS_MS) - 1] == pytest.approx(mean_gap_s / rate)  # the boundary: 1/6 s / 0.5
    assert np.all(np.abs(gaps - expected_gaps) <= slack), f"gaps {np.round(gaps, 3)} vs {np.round(expected_gaps, 3)}"


def test_replay_rejects_a_topic_the_bag_lacks(tmp_path: Path, ros) -> None:
    from perception_tools.replay import BagReplayer

    node = ros.create_node("replay_bad_topic")
    with pytest.raises(BagError, match="/camera/camera_info"):
        BagReplayer(node, write_timed_bag(tmp_path / "timed"), topics=["/camera/camera_info"])


# ----------------------------------------------------------------------------- recorder


@pytest.mark.system
def test_recorder_round_trip_writes_self_describing_bag(tmp_path: Path, ros) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    from sensor_msgs.msg import Image

    from perception_msgs.msg import InferenceStats
    from perception_tools.recorder import BagRecorder

    out = tmp_path / "recorded"
    talker = ros.create_node("record_talker")
    recorder_node = ros.create_node("record_under_test")
    stats_pub = talker.create_publisher(InferenceStats, "/perception/depth/stats", 10)
    image_pub = talker.create_publisher(Image, "/perception/depth/image", 10)
    recorder = BagRecorder(
        recorder_node, out, ["/perception/depth/stats", "/perception/depth/image"],
        types={"/perception/depth/image": "sensor_msgs/msg/Image"},
    ).start()
    executor = SingleThreadedExecutor()
    executor.add_node(recorder_node)
    executor.add_node(talker)
    assert _spin_until(executor, lambda: len(recorder.subscribed()) == 2 and stats_pub.get_subscription_count() > 0
                       and image_pub.get_subscription_count() > 0, 10.0)
    depth = np.array([[1.5, np.nan, 3.25], [0.5, 7.0, 14.0]], dtype=np.float32)
    for index in range(5):
        stats_pub.publish(InferenceStats(node_name="depth", backend_used="cpu", inference_ms=10.0 + index,
                                         frames_processed=index))
        image = Image(height=2, width=3, encoding="32FC1", is_bigendian=0, step=12)
        image.header.stamp.sec = 100 + index
        image.header.frame_id = "camera_optical_frame"
        image.data = (depth + index).tobytes()
        image_pub.publish(image)
        executor.spin_once(timeout_sec=0.01)
    assert _spin_until(executor, lambda: sum(recorder.counts().values()) == 10, 10.0), recorder.counts()
    assert not out.exists(), "bag must appear only when the recording is finished"
    stats = recorder.stop()
    executor.shutdown()
    assert stats.counts == {"/perception/depth/stats": 5, "/perception/depth/image": 5}
    assert stats.types["/perception/depth/stats"] == "perception_msgs/msg/InferenceStats"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "recorded.mcap"]

    with bagio.open_bag(out) as reader:
        conn = next(c for c in reader.connections if c.topic == "/perception/depth/stats")
        definition = conn.msgdef.data
    assert "float32 inference_ms" in definition  # the bag carries perception_msgs' definition
    plain = get_typestore(Stores.ROS2_JAZZY)  # a store that has never heard of perception_msgs
    plain.register(get_types_from_msg(definition, "perception_msgs/msg/InferenceStats"))
    stats_msgs = [plain.deserialize_cdr(m.data, m.msgtype) for m in bagio.iter_raw(out, ["/perception/depth/stats"])]
    assert [m.frames_processed for m in stats_msgs] == [0, 1, 2, 3, 4]
    assert [m.inference_ms for m in stats_msgs] == pytest.approx([10.0, 11.0, 12.0, 13.0, 14.0])
    images = [bagio.deserialize(m) for m in bagio.iter_raw(out, ["/perception/depth/image"])]
    assert [im.header.stamp.sec for im in images] == [100, 101, 102, 103, 104]
    for index, im in enumerate(images):
        np.testing.assert_array_equal(np.frombuffer(im.data.tobytes(), np.float32).reshape(2, 3), depth + index)
    # The recorded bag carries chunk CRCs: one flipped bit in a depth image is found, not read back as data.
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    bag_faults.flip_message_bit(damaged, "/perception/depth/image", 2)
    with pytest.raises(BagError, match=r"damaged.*Chunk checksum mismatch.*messages could not be read"):
        list(bagio.iter_raw(damaged))


def test_recorder_refuses_existing_output(tmp_path: Path, ros) -> None:
    from perception_tools.recorder import BagRecorder

    (tmp_path / "taken").mkdir()
    node = ros.create_node("record_refuses")
    with pytest.raises(OutputExistsError, match="taken"):
        BagRecorder(node, tmp_path / "taken", ["/x"])


@pytest.mark.system
def test_recorder_abort_leaves_nothing(tmp_path: Path, ros) -> None:
    from perception_tools.recorder import BagRecorder

    node = ros.create_node("record_aborts")
    recorder = BagRecorder(node, tmp_path / "never", ["/x"], types={"/x": "std_msgs/msg/String"}).start()
    recorder.abort()
    assert list(tmp_path.iterdir()) == []


def test_replay_thread_can_be_stopped(tmp_path: Path, ros) -> None:
    from perception_tools.replay import BagReplayer

    node = ros.create_node("replay_stops")
    replayer = BagReplayer(node, write_timed_bag(tmp_path / "timed"), rate=0.05, topics=["/notes"])
    replayer.start()
    time.sleep(0.2)
    replayer.stop()
    assert replayer.join(5.0)
    assert replayer.stats.stopped_early
    assert replayer.stats.published["/notes"] < len(OFFSETS_MS)


def _bag_missing_two_images(tmp_path: Path) -> Path:
    """A timed bag (no chunk CRCs, as rosbags writes it) whose 2nd and 5th image records are zeroed."""
    bag = write_timed_bag(tmp_path / "damaged")
    bag_faults.zero_record_opcodes(bag, "/camera/image_raw", 1, 4)
    return bag


def test_replayer_reports_messages_it_could_not_read(tmp_path: Path, ros) -> None:
    from perception_tools.replay import BagReplayer

    node = ros.create_node("replay_damaged")
    stats = BagReplayer(node, _bag_missing_two_images(tmp_path), rate=20.0, topics=["/camera/image_raw"]).play()
    assert stats.partial and stats.published["/camera/image_raw"] == len(OFFSETS_MS) - 2
    assert stats.unread == {"/camera/image_raw": 2}
    assert "2 of 7 messages could not be read (/camera/image_raw 2 of 7)" in str(stats.read_error)


@pytest.mark.reliability(case="perception-tools replay of a bag whose storage skips 2 damaged message records",
                         outcome="publishes what it can read, then exit 1 with one error line: partial replay, "
                                 "'2 of 14 messages could not be read' per topic")
def test_replay_cli_on_a_damaged_bag_says_partial(tmp_path: Path) -> None:
    bag = _bag_missing_two_images(tmp_path)
    result = run_command("perception_tools.cli", "replay", bag, "--rate", "20", cwd=tmp_path)
    line = one_line_error(result, bag)
    assert "partial replay" in line and "2 of 14 messages could not be read (/camera/image_raw 2 of 7)" in line
    assert "published 12 messages" in result.stdout


@pytest.mark.reliability(case="output folder not writable: perception-tools record --out",
                         outcome="exit 1 before subscribing, one error line naming --out and the unwritable folder")
def test_record_cli_checks_its_output_before_recording(tmp_path: Path) -> None:
    with unwritable_folder(tmp_path) as locked:
        if locked is None:
            pytest.skip("no folder on this machine refuses new files")
        result = run_command("perception_tools.cli", "record", "--out", locked / "recorded", "--topics",
                             "/notes:std_msgs/msg/String", "--duration", "1", cwd=tmp_path)
        assert "not writable" in one_line_error(result, "--out", locked)
        assert "recording" not in result.stdout
