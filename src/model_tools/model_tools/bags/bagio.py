"""Open, validate, read and seal rosbag2 files; one typestore that knows perception_msgs.

Every rosbags failure (missing file, bad metadata, truncated or corrupt
storage) is translated here into a ``BagError`` naming the bag, so replay,
recorder and eval-bag report the same clear one-line errors. No ROS import:
the rclpy message classes are looked up lazily by ``message_class``.

Integrity: ``iter_raw`` counts the messages it reads per topic against the
bag's own index and raises a ``BagError`` with the count of those it could not
read, so a damaged region is never skipped without a word. Bags the project
writes get chunk CRCs (``write_mcap_chunk_crcs``), so a reader detects a
flipped bit instead of returning wrong bytes.
"""

from __future__ import annotations

import functools
import importlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from perception_core.errors import BagError, ConfigError
from perception_core.geometry import OPTICAL_TO_BODY, rpy_from_rotation, transform_matrix
from perception_core.resources import package_share

PERCEPTION_MSGS = "perception_msgs"


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: its ROS type and how many messages it holds."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagSummary:
    """What a bag holds, read from its metadata/summary without reading messages."""

    path: Path
    topics: dict[str, TopicSummary]
    start_ns: int
    end_ns: int
    message_count: int
    custom_data: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def msgtype(self, topic: str) -> str:
        require_topics(self, [topic])
        return self.topics[topic].msgtype


@dataclass(frozen=True)
class RawMessage:
    """One stored message: CDR bytes as rosbag2 and the rmw hold them."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass
class ReadTally:
    """Messages one reading pass got per topic, against what the bag's index says it holds (filled by iter_raw)."""

    expected: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)

    def unread(self) -> dict[str, int]:
        """Topic -> messages the index lists that were not read."""
        return {t: n - self.read.get(t, 0) for t, n in self.expected.items() if n > self.read.get(t, 0)}

    def describe(self) -> str:
        """E.g. ``2 of 40 messages could not be read (/camera/image_raw 1 of 10, /ground_truth/depth 1 of 10)``."""
        unread = self.unread()
        per_topic = ", ".join(f"{t} {n} of {self.expected[t]}" for t, n in sorted(unread.items()))
        return (f"{sum(unread.values())} of {sum(self.expected.values())} messages could not be read"
                + (f" ({per_topic})" if per_topic else ""))


def _translate(path: Path, err: BaseException, doing: str, lost: str = "") -> BagError:
    return BagError(f"bag {path}: {doing} failed, the bag is truncated, corrupt or not a rosbag2 "
                    f"({type(err).__name__}: {err}){lost}")


