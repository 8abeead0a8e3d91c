"""Damage a real MCAP bag, as disks, copies and misconfigured drivers do, to test what the readers make of it.

The in-place damages find a stored message by its bytes (read back with
bagio.iter_raw) in the bag's .mcap file and change the file there. The
message record layout is MCAP's: opcode 0x05 (1 byte), record length (8),
channel id (2), sequence (4), log time (8), publish time (8), then the data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.bags import bagio

CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
MESSAGE_OPCODE = 0x05
MESSAGE_HEAD = 1 + 8 + 2 + 4 + 8 + 8


def _mcap(bag: Path) -> Path:
    return next(bag.glob("*.mcap")) if bag.is_dir() else bag


def _message_offsets(bag: Path, topic: str, indices: tuple[int, ...]) -> tuple[Path, bytearray, list[tuple[int, int]]]:
    """(mcap file, its bytes, [(offset, size) of the data of message i on ``topic``] for i in ``indices``)."""
    stored = [m.data for m in bagio.iter_raw(bag, [topic])]
    mcap = _mcap(bag)
    blob = bytearray(mcap.read_bytes())
    found = []
    for index in indices:
        at = blob.find(stored[index])
        if at < MESSAGE_HEAD or blob[at - MESSAGE_HEAD] != MESSAGE_OPCODE:
            raise ValueError(f"{mcap}: message {index} of {topic} is not stored as a plain MCAP message record")
        found.append((at, len(stored[index])))
    return mcap, blob, found


def clear_chunk_crcs(bag: Path) -> int:
    """Set every chunk's CRC to 0 ("not computed"), as bags written by rosbags alone have it; returns the count."""
    cleared = 0
    with _mcap(bag).open("r+b") as f:
        for opcode, start, _ in bagio.mcap_records(f):
            if opcode == bagio.MCAP_CHUNK:
                f.seek(start + bagio.CHUNK_CRC_OFFSET)
                f.write(bytes(4))
                cleared += 1
    return cleared


def zero_record_opcodes(bag: Path, topic: str, *indices: int) -> None:
    """Zero the first byte of these message records of ``topic``: readers take them for unknown records and skip them."""
    mcap, blob, found = _message_offsets(bag, topic, indices)
    for at, _ in found:
        blob[at - MESSAGE_HEAD] = 0
    mcap.write_bytes(bytes(blob))


def flip_message_bit(bag: Path, topic: str, index: int) -> None:
    """Flip one bit in the middle of one message's stored data (e.g. an image's pixels)."""
    mcap, blob, [(at, size)] = _message_offsets(bag, topic, (index,))
    blob[at + size // 2] ^= 0x10
    mcap.write_bytes(bytes(blob))


def rewrite_camera_info(bag: Path, out: Path, edit: Callable[[Any], None]) -> Path:
    """Copy ``bag`` to a new bag ``out`` with ``edit(msg)`` applied to every sensor_msgs/CameraInfo message.

    Everything else (topics, timestamps, other messages' bytes, custom metadata) is kept.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    summary = bagio.summarize_bag(bag)
    typestore = bagio.make_typestore()
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for key, value in summary.custom_data.items():
            writer.set_custom_data(key, value)
        connections = {t: writer.add_connection(t, s.msgtype, typestore=typestore) for t, s in summary.topics.items()}
        for message in bagio.iter_raw(bag):
            data = message.data
            if message.msgtype == CAMERA_INFO:
                info = bagio.deserialize(message, typestore)
                info.k = np.array(info.k, dtype=np.float64)  # decoded arrays are read-only views
                edit(info)
                data = typestore.serialize_cdr(info, CAMERA_INFO)
            writer.write(connections[message.topic], message.timestamp_ns, data)
    return out
