"""Decode a training set once into a memory-mapped uint8 frame cache, and make batches from it on the device.

The worker loader decodes every PNG/JPEG again in every epoch and augments
each sample on a CPU core; at the recipe's batch of 8 that costs more than
the GPU step. The cache holds every training frame after the transform's
deterministic part (a leading ``Resize``), shrunk to fit ``max_hw`` when
larger, as fixed-size slots in flat files:

    <folder>/meta.json      format, key, count, slot size, what is stored
    <folder>/sizes.npy      int32 [N, 4]: cached h, w; source h, w (the size the transforms see)
    <folder>/image.u8       uint8 [N, H, W, 3] RGB, frame in the top-left corner of its slot
    <folder>/label.u8       uint8 [N, H, W] (255 = ignore, also outside the frame)
    <folder>/depth.f32      float32 [N, H, W] metres, 0 = invalid (data sets read with depth only)

``meta.json`` is written last; a folder without it (a killed build) or with
another key (other files, sizes or settings) is built again. The key hashes
every sample's file paths, sizes and modification times, the prefix and the
slot limit.

:class:`CachedBatches` then makes each training batch: the sampler's
indices, per-sample draws from ``np.random.default_rng([seed, epoch,
index])`` (a pure function of the sample, so resume stays exact), one
gather from the cache (kept in device memory when it fits) and
:class:`~model_tools.data.batch_augment.BatchAugment` on the device.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from model_tools.data.batch_augment import BatchAugment, UnsupportedAugmentationError, to_device
from model_tools.data.datasets import IGNORE_INDEX, MultiSourceDataset, SegDepthDataset, loader_worker_init
from model_tools.data.transforms import Resize
from perception_core.errors import DataError

CACHE_FORMAT = "model_tools.frame_cache.v1"


@dataclass
class CachePlan:
    """What to cache of a data set: its per-source parts, the transform's fixed prefix and batched tail."""

    sources: list[tuple[SegDepthDataset, int]]  # (data set, offset of its first sample)
    prefix: list[Resize]
    augment: BatchAugment
    with_depth: bool
    policy: str
    # Per-sample values a wrapper adds to each item (tasks.depth.FrameCameras: focal_px, camera_height_m),
    # by the combined set's index; they travel with each batch unchanged by the augmentation.
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(d) for d, _ in self.sources)

    def locate(self, index: int) -> tuple[SegDepthDataset, int]:
        """(source data set, its own index) of a sample of the combined set."""
        for source, offset in reversed(self.sources):
            if index >= offset:
                return source, index - offset
        raise IndexError(index)


def plan_cache(dataset: Dataset) -> CachePlan:
    """How ``dataset`` is cached and augmented in batches; UnsupportedAugmentationError says why it cannot be.

    A wrapper with ``item_extras(path) -> {key: float}`` (``tasks.depth.FrameCameras``) around a data set
    is looked through: its values are looked up once per sample and added to every batch.
    """
    wrapper = dataset if hasattr(dataset, "item_extras") else None
    if wrapper is not None:
        dataset = wrapper.dataset
    if isinstance(dataset, MultiSourceDataset):
        parts = list(zip(dataset.datasets, (int(o) for o in dataset.offsets[:-1]), strict=True))
    elif isinstance(dataset, SegDepthDataset):
        parts = [(dataset, 0)]
    else:
        raise UnsupportedAugmentationError(f"{type(dataset).__name__} is not a file-backed data set (SegDepthDataset)")
    plans = []
    for source, _ in parts:
        if source.transform is None:
            raise UnsupportedAugmentationError(f"{source.source} has no training transform")
        plans.append(BatchAugment.split(source.transform))
    described = {repr(_describe(prefix, augment)) for prefix, augment in plans}
    if len(described) != 1:
        raise UnsupportedAugmentationError("the sources have different training transforms")
    depth = {source.with_depth for source, _ in parts}
    policies = {source.policy for source, _ in parts}
    if len(depth) != 1 or len(policies) != 1:
        raise UnsupportedAugmentationError("the sources differ in with_depth or policy")
    prefix, augment = plans[0]
    extras: dict[str, np.ndarray] = {}
    if wrapper is not None:
        rows = [wrapper.item_extras(str(files.image)) for source, _ in parts for files in source.samples]
        extras = {key: np.array([row[key] for row in rows], np.float32) for key in (rows[0] if rows else {})}
    return CachePlan(parts, prefix, augment, depth.pop(), policies.pop(), extras)


def _describe(prefix: list[Resize], augment: BatchAugment) -> list[tuple[str, dict[str, Any]]]:
    return [(type(t).__name__, dict(vars(t))) for t in [*prefix, *augment.ops]]


def slot_limit(plan: CachePlan, max_hw: tuple[int, int]) -> tuple[int, int]:
    """The largest cached frame: ``max_hw``, or (0, 0) = twice the crop (frames sized by a Resize keep their size)."""
    if plan.prefix:
        return plan.prefix[-1].height, plan.prefix[-1].width
    if max_hw[0] > 0 and max_hw[1] > 0:
        return max_hw
    out_h, out_w = plan.augment.out_hw  # type: ignore[misc]
    return 2 * out_h, 2 * out_w


