"""Synthetic generator: geometric truth, label/depth agreement, determinism, folders, bag, CLI."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_tools.data.synth import (
    CameraRig,
    build_scene,
    depth_to_png16,
    frame_seed,
    render_frame,
    write_synthetic_folder,
)
from perception_core.errors import OutputExistsError
from perception_core.ontology import load_ontology

ONTO = load_ontology()
SKY = ONTO.id_of("sky")
OBSTACLES = (ONTO.id_of("static_obstacle"), ONTO.id_of("dynamic"))


def _analytic_ground_depth(rig: CameraRig, world_base: np.ndarray) -> np.ndarray:
    """Optical-axis depth of the plane z=0 per pixel, from the calibration alone (inf where the ray misses)."""
    world_cam = world_base @ rig.T_base_cam
    v, u = np.mgrid[0 : rig.height, 0 : rig.width].astype(np.float64)
    rays = np.stack([(u - rig.cx) / rig.fx, (v - rig.cy) / rig.fy, np.ones_like(u)], axis=-1)
    dz = rays @ world_cam[2, :3]
    with np.errstate(divide="ignore"):
        return np.where(dz < 0, -world_cam[2, 3] / dz, np.inf)


def test_flat_ground_depth_matches_the_closed_form():
    rig = CameraRig.default(64, 48, hfov_deg=90.0, mount_height=1.5, pitch_deg=12.0)
    frame = render_frame(rig, 5, pose=np.eye(4), flat=True)
    theta = math.radians(12.0)
    v = (np.arange(48) - rig.cy) / rig.fy
    denom = math.sin(theta) + v * math.cos(theta)  # z = h / (sin(pitch) + y' cos(pitch)) for a level camera
    expected = np.where(denom > 0, 1.5 / np.where(denom > 0, denom, 1), 0.0)[:, None].repeat(64, axis=1)
    below = expected > 0
    assert below.sum() > 0.3 * below.size and (~below).sum() > 0.1 * below.size
    np.testing.assert_allclose(frame.depth[below], expected[below], rtol=0.01)
    assert (frame.depth[~below] == 0).all()
    assert (frame.label[~below] == SKY).all() and (frame.label[below] != SKY).all()
    # The rig's matrices agree with the closed form too.
    assert np.allclose(frame.K, [[32, 0, 32], [0, 32, 24], [0, 0, 1]])
    assert np.allclose(frame.T_base_cam[:3, 3], [rig.mount_x, 0.0, 1.5])
    assert np.allclose(frame.T_base_cam[:3, 2], [math.cos(theta), 0.0, -math.sin(theta)])  # optical axis, pitched down


def test_flat_scene_with_random_level_pose_is_still_exact():
    rig = CameraRig.default(64, 48)
    frame = render_frame(rig, 11, flat=True)
    assert not np.allclose(frame.T_world_base, np.eye(4))
    expected = _analytic_ground_depth(rig, frame.T_world_base)
    valid = np.isfinite(expected) & (expected < 250)
    np.testing.assert_allclose(frame.depth[valid], expected[valid], rtol=0.01)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_labels_and_depth_agree_in_full_scenes(index):
    rig = CameraRig.default(96, 80)
    frame = render_frame(rig, frame_seed(3, index))
    sky = frame.label == SKY
    assert (frame.depth[sky] == 0).all()
    assert (frame.depth[~sky] >= 0).all() and (frame.depth[~sky] > 0).mean() > 0.95
    ground_depth = _analytic_ground_depth(rig, frame.T_world_base)
    obstacle = np.isin(frame.label, OBSTACLES)
    assert obstacle.any()
    # A solid is always in front of the ground its ray would otherwise reach.
    assert (frame.depth[obstacle] < ground_depth[obstacle] + 1e-3).all()
    ground = ~sky & ~obstacle & (frame.depth > 0)
    np.testing.assert_allclose(frame.depth[ground], ground_depth[ground], rtol=1e-3)


def test_every_class_appears_with_varied_appearance():
    rig = CameraRig.default(160, 136)
    frames = [render_frame(rig, frame_seed(0, i)) for i in range(4)]
    seen = set(np.unique(np.concatenate([f.label.ravel() for f in frames])).tolist())
    assert seen == set(range(ONTO.num_classes))
    means = [f.rgb.reshape(-1, 3).mean(axis=0) for f in frames]
    assert max(np.abs(a - b).max() for a in means for b in means) > 5  # lighting/colour differ between scenes


def test_render_is_deterministic_and_seed_dependent():
    rig = CameraRig.default(64, 48)
    a, b, c = (render_frame(rig, s) for s in (7, 7, 8))
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()
    assert a.rgb.tobytes() != c.rgb.tobytes()


def test_depth_png16_encoding():
    depth = np.array([[0.0, 1.0, 2.5], [300.0, np.nan, 0.00390625]], dtype=np.float32)
    assert depth_to_png16(depth).tolist() == [[0, 256, 640], [65535, 0, 1]]


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_folder_writer_is_deterministic_across_worker_counts(tmp_path):
    rig = CameraRig.default(64, 48)
    one = write_synthetic_folder(tmp_path / "a", rig, 3, seed=4, split="val", workers=1, progress=False)
    two = write_synthetic_folder(tmp_path / "b", rig, 3, seed=4, split="val", workers=2, progress=False)
    assert _tree_digest(one) == _tree_digest(two) and len(_tree_digest(one)) == 9
    # Files decode to the rendered frame.
    frame = render_frame(rig, frame_seed(4, 1, "val"))
    rgb = cv2.cvtColor(cv2.imread(str(one / "rgb" / "000001.png")), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(one / "depth" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(rgb, frame.rgb) and depth.dtype == np.uint16
    assert np.abs(depth / 256.0 - frame.depth).max() <= 1 / 512 + 1e-6
    assert np.array_equal(cv2.imread(str(one / "label" / "000001.png"), cv2.IMREAD_UNCHANGED), frame.label)
    with pytest.raises(OutputExistsError, match="already holds 9 frame files"):
        write_synthetic_folder(tmp_path / "a", rig, 1, seed=4, split="val", progress=False)
    write_synthetic_folder(tmp_path / "a", rig, 1, seed=4, split="val", overwrite=True, progress=False)
    assert len(_tree_digest(one)) == 3


def test_drive_scene_keeps_the_road_clear():
    for seed in range(4):
        scene = build_scene(seed, length=60.0, clear_corridor=True)
        for prim in scene.primitives:
            c = prim.at(0.0)
            reach = prim.size[0] if prim.kind == "cylinder" else (np.linalg.norm(prim.size[:2]) if prim.kind == "box" else prim.size[:2].max())
            # The vehicle (1 m half width) driving the road centre never touches a solid.
            clearance = abs(c[1] - scene.road_center(c[0])) - reach
            assert clearance > 1.0, (seed, prim.kind, prim.class_name, clearance)


def test_bag_contents(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from model_tools.data.synth import write_drive_bag

    rig = CameraRig.default(64, 48)
    bag = write_drive_bag(tmp_path / "drive", rig, n_frames=4, fps=5.0, seed=1, progress=False)
    assert not list(tmp_path.glob(".*partial"))
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert topics == {
            "/camera/image_raw": ("sensor_msgs/msg/Image", 4),
            "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 4),
            "/ground_truth/depth": ("sensor_msgs/msg/Image", 4),
            "/ground_truth/labels": ("sensor_msgs/msg/Image", 4),
            "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
        }
        by_topic: dict[str, list] = {}
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((stamp, store.deserialize_cdr(raw, conn.msgtype)))
    stamps = [s for s, _ in by_topic["/camera/image_raw"]]
    assert np.allclose(np.diff(stamps), 1e9 / 5.0)
    for stamp, msg in by_topic["/camera/camera_info"]:
        assert np.allclose(msg.k.reshape(3, 3), rig.K) and (msg.width, msg.height) == (64, 48)
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
    images = [m for _, m in by_topic["/camera/image_raw"]]
    assert images[0].encoding == "rgb8" and images[0].step == 64 * 3
    first = np.frombuffer(images[0].data, np.uint8).reshape(48, 64, 3)
    assert not np.array_equal(first, np.frombuffer(images[-1].data, np.uint8).reshape(48, 64, 3))  # the camera moves
    depth_msg = by_topic["/ground_truth/depth"][0][1]
    labels_msg = by_topic["/ground_truth/labels"][0][1]
    assert depth_msg.encoding == "32FC1" and labels_msg.encoding == "mono8"
    depth = np.frombuffer(depth_msg.data, "<f4").reshape(48, 64)
    labels = np.frombuffer(labels_msg.data, np.uint8).reshape(48, 64)
    assert np.isnan(depth[labels == SKY]).all() and (depth[labels != SKY] > 0).mean() > 0.95
    tf = by_topic["/tf_static"][0][1].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "camera_optical_frame")
    assert math.isclose(tf.transform.translation.z, rig.mount_height)
    import yaml

    custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    mount = yaml.safe_load(custom["camera_mount"])
    assert math.isclose(mount["z"], rig.mount_height) and math.isclose(mount["pitch"], rig.pitch)
    # Same seed, same messages byte for byte (the mcap file itself embeds the bag's name).
    again = write_drive_bag(tmp_path / "again", rig, n_frames=4, fps=5.0, seed=1, progress=False)

    def payloads(path: Path) -> list[tuple[str, int, bytes]]:
        with Reader(path) as reader:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]

    assert payloads(bag) == payloads(again)


def test_cli_runs_without_ros(tmp_path):
    """`python -m model_tools.cli synth` with only the two source folders on PYTHONPATH (no colcon overlay)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    src = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = f"{src / 'model_tools'}:{src / 'perception_core'}"
    cmd = [sys.executable, "-m", "model_tools.cli", "synth", "--out", str(tmp_path / "d"), "--frames", "4",
           "--width", "48", "--height", "40", "--val-fraction", "0.25", "--seed", "2", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "d" / "train" / "rgb").glob("*.png"))) == 3
    assert len(list((tmp_path / "d" / "val" / "label").glob("*.png"))) == 1
    bad = subprocess.run([*cmd[:4], "--split", "val", *cmd[4:]], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "either --split or --val-fraction" in bad.stderr
