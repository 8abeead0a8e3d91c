"""A rosbag2 (mcap) of a coherent synthetic drive through one scene, with ground truth.

Why: offline evaluation, replay into the live nodes and the costmap's
geometric checks need a drive whose every frame carries exact depth,
labels, the vehicle's pose and the terrain's height under the costmap grid.
rosbags is imported here only; the rest of the generator needs no ROS.

Topics (one message per frame on each, stamped alike, except /tf_static):

    /camera/image_raw          sensor_msgs/Image rgb8
    /camera/camera_info        sensor_msgs/CameraInfo (K, P, plumb_bob with zero D)
    /ground_truth/depth        sensor_msgs/Image 32FC1 metres, NaN invalid (REP 118)
    /ground_truth/labels       sensor_msgs/Image mono8 ontology ids
    /ground_truth/elevation    sensor_msgs/PointCloud2, organised rows x cols, frame base_link: the terrain
                               height z at the centre (x, y) of every cell of ElevationGrid
    /tf                        tf2_msgs/TFMessage odom -> base_link (the vehicle pose, exact)
    /tf_static                 base_link -> camera_optical_frame, transient-local, one message
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.data.synth import (
    CameraRig,
    CameraSource,
    Scene,
    SynthFrame,
    _default_ontology,
    _pool,
    _progress,
    build_scene,
    camera_for,
    drive_pose,
    render_frame,
)
from perception_core.geometry import quaternion_from_matrix
from perception_core.ontology import Ontology, load_ontology

BAG_START_NS = 1_700_000_000 * 10**9  # fixed first stamp: bags are byte-for-byte reproducible
ODOM_FRAME = "odom"
BAG_TOPICS = {
    "image": ("/camera/image_raw", "sensor_msgs/msg/Image"),
    "camera_info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    "depth": ("/ground_truth/depth", "sensor_msgs/msg/Image"),
    "labels": ("/ground_truth/labels", "sensor_msgs/msg/Image"),
    "elevation": ("/ground_truth/elevation", "sensor_msgs/msg/PointCloud2"),
    "tf": ("/tf", "tf2_msgs/msg/TFMessage"),
    "tf_static": ("/tf_static", "tf2_msgs/msg/TFMessage"),
}


@dataclass(frozen=True)
class ElevationGrid:
    """Cells of the ground-truth elevation, in base_link (x forward, y left): the costmap's default grid.

    Row r, column c is the cell centred at (x_min + (c + 0.5) * resolution,
    y_min + (r + 0.5) * resolution), as a nav_msgs/OccupancyGrid lays out
    its cells (x fastest).
    """

    resolution: float = 0.1
    x_min: float = -5.0
    x_max: float = 15.0
    y_min: float = -10.0
    y_max: float = 10.0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along y, columns along x)."""
        return (round((self.y_max - self.y_min) / self.resolution), round((self.x_max - self.x_min) / self.resolution))

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.shape
        x = self.x_min + (np.arange(cols) + 0.5) * self.resolution
        y = self.y_min + (np.arange(rows) + 0.5) * self.resolution
        gy, gx = np.meshgrid(y, x, indexing="ij")
        return gx, gy


@dataclass(frozen=True)
class _DriveJob:
    rig: CameraRig
    seed: int
    n_frames: int
    fps: float
    speed: float
    flat: bool
    ontology_path: str | None
    grid: ElevationGrid


@lru_cache(maxsize=2)
def _drive_scene(seed: int, length: float, flat: bool) -> Scene:
    return build_scene(seed, length=length, flat=flat, clear_corridor=True)


def drive_scene(job: _DriveJob) -> Scene:
    return _drive_scene(job.seed, job.speed * job.n_frames / job.fps, job.flat)


def _render_drive_frame(args: tuple[_DriveJob, int]) -> tuple[SynthFrame, np.ndarray]:
    """Frame ``index`` of the drive and its elevation grid (terrain height per cell, base_link z)."""
    job, index = args
    onto = load_ontology(job.ontology_path) if job.ontology_path else None
    scene = drive_scene(job)
    time_s = index / job.fps
    frame = render_frame(job.rig, job.seed, drive_pose(scene, time_s, job.speed), time_s=time_s, scene=scene, ontology=onto)
    gx, gy = job.grid.centers()
    heights = scene.terrain.heights_along_z(frame.T_world_base, gx, gy).reshape(gx.shape)
    return frame, heights.astype(np.float32)