def cache_key(plan: CachePlan, limit: tuple[int, int]) -> str:
    """Hash of every sample's files (path, size, mtime), the prefix, the slot limit and what is stored."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, list(limit), plan.with_depth, plan.policy,
                              repr(_describe(plan.prefix, plan.augment)[: len(plan.prefix)])]).encode())
    for source, _ in plan.sources:
        for files in source.samples:
            for path in (files.image, files.label, files.depth):
                if path is None:
                    digest.update(b"-")
                    continue
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def slot_size(plan: CachePlan, limit: tuple[int, int]) -> tuple[int, int]:
    """The slot: the largest frame once fitted into ``limit`` (sizes from the image headers, no decoding)."""
    if plan.prefix:
        return limit
    from PIL import Image

    slot = (1, 1)
    for source, _ in plan.sources:
        for files in source.samples:
            try:
                with Image.open(files.image) as image:
                    w, h = image.size
            except OSError as err:
                raise DataError(f"image file {files.image} is not a readable image: {err}") from err
            ch, cw = _fitted(h, w, limit)
            slot = (max(slot[0], ch), max(slot[1], cw))
    return slot


def _fitted(h: int, w: int, box: tuple[int, int]) -> tuple[int, int]:
    """h x w shrunk (never enlarged) to fit ``box``, keeping the aspect ratio."""
    scale = min(1.0, box[0] / h, box[1] / w)
    return max(1, min(box[0], round(h * scale))), max(1, min(box[1], round(w * scale)))


class _Decode(Dataset):
    """Loader-worker job: one sample decoded, its fixed prefix applied, shrunk to fit the slot."""

    def __init__(self, plan: CachePlan, slot: tuple[int, int]) -> None:
        self.plan, self.slot = plan, slot

    def __len__(self) -> int:
        return self.plan.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        import cv2

        source, local = self.plan.locate(index)
        sample = source.load_raw(local)
        for transform in self.plan.prefix:
            sample = transform(sample, None)
        image = sample["image"]
        if image.dtype != np.uint8:
            raise DataError(f"{source.source}: the frame cache holds 8-bit images; sample {index} is {image.dtype}")
        h, w = image.shape[:2]
        ch, cw = _fitted(h, w, self.slot)
        out = {"index": index, "source_hw": (h, w), "image": image, "label": sample["label"], "depth": sample.get("depth")}
        if (ch, cw) != (h, w):  # area averaging for the image (no aliasing), nearest for labels and depth (no blending)
            out["image"] = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA)
            out["label"] = cv2.resize(sample["label"], (cw, ch), interpolation=cv2.INTER_NEAREST)
            if out["depth"] is not None:
                out["depth"] = cv2.resize(out["depth"], (cw, ch), interpolation=cv2.INTER_NEAREST)
        return out


class FrameCache:
    """An opened frame cache: memory-mapped arrays plus per-frame sizes (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.folder, self.meta = folder, meta
        n, h, w = meta["count"], meta["slot_h"], meta["slot_w"]
        self.sizes = np.load(folder / "sizes.npy")
        self.image = np.memmap(folder / "image.u8", np.uint8, "c", shape=(n, h, w, 3))
        self.label = np.memmap(folder / "label.u8", np.uint8, "c", shape=(n, h, w))
        self.depth = np.memmap(folder / "depth.f32", np.float32, "c", shape=(n, h, w)) if meta["with_depth"] else None

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.image, self.label, self.depth) if a is not None)

    @classmethod
    def build_or_open(cls, plan: CachePlan, folder: Path, max_hw: tuple[int, int], workers: int,
                      log: Callable[[str], None] = print, progress: bool = True) -> FrameCache:
        """Open the cache in ``folder`` if it matches ``plan``; else decode the data set into it (in parallel).

        Holds an exclusive lock on ``<folder>.lock`` meanwhile, so runs that
        share a cache folder build it once.
        """
        import fcntl

        limit = slot_limit(plan, max_hw)
        key = cache_key(plan, limit)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _stored_key(folder) == key:
                return cls(folder)
            if folder.exists():
                log(f"train: frame cache {folder} is unfinished or for other data or settings; building it again")
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            cls._write(folder, plan, key, slot_size(plan, limit), workers, progress, log)
            return cls(folder)

    @classmethod
    def open_matching(cls, plan: CachePlan, folder: Path, max_hw: tuple[int, int]) -> FrameCache:
        """Open the cache in ``folder``; DataError if it is missing, unfinished or for other data or settings."""
        if _stored_key(folder) != cache_key(plan, slot_limit(plan, max_hw)):
            raise DataError(f"frame cache {folder} is missing, unfinished, or for other data or settings")
        return cls(folder)

    @staticmethod
    def _write(folder: Path, plan: CachePlan, key: str, slot: tuple[int, int], workers: int, progress: bool,
               log: Callable[[str], None]) -> None:
        n, (slot_h, slot_w) = plan.count, slot
        image = np.memmap(folder / "image.u8", np.uint8, "w+", shape=(n, slot_h, slot_w, 3))
        label = np.memmap(folder / "label.u8", np.uint8, "w+", shape=(n, slot_h, slot_w))
        depth = np.memmap(folder / "depth.f32", np.float32, "w+", shape=(n, slot_h, slot_w)) if plan.with_depth else None
        sizes = np.zeros((n, 4), np.int32)
        for frame in _decoded_frames(plan, slot, workers, progress):
            i, (h, w) = frame["index"], frame["image"].shape[:2]
            image[i, :h, :w] = frame["image"]
            label[i] = IGNORE_INDEX
            label[i, :h, :w] = frame["label"]
            if depth is not None and frame["depth"] is not None:
                depth[i, :h, :w] = frame["depth"]
            sizes[i] = (h, w, *frame["source_hw"])
        for array in (image, label, depth):
            if array is not None:
                array.flush()
        np.save(folder / "sizes.npy", sizes)
        meta = {"format": CACHE_FORMAT, "key": key, "count": n, "slot_h": slot_h, "slot_w": slot_w,
                "with_depth": plan.with_depth}
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(folder / "meta.json")  # last: a folder without it is an unfinished build
        total = image.nbytes + label.nbytes + (depth.nbytes if depth is not None else 0)
        log(f"train: frame cache {folder}: {n} frames in {slot_h}x{slot_w} slots, {total / 2**30:.2f} GiB")


