"""Synthetic generator: geometric truth, label/depth agreement, camera ranges, determinism, folders, bag, CLI."""

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
    DRIVE_SPAN_M,
    CameraRanges,
    CameraRig,
    build_scene,
    camera_for,
    depth_to_png16,
    drive_pose,
    frame_seed,
    is_drive_frame,
    read_frame_rig,
    render_frame,
    write_synthetic_folder,
)
from perception_core.errors import ConfigError, OutputExistsError
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


def _world_points(frame, rig: CameraRig) -> np.ndarray:
    """World xyz [3, H, W] of each pixel at its GT depth (the calibration and the pose alone)."""
    world_cam = frame.T_world_base @ rig.T_base_cam
    v, u = np.mgrid[0 : rig.height, 0 : rig.width].astype(np.float64)
    rays = np.stack([(u - rig.cx) / rig.fx, (v - rig.cy) / rig.fy, np.ones_like(u)])
    return np.einsum("ij,jhw->ihw", world_cam[:3, :3], rays * frame.depth) + world_cam[:3, 3, None, None]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_labels_and_depth_agree_with_the_terrain_in_full_scenes(index):
    rig = CameraRig.default(96, 80)
    seed = frame_seed(3, index)
    frame = render_frame(rig, seed)
    terrain = build_scene(seed).terrain
    sky = frame.label == SKY
    assert (frame.depth[sky] == 0).all()
    assert (frame.depth[~sky] >= 0).all() and (frame.depth[~sky] > 0).mean() > 0.95
    xyz = _world_points(frame, rig)
    surface = terrain.height(xyz[0].astype(np.float32), xyz[1].astype(np.float32))
    obstacle = np.isin(frame.label, OBSTACLES)
    ground = ~sky & ~obstacle & (frame.depth > 0)
    assert obstacle.any() and ground.mean() > 0.2
    # Ground pixels sit on the terrain (to the ray caster's tolerance plus float32 rounding) ...
    np.testing.assert_allclose(xyz[2][ground], surface[ground], atol=2e-3)
    # ... and a solid is in front of the ground: its point is not below the terrain.
    assert (xyz[2][obstacle] > surface[obstacle] - 2e-3).all()
    # Water is the flat surface of a basin: its points lie where the terrain says water.
    water = frame.label == ONTO.id_of("water")
    if water.any():
        assert terrain.water_mask(xyz[0][water].astype(np.float32), xyz[1][water].astype(np.float32)).mean() > 0.99


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


REFERENCE = Path(__file__).parent / "data" / "synth_reference_frames.npz"


def _reference_frames() -> dict[str, object]:
    """The frames of REFERENCE: two scenes at the vehicle camera, one drawn camera, one drive frame (96x80)."""
    from model_tools.data.synth import drive_pose

    rig = CameraRig.default(96, 80)
    drawn = frame_seed(5, 0)
    drive = build_scene(77, length=60.0, clear_corridor=True)
    return {
        "scene_a": render_frame(rig, frame_seed(9, 2)),
        "scene_b": render_frame(rig, frame_seed(9, 8)),
        "drawn_camera": render_frame(camera_for(CameraRanges(96, 80), drawn), drawn),
        "drive": render_frame(rig, 77, drive_pose(drive, 3.0), time_s=3.0, scene=drive),
    }


@pytest.mark.parametrize("chunk", [None, 1000])
def test_render_output_equals_the_generator_before_its_speed_work(chunk, monkeypatch):
    """Same rgb, depth and labels as the generator at 2e5242e (before the batching and channel-major rewrites)
    wrote to REFERENCE, with whole-frame passes and with batches of 1000 (several per frame).

    Bit for bit on the machine that wrote REFERENCE; numpy's float32 transcendentals may round differently on
    another CPU (SIMD path), so the check allows what that can move: depth within the terrain solver's root
    tolerance, one grey level of colour, and a pixel's class only where a surface edge crosses it (1 in 1000).
    A change to the generator's output moves far more."""
    from model_tools.data import synth, synth_terrain

    if chunk is not None:
        monkeypatch.setattr(synth_terrain, "CHUNK", chunk)
        monkeypatch.setattr(synth, "CHUNK", chunk)
    stored = np.load(REFERENCE)
    for name, frame in _reference_frames().items():
        depth, ref_depth = frame.depth, stored[f"{name}/depth"]
        np.testing.assert_array_equal(np.isfinite(depth) & (depth > 0), np.isfinite(ref_depth) & (ref_depth > 0),
                                      err_msg=f"{name} depth validity")
        valid = np.isfinite(ref_depth) & (ref_depth > 0)
        np.testing.assert_allclose(depth[valid], ref_depth[valid], rtol=0, atol=2 * synth_terrain.ROOT_TOLERANCE_M,
                                   err_msg=f"{name} depth")
        rgb_diff = np.abs(frame.rgb.astype(np.int16) - stored[f"{name}/rgb"].astype(np.int16))
        assert (rgb_diff <= 1).mean() > 0.999 and rgb_diff.max() <= 8, f"{name} rgb"
        assert (frame.label == stored[f"{name}/label"]).mean() > 0.999, f"{name} label"


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