@contextmanager
def open_bag(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open a rosbag2 (directory with metadata.yaml, or a bare .mcap/.db3 file) for reading.

    Raises:
        BagError: the path is missing, or the bag cannot be opened.
    """
    from rosbags.rosbag2 import Reader

    bag_path = Path(path)
    if not bag_path.exists():
        raise BagError(f"bag {bag_path} does not exist")
    try:
        reader = Reader(bag_path)
        reader.open()
    except Exception as err:  # rosbags raises many kinds on bad files; all mean "unreadable bag"
        raise _translate(bag_path, err, "opening") from err
    try:
        yield reader
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing a broken bag must not hide the first error
            pass


def summarize_bag(path: str | os.PathLike[str]) -> BagSummary:
    """Topics, counts, time span and custom metadata of a bag."""
    bag_path = Path(path)
    with open_bag(bag_path) as reader:
        try:
            topics = {
                name: TopicSummary(name, info.msgtype or "", int(info.msgcount)) for name, info in reader.topics.items()
            }
            custom = getattr(getattr(reader.storage, "metadata", None), "custom", None) or {}
            return BagSummary(
                path=bag_path,
                topics=topics,
                start_ns=int(reader.start_time) if reader.message_count else 0,
                end_ns=int(reader.end_time) if reader.message_count else 0,
                message_count=int(reader.message_count),
                custom_data={str(k): str(v) for k, v in dict(custom).items()},
            )
        except Exception as err:  # see open_bag
            raise _translate(bag_path, err, "reading the summary") from err


def require_topics(summary: BagSummary, topics: Iterable[str], purpose: str = "") -> None:
    """Raise a BagError naming the bag and each required topic it lacks (or holds no message on)."""
    missing = [t for t in topics if t not in summary.topics or summary.topics[t].count == 0]
    if missing:
        why = f" (needed {purpose})" if purpose else ""
        have = ", ".join(sorted(summary.topics)) or "none"
        raise BagError(f"bag {summary.path} has no messages on topic(s) {', '.join(missing)}{why}; it has: {have}")


def iter_raw(
    path: str | os.PathLike[str],
    topics: Iterable[str] | None = None,
    start_ns: int | None = None,
    stop_ns: int | None = None,
    tally: ReadTally | None = None,
) -> Iterator[RawMessage]:
    """Yield the bag's messages in timestamp order, optionally only some topics.

    Reading stops at the first part of the storage that cannot be read (a
    chunk whose CRC or structure is wrong). A full pass (no ``start_ns`` /
    ``stop_ns``) that read fewer messages than the bag's index lists raises
    too: a damaged region that the storage reader skipped silently is
    reported, with the count per topic. ``tally`` (optional) receives the
    counts, for callers that report them.

    Raises:
        BagError: a requested topic is absent, the bag is corrupt while reading,
            or messages the index lists could not be read (counts in the message).
    """
    bag_path = Path(path)
    wanted = None if topics is None else list(topics)
    with open_bag(bag_path) as reader:
        if wanted is not None:
            absent = [t for t in wanted if t not in reader.topics]
            if absent:
                raise BagError(f"bag {bag_path} has no topic(s) {', '.join(absent)}; it has: {', '.join(sorted(reader.topics))}")
            connections = [c for c in reader.connections if c.topic in wanted]
        else:
            connections = list(reader.connections)
        tally = tally if tally is not None else ReadTally()
        full_pass = start_ns is None and stop_ns is None
        names = {c.topic for c in connections}
        tally.expected = {t: int(reader.topics[t].msgcount) for t in sorted(names)} if full_pass else {}
        tally.read = dict.fromkeys(sorted(names), 0)
        index = 0
        try:
            for connection, timestamp, data in reader.messages(connections=connections, start=start_ns, stop=stop_ns):
                index += 1
                tally.read[connection.topic] += 1
                yield RawMessage(connection.topic, connection.msgtype, int(timestamp), bytes(data))
        except BagError:
            raise
        except GeneratorExit:
            raise
        except Exception as err:  # see open_bag
            lost = f"; {tally.describe()}" if tally.expected else ""
            raise _translate(bag_path, err, f"reading message {index + 1}", lost) from err
        if tally.unread():
            raise BagError(f"bag {bag_path}: {tally.describe()}: the storage skipped a damaged region without an "
                           "error (the bag is corrupt)")


# MCAP (https://mcap.dev/spec): magic, then records of opcode (u8) + content length (u64 LE) + content.
MCAP_MAGIC = b"\x89MCAP0\r\n"
MCAP_CHUNK = 0x06
MCAP_DATA_END = 0x0F
_RECORD_HEAD = struct.Struct("<BQ")
# Chunk content: message_start_time u64, message_end_time u64, uncompressed_size u64, uncompressed_crc u32, ...
CHUNK_CRC_OFFSET = 24


def mcap_records(f: BinaryIO) -> Iterator[tuple[int, int, int]]:
    """(opcode, content offset, content length) of each record of an open .mcap file's data section.

    Leaves ``f`` positioned at each record's content while the caller handles it.

    Raises:
        BagError: the file does not start with the MCAP magic, or a record header is cut short.
    """
    f.seek(0)
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise BagError(f"{getattr(f, 'name', 'file')}: not an MCAP file (bad magic)")
    while head := f.read(_RECORD_HEAD.size):
        if len(head) < _RECORD_HEAD.size:
            raise BagError(f"{getattr(f, 'name', 'file')}: record header cut short at byte {f.tell() - len(head)}")
        opcode, length = _RECORD_HEAD.unpack(head)
        start = f.tell()
        if opcode == MCAP_DATA_END:
            return
        yield opcode, start, length
        f.seek(start + length)


def write_mcap_chunk_crcs(bag: str | os.PathLike[str]) -> int:
    """Fill in the CRC-32 of every uncompressed chunk of the bag's .mcap files; returns how many were set.

    rosbags' MCAP writer leaves each chunk's ``uncompressed_crc`` at 0 (the
    spec's "not computed"), so a reader cannot tell a flipped bit from data.
    Readers that check it (rosbags, ros2 bag, the mcap tools) then refuse a
    damaged chunk. Call it on a closed bag, before it is moved into place.

    Raises:
        BagError: a .mcap file does not follow the MCAP record layout, or has compressed chunks.
    """
    bag_path = Path(bag)
    files = [bag_path] if bag_path.suffix == ".mcap" else sorted(bag_path.glob("*.mcap"))
    written = 0
    for mcap in files:
        with mcap.open("r+b") as f:
            for opcode, start, length in mcap_records(f):
                if opcode != MCAP_CHUNK:
                    continue
                content = f.read(length)
                name_length = struct.unpack_from("<I", content, CHUNK_CRC_OFFSET + 4)[0]
                compression = content[CHUNK_CRC_OFFSET + 8:CHUNK_CRC_OFFSET + 8 + name_length]
                if compression:
                    raise BagError(f"{mcap}: chunk at byte {start} is {compression.decode()}-compressed; only "
                                   "uncompressed chunks get CRCs here")
                records_at = CHUNK_CRC_OFFSET + 8 + name_length + 8
                f.seek(start + CHUNK_CRC_OFFSET)
                f.write(struct.pack("<I", zlib.crc32(content[records_at:])))
                written += 1
    return written


def perception_msg_files() -> list[Path]:
    """The installed perception_msgs .msg files (ament index); none outside a built workspace."""
    try:
        return sorted((package_share(PERCEPTION_MSGS) / "msg").glob("*.msg"))
    except ConfigError:
        return []


@functools.lru_cache(maxsize=1)
def make_typestore() -> Any:
    """A rosbags typestore for ROS 2 Jazzy plus perception_msgs, so bags we write are self-describing."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for msg_file in perception_msg_files():
        types.update(get_types_from_msg(msg_file.read_text(), f"{PERCEPTION_MSGS}/msg/{msg_file.stem}"))
    if types:
        typestore.register(types)
    return typestore


def deserialize(message: RawMessage, typestore: Any | None = None) -> Any:
    """Decode a stored message into a rosbags message object (fields as in ROS)."""
    store = typestore or make_typestore()
    try:
        return store.deserialize_cdr(message.data, message.msgtype)
    except Exception as err:  # any decode failure means a corrupt or mistyped message
        raise BagError(
            f"message on topic {message.topic} at t={message.timestamp_ns} ns does not decode as {message.msgtype} "
            f"({type(err).__name__}: {err})"
        ) from err


def message_class(msgtype: str) -> type | None:
    """The rclpy message class for 'pkg/msg/Type', or None where that package is not installed here."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError:
        return None
    return getattr(module, name, None)


# --------------------------------------------------------------------------- camera mount

MOUNT_FIELDS = ("mount_x", "mount_y", "mount_z", "mount_roll", "mount_pitch", "mount_yaw")
# custom_data key under which our bags store the camera mount (a YAML/JSON mapping of MOUNT_FIELDS).
MOUNT_CUSTOM_KEY = "camera_mount"
TF_STATIC = "/tf_static"


def _mount_from_mapping(values: dict[str, Any], where: str) -> dict[str, float]:
    mount: dict[str, float] = {}
    for name in MOUNT_FIELDS:
        for key in (name, name.removeprefix("mount_")):
            if key in values:
                try:
                    mount[name] = float(values[key])
                except (TypeError, ValueError) as err:
                    raise BagError(f"{where}: camera mount field {key!r} is not a number ({values[key]!r})") from err
                break
        else:
            raise BagError(f"{where}: camera mount lacks field {name!r} (has {', '.join(sorted(values))})")
    return mount


def mount_from_transform(rotation: Any, translation: Any, optical: bool) -> dict[str, float]:
    """Mount fields (x, y, z, roll, pitch, yaw of the camera body frame) from a parent->camera transform.

    ``optical`` says the child frame is an optical frame (z forward, x right,
    y down), whose rotation is converted to the body frame (x fwd, y left, z up)
    that perception_core.costmap's mount convention uses.
    """
    import numpy as np

    rot = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    if optical:
        rot = rot @ OPTICAL_TO_BODY.T  # R_optical = R_body @ OPTICAL_TO_BODY
    roll, pitch, yaw = rpy_from_rotation(rot)
    x, y, z = (float(v) for v in np.asarray(translation, dtype=np.float64).reshape(3))
    return dict(zip(MOUNT_FIELDS, (x, y, z, roll, pitch, yaw), strict=True))


def camera_mount_from_bag(
    path: str | os.PathLike[str], camera_frame: str | None = None, base_frame: str = "base_link"
) -> dict[str, float] | None:
    """The camera mount recorded in a bag, as costmap mount fields; None when the bag has none.

    Looks at the bag's custom metadata (key ``camera_mount``) first, then at a
    /tf_static transform ``base_frame`` -> ``camera_frame`` (decoded with
    rosbags, so tf2_msgs need not be installed). With no ``camera_frame``, the
    first transform out of ``base_frame`` is used.
    """
    import yaml

    summary = summarize_bag(path)
    if MOUNT_CUSTOM_KEY in summary.custom_data:
        where = f"bag {summary.path} metadata custom_data[{MOUNT_CUSTOM_KEY}]"
        try:
            values = yaml.safe_load(summary.custom_data[MOUNT_CUSTOM_KEY])
        except yaml.YAMLError as err:
            raise BagError(f"{where} is not YAML/JSON: {err}") from err
        if not isinstance(values, dict):
            raise BagError(f"{where} is not a mapping: {values!r}")
        return _mount_from_mapping(values, where)
    if TF_STATIC not in summary.topics:
        return None
    for raw in iter_raw(path, topics=[TF_STATIC]):
        message = deserialize(raw)
        for stamped in message.transforms:
            parent = stamped.header.frame_id.lstrip("/")
            child = stamped.child_frame_id.lstrip("/")
            if parent != base_frame or (camera_frame is not None and child != camera_frame):
                continue
            tr = stamped.transform
            return mount_from_transform(
                transform_matrix(tr)[:3, :3],
                (tr.translation.x, tr.translation.y, tr.translation.z),
                optical="optical" in child,
            )
    return None


def header_stamp_from_cdr(data: bytes) -> int | None:
    """Header stamp (ns) of a serialized message whose first field is a std_msgs/Header, without decoding it.

    CDR starts with a 4-byte encapsulation header (byte 1: 0 big-, 1 little-endian),
    then Header.stamp as int32 sec and uint32 nanosec. Cheap enough to run on
    every replayed image. None when the data is too short or not plain CDR.
    """
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        return None
    order = "little" if data[1] == 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    nanosec = int.from_bytes(data[8:12], order, signed=False)
    return sec * 1_000_000_000 + nanosec
