"""Calibration and validation images without torch: a data-set folder or a rosbag.

Calibration must see the frames the deployed model sees, preprocessed exactly
as at run time. So this module only *reads* RGB frames (uint8 HxWx3); the
runtime's :class:`perception_core.preprocess.Preprocessor` turns them into the
model input (see :class:`CalibrationReader`).

Folder layout (the synthetic format of `model-tools synth`, also what the trainers read):
``<root>/<split>/rgb/NNNNNN.png`` with optional ``depth/`` and ``label/``
siblings. ``<root>/rgb/`` (no split level) and a plain folder of images are
accepted too, so any image folder can calibrate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.data.readers import read_depth_png16, read_label_ids, read_rgb
from perception_core.errors import DataError
from perception_core.pipelines import model_feeds

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_TOPIC = "/camera/image_raw"
DEFAULT_CALIBRATION_COUNT = 300


@dataclass
class Frame:
    """One RGB frame and, from a data-set folder, its ground truth (None where absent)."""

    name: str
    rgb: np.ndarray  # uint8 [H, W, 3], RGB order
    depth: np.ndarray | None = None  # float32 metres, 0 = invalid
    label: np.ndarray | None = None  # uint8 class ids, 255 = ignore
    # The camera, for depth models that rescale with it: DepthPipeline's camera_k, camera_hw, camera_height.
    camera: dict[str, Any] | None = None


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` indices spread over ``range(total)`` (all of them when count >= total)."""
    if count <= 0 or count >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def resolve_rgb_folder(root: str | os.PathLike[str], split: str | None) -> Path:
    """The folder holding the RGB frames for ``root``/``split`` (see module doc).

    Raises:
        DataError: the folder does not exist or has no images, naming what was tried.
    """
    base = Path(root)
    if not base.exists():
        raise DataError(f"image folder {base} does not exist")
    candidates = []
    if split:
        candidates.append(base / split / "rgb")
    candidates += [base / "rgb", base]
    for folder in candidates:
        if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) found in data set {base} (looked in {tried})")


def list_frames(root: str | os.PathLike[str], split: str | None = None) -> list[Path]:
    """Sorted RGB image paths of a folder data set."""
    folder = resolve_rgb_folder(root, split)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_frame(rgb_path: Path, with_targets: bool = True) -> Frame:
    """Read one frame of a folder data set with its camera, and its depth/label siblings when present."""
    frame = Frame(name=rgb_path.stem, rgb=read_rgb(rgb_path))
    split_dir = rgb_path.parent.parent
    frame.camera = folder_frame_camera(split_dir, rgb_path.stem)  # an input of some depth models, not a target
    if not with_targets:
        return frame
    depth_path = _sibling(split_dir / "depth", rgb_path.stem)
    label_path = _sibling(split_dir / "label", rgb_path.stem)
    if depth_path is not None:
        frame.depth = read_depth_png16(depth_path)
    if label_path is not None:
        frame.label = read_label_ids(label_path)
    return frame


def folder_frame_camera(split_dir: Path, stem: str) -> dict[str, Any] | None:
    """The frame's camera from a synthetic folder (its camera record or fixed camera.yaml), else None."""
    from model_tools.data.synth import read_frame_rig

    try:
        rig = read_frame_rig(split_dir, stem)
    except DataError:
        return None
    return {"camera_k": rig.K, "camera_hw": (rig.height, rig.width), "camera_height": rig.mount_height}


def _sibling(folder: Path, stem: str) -> Path | None:
    candidate = folder / f"{stem}.png"
    return candidate if candidate.is_file() else None


def iter_folder_frames(
    root: str | os.PathLike[str], split: str | None = None, count: int = 0, with_targets: bool = False
) -> tuple[int, Iterator[Frame]]:
    """(number of frames that will come, iterator) over ``count`` evenly spaced frames (0 = all)."""
    paths = list_frames(root, split)
    chosen = [paths[i] for i in evenly_spaced(len(paths), count)]
    return len(chosen), (read_frame(p, with_targets) for p in chosen)