def test_folder_drive_frames_are_the_frames_a_drive_bag_has(tmp_path):
    """--drive-share: those frames come from a clear-corridor drive scene at a pose along the drive."""
    import json

    rig = CameraRig.default(64, 48)
    split = write_synthetic_folder(tmp_path / "d", rig, 3, seed=4, split="train", drive_share=1.0, progress=False)
    again = write_synthetic_folder(tmp_path / "e", rig, 3, seed=4, split="train", drive_share=1.0, workers=2,
                                   progress=False)
    assert _tree_digest(split) == _tree_digest(again)
    record = json.loads((split / "camera" / "000002.json").read_text())
    drive = record["drive"]
    assert drive["clear_corridor"] is True and 0.0 <= drive["time_s"] <= DRIVE_SPAN_M / drive["speed_mps"]
    seed = frame_seed(4, 2, "train")
    scene = build_scene(seed, length=DRIVE_SPAN_M, clear_corridor=True)
    expected = render_frame(rig, seed, drive_pose(scene, drive["time_s"], drive["speed_mps"]), time_s=drive["time_s"],
                            scene=scene)
    assert np.array_equal(cv2.imread(str(split / "label" / "000002.png"), cv2.IMREAD_UNCHANGED), expected.label)
    assert np.allclose(np.asarray(record["T_world_base"]), expected.T_world_base)
    # The plain frames of the same seeds differ (one pose near the start of a scene without the corridor).
    plain = write_synthetic_folder(tmp_path / "p", rig, 3, seed=4, split="train", progress=False)
    assert "drive" not in json.loads((plain / "camera" / "000002.json").read_text())
    assert _tree_digest(plain) != _tree_digest(split)
    shares = [is_drive_frame(frame_seed(4, i, "train"), 0.3) for i in range(400)]
    assert 0.24 < float(np.mean(shares)) < 0.36
    with pytest.raises(ValueError, match="drive_share"):
        write_synthetic_folder(tmp_path / "x", rig, 1, seed=4, drive_share=1.5, progress=False)


def test_drive_scene_keeps_the_road_clear_and_has_a_negative_obstacle_beside_it():
    for seed in range(4):
        scene = build_scene(seed, length=60.0, clear_corridor=True)
        for prim in scene.primitives:
            c = prim.at(0.0)
            reach = prim.size[0] if prim.kind == "cylinder" else (np.linalg.norm(prim.size[:2]) if prim.kind == "box" else prim.size[:2].max())
            # The vehicle (1 m half width) driving the road centre never touches a solid.
            clearance = abs(c[1] - scene.road_center(c[0])) - reach
            assert clearance > 1.0, (seed, prim.kind, prim.class_name, clearance)
        terrain = scene.terrain
        beside = [f for f in (*terrain.trenches, *terrain.drops) if f.coord == "lateral" and abs(f.offset) > 1.0]
        assert beside and not [f for f in (*terrain.trenches, *terrain.drops) if f.coord == "line"]
        # Along the road centre the ground is the hills alone: no ditch or drop-off crosses the path.
        x = np.linspace(0.0, 100.0, 400, dtype=np.float32)
        y = np.asarray(scene.road_center(x), np.float32)
        assert not terrain.earth_mask(x, y).any()


