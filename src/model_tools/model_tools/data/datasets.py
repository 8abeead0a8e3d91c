"""torch Datasets for RELLIS-3D, RUGD, GOOSE, KITTI depth, the synthetic folders, and their mix.

Every item is the batch-dict contract of ``model_tools.training.task``:
``image`` float32 [3,H,W] RGB in [0,1]; ``depth`` float32 [1,H,W] metres,
0 invalid (all 0 for a source without depth); ``label`` int64 [H,W] with
255 ignore (all 255 for a source without labels); ``source`` and ``path``.
Segmentation labels are mapped to the ontology through its lookup tables.

Bad input (missing file, unreadable image, label id or colour outside the
mapping, image/label size mismatch) raises DataError naming the file under
the default ``policy="strict"``. With ``policy="skip"`` the sample is
dropped, counted in ``.skipped`` (path, reason), warned about, and the next
sample is returned instead; missing files are found and dropped at
construction. Training never silently trains on garbage.
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from model_tools.data.readers import read_depth_png16, read_label_ids, read_rgb
from perception_core.errors import ConfigError, DataError
from perception_core.ontology import UNMAPPED, Ontology, load_ontology

IGNORE_INDEX = 255
POLICIES = ("strict", "skip")
SampleTransform = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class SampleFiles:
    image: Path
    label: Path | None = None
    depth: Path | None = None




def map_ids(ids: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """Apply an ontology lookup table; ids the ontology does not list raise DataError naming the file."""
    mapped = lut[ids]
    if (mapped == UNMAPPED).any():
        bad = sorted(int(v) for v in np.unique(ids[mapped == UNMAPPED]))
        raise DataError(f"label file {path} holds ids {bad} that the ontology does not map")
    return mapped.astype(np.uint8)


class SegDepthDataset(Dataset):
    """Base: a list of SampleFiles, a label decoder, an optional transform, and the strict/skip policy."""

    source = "base"

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        transform: SampleTransform | None = None,
        policy: str = "strict",
        seed: int | None = None,
        where: str = "",
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.transform = transform
        self.policy = policy
        self.seed = seed
        self.epoch = 0
        # Segmentation training sets this False: the depth file is then neither read, augmented nor batched.
        self.with_depth = True
        self.skipped: list[tuple[str, str]] = []
        kept = []
        for sample in samples:
            missing = [p for p in (sample.image, sample.label, sample.depth) if p is not None and not p.is_file()]
            if not missing:
                kept.append(sample)
            elif policy == "strict":
                raise DataError(f"{self.source}: file {missing[0]} is missing")
            else:
                self._record_skip(str(missing[0]), "missing file")
        if not kept:
            raise DataError(f"{self.source}: no samples found{' in ' + where if where else ''}")
        self.samples = kept

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change the seeded augmentation stream per epoch (same seed + epoch + index => same item)."""
        self.epoch = int(epoch)

    def decode_label(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def load(self, index: int) -> dict[str, Any]:
        """Raw numpy sample (image uint8 HWC RGB, depth float32 HW, label uint8 HW) before transforms."""
        files = self.samples[index]
        image = read_rgb(files.image)
        h, w = image.shape[:2]
        label = self.decode_label(files.label) if files.label is not None else np.full((h, w), IGNORE_INDEX, np.uint8)
        sample = {"image": image, "label": label, "source": self.source, "path": str(files.image)}
        if self.with_depth:
            sample["depth"] = read_depth_png16(files.depth) if files.depth is not None else np.zeros((h, w), np.float32)
        for name, path in (("label", files.label), ("depth", files.depth)):
            array = sample.get(name)
            if array is not None and array.shape[:2] != (h, w):
                raise DataError(f"{name} file {path} is {array.shape[1]}x{array.shape[0]} but image {files.image} is {w}x{h}")
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, sample = self._load_with_policy(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i]) if self.seed is not None else np.random.default_rng()
            sample = self.transform(sample, rng)
        return to_tensors(sample)

    def load_raw(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as numpy before any transform, under the strict/skip policy (what the frame cache stores)."""
        return self._load_with_policy(index)[1]

    def _load_with_policy(self, index: int) -> tuple[int, dict[str, Any]]:
        """(index actually loaded, raw sample): under ``skip`` a bad sample is replaced by the next good one."""
        attempts = len(self.samples) if self.policy == "skip" else 1
        for step in range(attempts):
            i = (index + step) % len(self.samples)
            try:
                return i, self.load(i)
            except DataError as err:
                if self.policy == "strict":
                    raise
                self._record_skip(str(self.samples[i].image), str(err))
        raise DataError(f"{self.source}: every sample failed to load (first: {self.skipped[0] if self.skipped else '?'})")

    def _record_skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))
        warnings.warn(f"{self.source}: skipped {path}: {reason} ({len(self.skipped)} skipped so far)", stacklevel=3)


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """numpy sample -> the compact batch-dict item the loader workers ship.

    image uint8 [3,H,W] (float [0,1] only if the sample was float), label
    uint8 [H,W], depth float32 [1,H,W] when present. Keeping pixels 8-bit
    until they reach the device cuts what crosses the worker -> pinned ->
    GPU path (a 544x640 segmentation item: 8.4 -> 1.4 MB);
    :func:`to_model_batch` makes the float/int64 tensors.
    """
    image = sample["image"]
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
    item = {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "label": torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.uint8)),
        "source": sample["source"],
        "path": sample["path"],
    }
    if "depth" in sample:
        item["depth"] = torch.from_numpy(np.ascontiguousarray(sample["depth"], dtype=np.float32))[None]
    return item


def loader_worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker.

    torch already limits its own threads in workers, but cv2 would start one
    thread per core in every worker (N workers x N cores), and the
    oversubscription cost several times the loader's throughput.
    """
    import cv2

    cv2.setNumThreads(1)


_CV2_THREADS_AT_FORK: list[int] = []


def _cv2_pool_down_before_fork() -> None:
    """Stop OpenCV's thread pool in the parent for the fork (see :func:`_guard_cv2_across_fork`)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        _CV2_THREADS_AT_FORK.append(cv2.getNumThreads())
        cv2.setNumThreads(1)


def _cv2_pool_up_after_fork() -> None:
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and _CV2_THREADS_AT_FORK:
        cv2.setNumThreads(_CV2_THREADS_AT_FORK.pop())


def _guard_cv2_across_fork() -> None:
    """Make forked loader workers safe after the parent used OpenCV's pthreads pool.

    A forked child inherits the pool's bookkeeping but not its threads, and
    ``cv2.setNumThreads`` there waits for them forever: a worker hung this
    way whenever the training process had run a threaded cv2 call (a warp,
    a colour transform) before starting its loader. Shrinking the parent's
    pool to one thread just before each fork and restoring it just after
    leaves the child nothing to wait for; a process that never imported
    cv2 pays nothing.
    """
    os.register_at_fork(before=_cv2_pool_down_before_fork, after_in_parent=_cv2_pool_up_after_fork)


_guard_cv2_across_fork()


def to_model_image(image: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
    """Batch images on ``device`` as float32 [B,3,H,W] in [0,1] (uint8 is scaled; float passes through).

    The one place 8-bit transport becomes model input; idempotent.
    """
    image = image.to(device, non_blocking=True)
    if image.dtype == torch.uint8:
        image = image.float().div_(255.0)
    if channels_last and image.dim() == 4:
        image = image.contiguous(memory_format=torch.channels_last)
    return image


def to_model_batch(batch: dict[str, Any], device: torch.device | str, channels_last: bool = False) -> dict[str, Any]:
    """A (collated) batch on ``device`` as the training step consumes it: :func:`to_model_image`, label int64.

    Every other tensor (depth, per-frame camera values) moves to ``device``
    too: a CUDA-graph step cannot capture a host-to-device copy of one.
    Idempotent, so an already converted batch passes through unchanged.
    Evaluation loops that only read labels back on the host convert just the image.
    """
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out["image"] = to_model_image(batch["image"], device, channels_last)
    if "label" in batch:
        out["label"] = out["label"].long()
    return out


def _ontology(ontology: Ontology | str | Path | None) -> Ontology:
    return ontology if isinstance(ontology, Ontology) else load_ontology(ontology)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} folder {path} is missing")
    return path


# --------------------------------------------------------------------------- RELLIS-3D


class RellisDataset(SegDepthDataset):
    """RELLIS-3D camera: <root>/<seq>/pylon_camera_node/*.jpg + pylon_camera_node_label_id/*.png.

    With a split list (``<root>/<split>.lst``, lines ``image label`` relative
    to root) its pairs are used; otherwise every image of every sequence.
    """

    source = "rellis"

    def __init__(self, root: str | Path, split: str | None = None, transform: SampleTransform | None = None,
                 policy: str = "strict", seed: int | None = None, ontology: Ontology | str | Path | None = None,
                 split_file: str | Path | None = None) -> None:
        self.root = _require_dir(Path(root), "RELLIS-3D")
        self.lut = _ontology(ontology).id_lut("rellis")
        listing = Path(split_file) if split_file else (self.root / f"{split}.lst" if split else None)
        samples: list[SampleFiles] = []
        if listing is not None and listing.is_file():
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise DataError(f"{listing}:{n}: expected 'image label', got {line!r}")
                samples.append(SampleFiles(self.root / parts[0], self.root / parts[1]))
        elif listing is not None and split_file:
            raise DataError(f"RELLIS-3D split list {listing} is missing")
        else:
            for image in sorted(self.root.glob("*/pylon_camera_node/*.jpg")):
                label = image.parent.parent / "pylon_camera_node_label_id" / f"{image.stem}.png"
                samples.append(SampleFiles(image, label))
        super().__init__(samples, transform, policy, seed, where=str(self.root))

    def decode_label(self, path: Path) -> np.ndarray:
        return map_ids(read_label_ids(path), self.lut, path)


# --------------------------------------------------------------------------- RUGD


def read_rugd_colormap(path: Path) -> dict[tuple[int, int, int], int]:
    """RUGD_annotation-colormap.txt lines 'id name R G B' -> {(R,G,B): id}."""
    if not path.is_file():
        raise DataError(f"RUGD colormap {path} is missing")
    table: dict[tuple[int, int, int], int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            class_id, r, g, b = int(parts[0]), int(parts[-3]), int(parts[-2]), int(parts[-1])
        except (ValueError, IndexError):
            raise DataError(f"{path}:{n}: expected 'id name R G B', got {line!r}") from None
        table[(r, g, b)] = class_id
    if not table:
        raise DataError(f"RUGD colormap {path} has no entries")
    return table


class RugdDataset(SegDepthDataset):
    """RUGD: RUGD_frames-with-annotations/<scene>/*.png + RUGD_annotations/<scene>/*.png (colour-coded).

    Colours are decoded through the data set's own colormap file, then ids
    through the ontology. ``scenes`` restricts to some scenes (RUGD's splits are by scene).
    """

    source = "rugd"

    def __init__(self, root: str | Path, scenes: Sequence[str] | None = None, transform: SampleTransform | None = None,
                 policy: str = "strict", seed: int | None = None, ontology: Ontology | str | Path | None = None,
                 colormap: str | Path | None = None) -> None:
        self.root = _require_dir(Path(root), "RUGD")
        frames = _require_dir(self.root / "RUGD_frames-with-annotations", "RUGD frames")
        labels = self.root / "RUGD_annotations"
        colors = read_rugd_colormap(Path(colormap) if colormap else self.root / "RUGD_annotation-colormap.txt")
        lut = _ontology(ontology).id_lut("rugd")
        # 24-bit colour key -> ontology id (or UNMAPPED), searched with searchsorted.
        keys = np.array(sorted((r << 16) | (g << 8) | b for (r, g, b) in colors), dtype=np.int64)
        by_key = {(r << 16) | (g << 8) | b: cid for (r, g, b), cid in colors.items()}
        self.color_keys = keys
        self.color_values = np.array([lut[by_key[int(k)]] if by_key[int(k)] < 256 else UNMAPPED for k in keys], np.int16)
        scene_dirs = [frames / s for s in scenes] if scenes else sorted(p for p in frames.iterdir() if p.is_dir())
        samples = [SampleFiles(image, labels / scene.name / image.name)
                   for scene in scene_dirs for image in sorted(_require_dir(scene, "RUGD scene").glob("*.png"))]
        super().__init__(samples, transform, policy, seed, where=str(frames))

    def decode_label(self, path: Path) -> np.ndarray:
        rgb = read_rgb(path).astype(np.int64)
        key = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
        pos = np.clip(np.searchsorted(self.color_keys, key), 0, len(self.color_keys) - 1)
        known = self.color_keys[pos] == key
        if not known.all():
            bad = np.unique(key[~known])[:5]
            colours = [((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255) for k in bad]
            raise DataError(f"label file {path} holds colours {colours} that are not in the RUGD colormap")
        mapped = self.color_values[pos]
        if (mapped == UNMAPPED).any():
            raise DataError(f"label file {path} holds RUGD classes that the ontology does not map")
        return mapped.astype(np.uint8)


# --------------------------------------------------------------------------- GOOSE


def read_goose_mapping(path: Path) -> dict[int, str]:
    """goose_label_mapping.csv (columns label_key, class_name) -> {label id: class name}."""
    if not path.is_file():
        raise DataError(f"GOOSE mapping {path} is missing")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"label_key", "class_name"} <= set(reader.fieldnames):
            raise DataError(f"GOOSE mapping {path} needs columns label_key and class_name, has {reader.fieldnames}")
        try:
            return {int(row["label_key"]): row["class_name"].strip() for row in reader}
        except (TypeError, ValueError) as err:
            raise DataError(f"GOOSE mapping {path}: bad label_key ({err})") from err


class GooseDataset(SegDepthDataset):
    """GOOSE: images/<split>/<scenario>/<prefix>_<camera>.png + labels/<split>/<scenario>/<prefix>_labelids.png."""

    source = "goose"

    def __init__(self, root: str | Path, split: str = "train", transform: SampleTransform | None = None,
                 policy: str = "strict", seed: int | None = None, ontology: Ontology | str | Path | None = None,
                 mapping: str | Path | None = None, camera_suffix: str | None = None) -> None:
        self.root = _require_dir(Path(root), "GOOSE")
        mapping_path = Path(mapping) if mapping else self.root / "goose_label_mapping.csv"
        try:
            self.lut = _ontology(ontology).name_lut("goose", read_goose_mapping(mapping_path), where=str(mapping_path))
        except ConfigError as err:
            raise DataError(str(err)) from err
        images_dir = _require_dir(self.root / "images" / split, "GOOSE images")
        samples = []
        for scenario in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            label_dir = self.root / "labels" / split / scenario.name
            prefixes = sorted((p.name[: -len("_labelids.png")] for p in label_dir.glob("*_labelids.png")), key=len, reverse=True)
            for image in sorted(scenario.glob("*.png")):
                if camera_suffix and not image.stem.endswith(camera_suffix):
                    continue
                prefix = next((p for p in prefixes if image.stem.startswith(p + "_")), None)
                label = label_dir / f"{prefix}_labelids.png" if prefix else label_dir / f"{image.stem}_labelids.png"
                samples.append(SampleFiles(image, label))
        super().__init__(samples, transform, policy, seed, where=str(images_dir))

    def decode_label(self, path: Path) -> np.ndarray:
        return map_ids(read_label_ids(path), self.lut, path)


# --------------------------------------------------------------------------- KITTI depth


class KittiDepthDataset(SegDepthDataset):
    """KITTI depth: <depth_root>/<split>/<drive>/proj_depth/groundtruth/image_0{2,3}/*.png (PNG16 / 256)
    with RGB from <raw_root>/<date>/<drive>/image_0{2,3}/data/*.png (date = first 10 chars of the drive).
    No labels (all 255)."""

    source = "kitti"

    def __init__(self, depth_root: str | Path, raw_root: str | Path, split: str = "train",
                 transform: SampleTransform | None = None, policy: str = "strict", seed: int | None = None,
                 cameras: Sequence[str] = ("image_02", "image_03")) -> None:
        base = _require_dir(Path(depth_root) / split, "KITTI depth")
        raw = _require_dir(Path(raw_root), "KITTI raw")
        samples = []
        for drive in sorted(p for p in base.iterdir() if p.is_dir()):
            for camera in cameras:
                for depth in sorted((drive / "proj_depth" / "groundtruth" / camera).glob("*.png")):
                    image = raw / drive.name[:10] / drive.name / camera / "data" / depth.name
                    samples.append(SampleFiles(image, None, depth))
        super().__init__(samples, transform, policy, seed, where=str(base))

    def decode_label(self, path: Path) -> np.ndarray:  # no labels in KITTI depth
        raise DataError(f"KITTI depth has no label files ({path})")


# --------------------------------------------------------------------------- synthetic


class SyntheticFolderDataset(SegDepthDataset):
    """Folders written by `model-tools synth`: <root>/<split>/{rgb,depth,label}/NNNNNN.png + camera.yaml."""

    source = "synthetic"

    def __init__(self, root: str | Path, split: str = "train", transform: SampleTransform | None = None,
                 policy: str = "strict", seed: int | None = None, ontology: Ontology | str | Path | None = None) -> None:
        self.split_dir = _require_dir(Path(root) / split, "synthetic split")
        self.camera = self._read_camera()
        onto = _ontology(ontology)
        version = self.camera.get("ontology_version")
        if version is not None and str(version) != onto.version:
            raise DataError(f"{self.split_dir / 'camera.yaml'}: rendered with ontology {version}, loading with {onto.version}")
        self.num_classes = onto.num_classes
        rgb_dir = _require_dir(self.split_dir / "rgb", "synthetic rgb")
        samples = [SampleFiles(p, self.split_dir / "label" / p.name, self.split_dir / "depth" / p.name)
                   for p in sorted(rgb_dir.glob("*.png"))]
        super().__init__(samples, transform, policy, seed, where=str(rgb_dir))

    def _read_camera(self) -> dict[str, Any]:
        import yaml

        path = self.split_dir / "camera.yaml"
        if not path.is_file():
            raise DataError(f"synthetic split {self.split_dir} has no camera.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise DataError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(data, dict) or "K" not in data:
            raise DataError(f"{path} lacks the intrinsics field 'K'")
        return data

    def decode_label(self, path: Path) -> np.ndarray:
        label = read_label_ids(path)
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            raise DataError(f"label file {path} holds ids {sorted(int(v) for v in np.unique(label[bad]))} outside the ontology")
        return label


# --------------------------------------------------------------------------- mixing


class MultiSourceDataset(Dataset):
    """Concatenation of several sources (their transforms must give equal sizes so that batches collate).

    ``sample_weights()`` gives per-item weights for a WeightedRandomSampler so
    that each source is drawn with the given share regardless of its size.
    """

    def __init__(self, datasets: Sequence[SegDepthDataset]) -> None:
        if not datasets:
            raise ConfigError("MultiSourceDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.datasets[which][index - int(self.offsets[which])]

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [item for d in self.datasets for item in d.skipped]

    def sample_weights(self, shares: Sequence[float] | None = None) -> torch.Tensor:
        """Per-item weights: source k gets total weight shares[k] (default: equal shares)."""
        shares = list(shares) if shares is not None else [1.0] * len(self.datasets)
        if len(shares) != len(self.datasets) or any(s < 0 for s in shares):
            raise ConfigError(f"need {len(self.datasets)} non-negative shares, got {shares}")
        weights = [torch.full((len(d),), share / len(d), dtype=torch.double) for d, share in zip(self.datasets, shares, strict=True)]
        return torch.cat(weights)