class _Messages:
    """Builds the bag's rosbags message objects for one camera (the typestore's classes keep their ROS names)."""

    def __init__(self, store: Any, rig: CameraRig) -> None:
        types = store.types
        self.store = store
        self.rig = rig
        self.Time, self.Header = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]
        self.Image, self.CameraInfo = types["sensor_msgs/msg/Image"], types["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = types["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2, self.PointField = types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"]
        self.TFMessage, self.TransformStamped = types["tf2_msgs/msg/TFMessage"], types["geometry_msgs/msg/TransformStamped"]
        self.Transform, self.Vector3 = types["geometry_msgs/msg/Transform"], types["geometry_msgs/msg/Vector3"]
        self.Quaternion = types["geometry_msgs/msg/Quaternion"]

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.Header(stamp=self.Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def image(self, stamp_ns: int, array: np.ndarray, encoding: str) -> Any:
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self.Image(header=self.header(stamp_ns, self.rig.camera_frame), height=h, width=w, encoding=encoding,
                          is_bigendian=0, step=array.strides[0], data=array.reshape(-1).view(np.uint8))

    def camera_info(self, stamp_ns: int) -> Any:
        rig = self.rig
        projection = np.zeros((3, 4))
        projection[:3, :3] = rig.K
        return self.CameraInfo(
            header=self.header(stamp_ns, rig.camera_frame), height=rig.height, width=rig.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=rig.K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def transform(self, stamp_ns: int, parent: str, child: str, matrix: np.ndarray) -> Any:
        qx, qy, qz, qw = quaternion_from_matrix(matrix[:3, :3])
        t = matrix[:3, 3]
        return self.TFMessage(transforms=[self.TransformStamped(
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=self.Transform(translation=self.Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                     rotation=self.Quaternion(x=qx, y=qy, z=qz, w=qw)),
        )])

    def elevation(self, stamp_ns: int, grid: ElevationGrid, heights: np.ndarray) -> Any:
        """Organised x, y, z float32 cloud in base_link, one point per grid cell (row-major, x fastest)."""
        gx, gy = grid.centers()
        points = np.stack([gx, gy, heights], axis=-1).astype("<f4")
        rows, cols = heights.shape
        fields = [self.PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]  # 7 = FLOAT32
        return self.PointCloud2(header=self.header(stamp_ns, self.rig.base_frame), height=rows, width=cols,
                                fields=fields, is_bigendian=False, point_step=12, row_step=12 * cols,
                                data=points.reshape(-1).view(np.uint8), is_dense=True)

    def frame_messages(self, stamp: int, frame: SynthFrame, grid: ElevationGrid, heights: np.ndarray) -> list[tuple[str, Any]]:
        """(topic key, message) of one frame, in the order they are written."""
        depth = np.where(frame.depth > 0, frame.depth, np.float32(np.nan)).astype("<f4")
        return [
            ("tf", self.transform(stamp, ODOM_FRAME, self.rig.base_frame, frame.T_world_base)),
            ("image", self.image(stamp, frame.rgb, "rgb8")),
            ("camera_info", self.camera_info(stamp)),
            ("depth", self.image(stamp, depth, "32FC1")),
            ("labels", self.image(stamp, frame.label, "mono8")),
            ("elevation", self.elevation(stamp, grid, heights)),
        ]


def _staging_folder(target: Path, overwrite: bool) -> Path:
    """An empty hidden folder beside ``target`` to write into (renamed into place on success)."""
    import shutil

    from perception_core.errors import OutputExistsError

    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; refusing to overwrite it (pass --overwrite to replace it)")
    staging = target.parent / f".{target.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _add_connections(writer: Any, store: Any) -> dict[str, Any]:
    """One connection per BAG_TOPICS entry; /tf_static offered transient-local, as tf2's static broadcaster."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  zero, zero, QosLiveliness.AUTOMATIC, zero, False)
    return {key: writer.add_connection(topic, msgtype, typestore=store,
                                       offered_qos_profiles=(latched,) if key == "tf_static" else ())
            for key, (topic, msgtype) in BAG_TOPICS.items()}


def _write_custom_data(writer: Any, job: _DriveJob, onto: Ontology, scene: Scene) -> None:
    """metadata.yaml custom_data: mount, frames, ontology, generator settings, terrain and elevation grid (YAML)."""
    import yaml

    rig = job.rig
    mount = dict(zip(("x", "y", "z", "roll", "pitch", "yaw"), (float(v) for v in rig.mount), strict=True))
    writer.set_custom_data("camera_mount", yaml.safe_dump(mount, sort_keys=False))
    writer.set_custom_data("base_frame", rig.base_frame)
    writer.set_custom_data("camera_frame", rig.camera_frame)
    writer.set_custom_data("odom_frame", ODOM_FRAME)
    writer.set_custom_data("ontology_version", onto.version)
    writer.set_custom_data("class_names", ",".join(onto.names))
    writer.set_custom_data("synth", yaml.safe_dump({
        "seed": job.seed, "fps": job.fps, "speed_mps": job.speed, "frames": job.n_frames, "flat": job.flat,
        "camera": {"width": rig.width, "height": rig.height, "hfov_deg": rig.hfov_deg, "fx": rig.fx, "fy": rig.fy},
    }, sort_keys=False))
    writer.set_custom_data("terrain", yaml.safe_dump(scene.terrain.to_dict(), sort_keys=False))
    writer.set_custom_data("elevation_grid", yaml.safe_dump(
        {**asdict(job.grid), "frame": rig.base_frame, "topic": BAG_TOPICS["elevation"][0]}, sort_keys=False))


def write_drive_bag(
    out_bag: Any,
    camera: CameraSource,
    n_frames: int,
    fps: float,
    seed: int,
    *,
    speed: float = 4.0,
    workers: int = 1,
    flat: bool = False,
    overwrite: bool = False,
    ontology_path: Any = None,
    progress: bool = True,
    grid: ElevationGrid | None = None,
) -> Path:
    """Write a rosbag2 (mcap) of a coherent drive through one scene, with ground truth (topics above).

    One camera serves the whole drive: ``camera`` itself, or one draw from
    its ranges (seeded by ``seed``); every camera_info and the /tf_static
    mount match it. Frame i is stamped BAG_START_NS + i/fps. The camera
    mount is also in the bag's metadata.yaml custom_data (key
    ``camera_mount``, YAML) for tools without tf2, with the terrain's
    parameters (``terrain``: Terrain.from_dict rebuilds the exact height
    function) and the elevation grid. Chunks carry CRCs
    (bagio.write_mcap_chunk_crcs). Written into a hidden folder beside the
    target and renamed into place on success.
    """
    import shutil

    from model_tools.bags.bagio import write_mcap_chunk_crcs
    from perception_core.errors import BagError

    try:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise BagError(f"writing {out_bag} needs the 'rosbags' package ({err}); folders need only numpy/cv2") from err

    if n_frames < 1 or fps <= 0:
        raise ValueError(f"need n_frames >= 1 and fps > 0, got {n_frames}, {fps}")
    target = Path(out_bag)
    staging = _staging_folder(target, overwrite)
    onto = load_ontology(ontology_path) if ontology_path else _default_ontology()
    store = get_typestore(Stores.ROS2_JAZZY)
    rig = camera_for(camera, seed)
    job = _DriveJob(rig, int(seed), int(n_frames), float(fps), float(speed), bool(flat),
                    str(ontology_path) if ontology_path else None, grid or ElevationGrid())
    messages = _Messages(store, rig)
    bar = _progress(n_frames, "synth bag", progress)
    pool = _pool(workers) if workers > 1 and n_frames > 1 else None
    try:
        with Writer(staging / target.name, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = _add_connections(writer, store)

            def write(key: str, stamp: int, msg: Any) -> None:
                writer.write(conns[key], stamp, store.serialize_cdr(msg, BAG_TOPICS[key][1]))

            _write_custom_data(writer, job, onto, drive_scene(job))
            write("tf_static", BAG_START_NS, messages.transform(BAG_START_NS, rig.base_frame, rig.camera_frame, rig.T_base_cam))
            tasks = [(job, i) for i in range(n_frames)]
            frames = pool.imap(_render_drive_frame, tasks, chunksize=1) if pool else map(_render_drive_frame, tasks)
            for i, (frame, heights) in enumerate(frames):
                stamp = BAG_START_NS + round(i * 1e9 / fps)
                for key, msg in messages.frame_messages(stamp, frame, job.grid, heights):
                    write(key, stamp, msg)
                bar.update(1)
        write_mcap_chunk_crcs(staging / target.name)
        if target.exists():
            shutil.rmtree(target)
        (staging / target.name).rename(target)
    finally:
        bar.close()
        if pool is not None:  # every result was consumed on success; on failure stop the rest now
            pool.terminate()
            pool.join()
        shutil.rmtree(staging, ignore_errors=True)
    return target