def test_vehicle_rests_on_the_terrain_under_its_tracks():
    from model_tools.data.synth import TRACK_CONTACTS, random_pose

    scene = build_scene(frame_seed(6, 2))
    pose = random_pose(scene, np.random.default_rng(0), jitter=False)
    contacts = np.array([[px, py, 0.0, 1.0] for px, py in TRACK_CONTACTS]).T
    world = pose @ contacts
    ground = scene.terrain.height(world[0].astype(np.float32), world[1].astype(np.float32))
    # The contact plane fits the four contact heights (a tilted rectangle's corners are coplanar up to twist).
    residual = world[2] - ground
    assert abs(residual.mean()) < 1e-3 and np.abs(residual).max() < 0.25


def test_camera_ranges_draw_per_frame_within_their_ranges():
    ranges = CameraRanges(64, 48)
    rigs = [camera_for(ranges, frame_seed(1, i)) for i in range(200)]
    heights = np.array([r.mount_height for r in rigs])
    pitches = np.degrees([r.pitch for r in rigs])
    fovs = np.array([r.hfov_deg for r in rigs])
    rolls = np.degrees([r.roll for r in rigs])
    for values, (lo, hi) in ((heights, (0.8, 2.2)), (pitches, (0.0, 20.0)), (fovs, (60.0, 110.0)), (rolls, (-5.0, 5.0))):
        assert values.min() >= lo and values.max() <= hi and values.max() - values.min() > 0.8 * (hi - lo)
    assert camera_for(ranges, frame_seed(1, 3)) == rigs[3]  # one seed, one camera
    rig = CameraRig.default(64, 48)
    assert camera_for(rig, 5) is rig
    with pytest.raises(ConfigError, match="camera range hfov_deg"):
        CameraRanges(64, 48, hfov_deg=(120.0, 90.0))


