"""Camera frames out of a bag: image + camera_info + optional ground-truth depth/labels, grouped by stamp.

Shared by eval-bag (offline) and the scorer of recorded live outputs, so both
see the same frames and the same ground truth. No ROS import.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_tools.bags.bagio import BagSummary, ReadTally, deserialize, iter_raw, make_typestore, require_topics
from perception_core.errors import BagError, ImageEncodingError
from perception_core.geometry import stamp_ns

# How many stamps may wait for their missing parts before the oldest is given up on.
PENDING_LIMIT = 8


@dataclass(frozen=True)
class FrameTopics:
    """Topic names of one camera's data in a bag (defaults: model_tools.data.synth's drive bags)."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    gt_depth: str = "/ground_truth/depth"
    gt_labels: str = "/ground_truth/labels"
    gt_elevation: str = "/ground_truth/elevation"  # organised PointCloud2 of the terrain height per cell


DEFAULT_TOPICS = FrameTopics()


@dataclass
class BagFrame:
    """One camera frame and what the bag knows about it."""

    index: int
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray  # [H, W, 3] uint8 RGB
    k_matrix: np.ndarray  # 3x3 of the camera_info
    info_hw: tuple[int, int]  # (height, width) that K refers to
    gt_depth: np.ndarray | None  # [H, W] float32 metres, 0/NaN invalid
    gt_labels: np.ndarray | None  # [H, W] uint8 class ids, 255 ignore
    gt_elevation: np.ndarray | None = None  # [rows, cols, 3] float32 x, y, terrain z per cell, in the base frame


def gt_topics_in(summary: BagSummary, topics: FrameTopics) -> list[str]:
    """The ground-truth topics this bag actually holds messages on."""
    return [t for t in (topics.gt_depth, topics.gt_labels, topics.gt_elevation)
            if t in summary.topics and summary.topics[t].count > 0]


def image_array(msg: Any, topic: str, encoding: str = "passthrough") -> np.ndarray:
    """Pixels of a rosbags Image via the project's codec; errors name the topic."""
    from perception_core.image_codec import image_to_array

    try:
        return np.asarray(image_to_array(msg, desired_encoding=encoding))
    except ImageEncodingError as err:
        raise ImageEncodingError(f"{topic}: {err}") from err


def iter_frames(
    bag: str | os.PathLike[str],
    summary: BagSummary,
    topics: FrameTopics = DEFAULT_TOPICS,
    require_gt: bool = False,
    tally: ReadTally | None = None,
) -> Iterator[BagFrame]:
    """Yield frames in stamp order. A frame needs an image and a camera_info; GT is attached when present.

    The camera_info is attached as stored (its own, else the latest before it);
    judging it is the consumer's part (geometry.camera_info_problem).

    When the bag turns out damaged, the frames already assembled from what
    was read are yielded before the error. ``tally`` receives the per-topic
    message counts (see bagio.iter_raw).

    Raises:
        BagError: the bag lacks the camera topics (or GT topics with ``require_gt``), is corrupt, or
            messages its index lists could not be read.
    """
    require_topics(summary, [topics.image, topics.camera_info], purpose="as camera input")
    gt_topics = gt_topics_in(summary, topics)
    if require_gt:
        require_topics(summary, [topics.gt_depth, topics.gt_labels], purpose="as ground truth")
    typestore = make_typestore()
    pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
    latest_info: Any = None
    index = 0

    def build(stamp: int, parts: dict[str, Any]) -> BagFrame:
        nonlocal index
        image = parts[topics.image]
        info = parts.get(topics.camera_info, latest_info)
        gt_depth = gt_labels = None
        if topics.gt_depth in parts:
            gt_depth = image_array(parts[topics.gt_depth], topics.gt_depth).astype(np.float32, copy=False)
        if topics.gt_labels in parts:
            gt_labels = image_array(parts[topics.gt_labels], topics.gt_labels)
        gt_elevation = None
        if topics.gt_elevation in parts:
            from perception_core.pipelines import unpack_xyz

            gt_elevation = unpack_xyz(parts[topics.gt_elevation], topics.gt_elevation)
        frame = BagFrame(
            index=index,
            stamp_ns=stamp,
            frame_id=str(image.header.frame_id),
            rgb=image_array(image, topics.image, "rgb8"),
            k_matrix=np.asarray(info.k, dtype=np.float64).reshape(3, 3),
            info_hw=(int(info.height), int(info.width)),
            gt_depth=gt_depth,
            gt_labels=gt_labels,
            gt_elevation=gt_elevation,
        )
        index += 1
        return frame

    broken: BagError | None = None
    try:
        for raw in iter_raw(bag, topics=[topics.image, topics.camera_info, *gt_topics], tally=tally):
            msg = deserialize(raw, typestore)
            stamp = stamp_ns(msg.header)
            if raw.topic == topics.camera_info:
                latest_info = msg
            parts = pending.setdefault(stamp, {})
            parts[raw.topic] = msg
            if topics.image in parts and (latest_info is not None) and all(t in parts for t in gt_topics):
                # Stamps older than a complete frame can no longer complete: emit those with an image.
                for old in [s for s in pending if s < stamp]:
                    old_parts = pending.pop(old)
                    if topics.image in old_parts and latest_info is not None:
                        yield build(old, old_parts)
                yield build(stamp, pending.pop(stamp))
            while len(pending) > PENDING_LIMIT:
                old, old_parts = pending.popitem(last=False)
                if topics.image in old_parts and latest_info is not None:
                    yield build(old, old_parts)
    except BagError as err:  # keep what was read: the frames still pending are yielded first
        broken = err
    for stamp, parts in pending.items():
        if topics.image in parts and latest_info is not None:
            yield build(stamp, parts)
    if broken is not None:
        raise broken