def iter_bag_frames(bag: str | os.PathLike[str], topic: str = DEFAULT_TOPIC, count: int = 0) -> tuple[int, Iterator[Frame]]:
    """(number of frames that will come, iterator) over ``count`` evenly spaced images of ``topic``.

    Decoding goes through the runtime's ``image_codec`` so encodings (rgb8,
    bgr8, mono8, ...) are handled exactly as by the nodes.

    Raises:
        BagError: the bag is unreadable or lacks ``topic`` (naming both).
        DataError: the topic holds no messages.
    """
    from model_tools.bags.bagio import summarize_bag

    summary = summarize_bag(bag)
    total = summary.topics[topic].count if topic in summary.topics else 0
    if topic in summary.topics and total == 0:
        raise DataError(f"bag {bag}: topic {topic} holds no messages")
    chosen = set(evenly_spaced(total, count)) if topic in summary.topics else set()
    return len(chosen), _bag_frames(bag, topic, chosen)


def _bag_frames(bag: str | os.PathLike[str], topic: str, chosen: set[int]) -> Iterator[Frame]:
    from model_tools.bags.bagio import deserialize, iter_raw, make_typestore
    from perception_core.image_codec import image_to_array

    typestore = make_typestore()
    for index, raw in enumerate(iter_raw(bag, topics=[topic])):
        if index not in chosen:
            continue
        msg = deserialize(raw, typestore)
        rgb = np.ascontiguousarray(image_to_array(msg, desired_encoding="rgb8"))
        yield Frame(name=f"{Path(bag).name}_{index:06d}", rgb=rgb)


@dataclass
class ImageSource:
    """Where calibration/validation frames come from: a folder data set or a bag topic."""

    folder: str | None = None
    split: str | None = None
    bag: str | None = None
    topic: str = DEFAULT_TOPIC

    def describe(self) -> str:
        if self.bag:
            return f"bag {self.bag} topic {self.topic}"
        return f"folder {self.folder}" + (f" split {self.split}" if self.split else "")

    def frames(self, count: int = 0, with_targets: bool = False) -> tuple[int, Iterator[Frame]]:
        """(how many, iterator) of up to ``count`` evenly spaced frames (0 = all)."""
        if bool(self.bag) == bool(self.folder):
            raise DataError("give exactly one image source: a data-set folder or a rosbag")
        if self.bag:
            return iter_bag_frames(self.bag, self.topic, count)
        return iter_folder_frames(self.folder, self.split, count, with_targets)


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over preprocessed frames.

    Frames are read lazily and preprocessed by the runtime Preprocessor (the
    model's own metadata), so calibration statistics match deployment. A
    frame whose size differs from the model input is an error unless
    ``resize`` (then the Preprocessor's own resize is used, as at run time).
    The reader counts what it yielded; an empty source is an error at the first
    request, naming the source.
    """

    def __init__(
        self,
        source: ImageSource,
        metadata: Any,
        count: int = DEFAULT_CALIBRATION_COUNT,
        resize: bool = False,
        progress: bool = True,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if preprocess is None:
            from perception_core.preprocess import Preprocessor

            preprocess = Preprocessor(metadata)
        self.source = source
        self.metadata = metadata
        self.resize = resize
        self.preprocess = preprocess
        self.total, frames = source.frames(count)
        if self.total == 0:
            raise DataError(f"calibration set is empty: {source.describe()} gave no images")
        self._frames = frames
        self.used = 0
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc="calibration", unit="img", leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._frames, None)
        if frame is None:
            if self._bar is not None:
                self._bar.close()
            if self.used == 0:
                raise DataError(f"calibration set is empty: {self.source.describe()} gave no images")
            return None
        check_frame_size(frame, self.metadata, self.resize, self.source.describe())
        self.used += 1
        if self._bar is not None:
            self._bar.update(1)
        tensor = np.ascontiguousarray(self.preprocess(frame.rgb), dtype=np.float32)
        return model_feeds(self.metadata, tensor, frame.camera, f"calibration image {frame.name} from {self.source.describe()}")

    def rewind(self) -> None:
        """Start again (ORT may iterate the reader more than once)."""
        self.total, self._frames = self.source.frames(self.total)
        self.used = 0


def check_frame_size(frame: Frame, metadata: Any, resize: bool, where: str) -> None:
    """Raise DataError naming both sizes when a frame does not match the model input."""
    h, w = metadata.input_hw
    fh, fw = frame.rgb.shape[:2]
    if (fh, fw) != (h, w) and not resize:
        raise DataError(
            f"calibration image {frame.name} from {where} is {fh}x{fw} (HxW) but the model input is {h}x{w}; "
            "pass --resize-calibration to resize frames as the runtime Preprocessor does"
        )