def _stored_key(folder: Path) -> str | None:
    """The key of a finished cache in ``folder``, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("key") if meta.get("format") == CACHE_FORMAT else None


def _decoded_frames(plan: CachePlan, slot: tuple[int, int], workers: int, progress: bool) -> Iterator[dict[str, Any]]:
    """Every sample decoded by ``workers`` loader processes, in index order."""
    loader = DataLoader(_Decode(plan, slot), batch_size=None, shuffle=False, num_workers=workers,
                        worker_init_fn=loader_worker_init if workers > 0 else None, collate_fn=_as_is,
                        prefetch_factor=4 if workers > 0 else None)
    frames: Any = loader
    if progress:
        from tqdm import tqdm

        frames = tqdm(loader, total=plan.count, desc="frame cache", unit="frame", dynamic_ncols=True)
    yield from frames


def _as_is(item: Any) -> Any:
    return item


class CachedBatches:
    """Endless training batches from a :class:`FrameCache`, augmented as whole batches on ``device``.

    ``sampler`` is the engine's endless ResumableSampler (it yields
    ``(index, sample seed, epoch)``); every batch is ``batch_size`` of its
    items, so batches never straddle epochs and resume starts at a batch.
    """

    def __init__(self, cache: FrameCache, augment: BatchAugment, sampler: Any, batch_size: int, seed: int,
                 device: torch.device, *, on_device: bool, channels_last: bool = False,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        self.cache, self.augment, self.sampler = cache, augment, sampler
        self.batch_size, self.seed, self.device, self.channels_last = batch_size, seed, device, channels_last
        self.on_device = on_device and device.type == "cuda"
        self._items: Iterator[tuple[int, int, int]] | None = None
        arrays = {"image": cache.image, "label": cache.label, "depth": cache.depth}
        if self.on_device:
            # One upload; every gather is then an index_select in device memory.
            self.arrays = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in arrays.items() if v is not None}
        else:
            self.arrays = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if v is not None}
        self.extras = {k: torch.from_numpy(v).to(device) for k, v in extras.items()} if extras else {}

    def __iter__(self) -> CachedBatches:
        self._items = iter(self.sampler)
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._items is None:
            self._items = iter(self.sampler)
        items = [next(self._items) for _ in range(self.batch_size)]
        indices = np.array([index for index, _, _ in items], np.int64)
        rngs = [np.random.default_rng([self.seed, epoch, index]) for index, _, epoch in items]
        sizes = self.cache.sizes[indices]
        draws = self.augment.draw(rngs, sizes[:, 2:4])
        gathered = self._gather(indices)
        out = self.augment.apply(gathered["image"], gathered.get("label"), gathered.get("depth"), draws,
                                 sizes[:, 0:2], sizes[:, 2:4])
        if self.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        if self.extras:
            where = to_device(indices, self.device)
            out.update({key: values.index_select(0, where) for key, values in self.extras.items()})
        return out

    def _gather(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch's slots on the device: an index_select in device memory, or a pinned host gather and copy."""
        if self.on_device:
            where = to_device(indices, self.device)
            return {k: v.index_select(0, where) for k, v in self.arrays.items()}
        order = torch.from_numpy(indices)
        out = {}
        for key, array in self.arrays.items():
            batch = array.index_select(0, order)
            if self.device.type == "cuda":
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            out[key] = batch
        return out


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` is at most half of the device's free memory (the rest is for training)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2