def test_folder_records_each_frames_camera_and_stops_on_time(tmp_path):
    ranges = CameraRanges(48, 40)
    split = write_synthetic_folder(tmp_path / "d", ranges, 3, seed=2, split="train", progress=False)
    import yaml

    info = yaml.safe_load((split / "camera.yaml").read_text())
    assert info["K"] == "per_frame" and info["camera_ranges"]["mount_height"] == [0.8, 2.2]
    for i in range(3):
        rig = read_frame_rig(split, f"{i:06d}")
        seed = frame_seed(2, i, "train")
        assert rig == camera_for(ranges, seed)
        # The recorded camera reproduces the frame: render it again from the record alone.
        again = render_frame(rig, seed)
        rgb = cv2.cvtColor(cv2.imread(str(split / "rgb" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(rgb, again.rgb)
    # A fixed camera: camera.yaml holds its K, and every record says the same.
    fixed = write_synthetic_folder(tmp_path / "f", CameraRig.default(48, 40, mount_height=1.1), 2, seed=2, progress=False)
    assert read_frame_rig(fixed, "000001").mount_height == 1.1
    (fixed / "camera" / "000001.json").unlink()
    assert read_frame_rig(fixed, "000001").mount_height == 1.1  # from camera.yaml
    # max_seconds: the first frames done in time, numbered from 0 without gaps, and camera.yaml says how many.
    part = write_synthetic_folder(tmp_path / "t", ranges, 400, seed=2, max_seconds=1.0, progress=False)
    names = sorted(p.name for p in (part / "rgb").glob("*.png"))
    count = yaml.safe_load((part / "camera.yaml").read_text())["frames"]
    assert 0 < len(names) == count < 400 and names == [f"{i:06d}.png" for i in range(count)]
    assert sorted(p.stem for p in (part / "camera").glob("*.json")) == [n[:6] for n in names]


def test_bag_contents(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from model_tools.data.synth_bag import ElevationGrid, write_drive_bag
    from model_tools.data.synth_terrain import Terrain

    rig = CameraRig.default(64, 48)
    grid = ElevationGrid(resolution=0.5, x_min=-2.0, x_max=12.0, y_min=-5.0, y_max=5.0)
    bag = write_drive_bag(tmp_path / "drive", rig, n_frames=4, fps=5.0, seed=1, progress=False, grid=grid)
    assert not list(tmp_path.glob(".*partial"))
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert topics == {
            "/camera/image_raw": ("sensor_msgs/msg/Image", 4),
            "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 4),
            "/ground_truth/depth": ("sensor_msgs/msg/Image", 4),
            "/ground_truth/labels": ("sensor_msgs/msg/Image", 4),
            "/ground_truth/elevation": ("sensor_msgs/msg/PointCloud2", 4),
            "/tf": ("tf2_msgs/msg/TFMessage", 4),
            "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
        }
        by_topic: dict[str, list] = {}
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((stamp, store.deserialize_cdr(raw, conn.msgtype)))
    stamps = [s for s, _ in by_topic["/camera/image_raw"]]
    assert np.allclose(np.diff(stamps), 1e9 / 5.0)
    for topic in ("/camera/camera_info", "/ground_truth/elevation", "/tf"):
        assert [s for s, _ in by_topic[topic]] == stamps
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
    assert yaml.safe_load(custom["elevation_grid"])["resolution"] == 0.5 and custom["odom_frame"] == "odom"

    # The elevation ground truth: an organised x, y, z cloud in base_link, one point per grid cell ...
    from perception_core.geometry import transform_matrix

    terrain = Terrain.from_dict(yaml.safe_load(custom["terrain"]))
    _, cloud = by_topic["/ground_truth/elevation"][2]
    _, odom = by_topic["/tf"][2]
    assert (cloud.header.frame_id, cloud.height, cloud.width, cloud.point_step) == ("base_link", 20, 28, 12)
    assert (odom.transforms[0].header.frame_id, odom.transforms[0].child_frame_id) == ("odom", "base_link")
    xyz = np.frombuffer(bytes(cloud.data), "<f4").reshape(20, 28, 3)
    np.testing.assert_allclose(xyz[0, 0, :2], [-1.75, -4.75])
    np.testing.assert_allclose(xyz[1, 2, :2], [-0.75, -4.25])
    # ... each on the terrain (the bag's own terrain parameters and vehicle pose say where) ...
    world_base = transform_matrix(odom.transforms[0].transform)
    world = world_base[:3, :3] @ xyz.reshape(-1, 3).T.astype(np.float64) + world_base[:3, 3:4]
    np.testing.assert_allclose(world[2], terrain.height(world[0].astype(np.float32), world[1].astype(np.float32)),
                               atol=1e-4)
    # ... and it is the height the rendered ground truth has: ground pixels of that frame, back-projected into
    # base_link, lie at the elevation function's height for their own (x, y).
    depth = np.frombuffer(by_topic["/ground_truth/depth"][2][1].data, "<f4").reshape(48, 64)
    labels = np.frombuffer(by_topic["/ground_truth/labels"][2][1].data, np.uint8).reshape(48, 64)
    v, u = np.nonzero(np.isfinite(depth) & ~np.isin(labels, (*OBSTACLES, SKY)))
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - rig.cx) / rig.fx * z, (v - rig.cy) / rig.fy * z, z])
    base = rig.T_base_cam[:3, :3] @ cam + rig.T_base_cam[:3, 3:4]
    assert base.shape[1] > 500
    np.testing.assert_allclose(base[2], terrain.heights_along_z(world_base, base[0], base[1]), atol=2e-3)
    # Same seed, same messages byte for byte (the mcap file itself embeds the bag's name).
    again = write_drive_bag(tmp_path / "again", rig, n_frames=4, fps=5.0, seed=1, progress=False, grid=grid)

    def payloads(path: Path) -> list[tuple[str, int, bytes]]:
        with Reader(path) as reader:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]

    assert payloads(bag) == payloads(again)


def test_bag_draws_one_camera_per_drive_from_ranges(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from model_tools.data.synth_bag import ElevationGrid, write_drive_bag

    ranges = CameraRanges(48, 40)
    bag = write_drive_bag(tmp_path / "drive", ranges, n_frames=3, fps=5.0, seed=9, progress=False,
                          grid=ElevationGrid(resolution=1.0))
    rig = camera_for(ranges, 9)
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        infos = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/camera/camera_info"]
        static = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/tf_static"]
    assert len(infos) == 3 and all(np.allclose(i.k.reshape(3, 3), rig.K) for i in infos)
    assert math.isclose(static[0].transforms[0].transform.translation.z, rig.mount_height)
    assert rig != CameraRig.default(48, 40)


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


if __name__ == "__main__" and sys.argv[1:] == ["--write-reference"]:
    # Run with the reference generator's sources on PYTHONPATH (see the test above).
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **{f"{name}/{field}": getattr(frame, field)
                                      for name, frame in _reference_frames().items() for field in ("rgb", "depth", "label")})
    print(f"wrote {REFERENCE}")
