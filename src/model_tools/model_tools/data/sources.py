"""Data sources of a training config (``data.sources``) -> one data set, for every task.

A source is ``{format, root, [format options], train: {...}, val: {...}}``.
The phase's mapping goes to the loader (``split``, RUGD ``scenes``, RELLIS
``split_file``, GOOSE ``camera_suffix``, KITTI ``cameras``, ``policy``);
without one the split is the config's ``train_split`` / ``val_split``. Each
format says which ground truth it carries, and a task accepts only the
formats its registry entry lists (depth: synthetic, KITTI; segmentation:
synthetic, RELLIS-3D, RUGD, GOOSE), so a source without the task's ground
truth is a ConfigError instead of a data set of empty targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perception_core.errors import ConfigError

PHASES = ("train", "val")


@dataclass(frozen=True)
class SourceFormat:
    """One loader of ``model_tools.data.datasets`` and what it carries."""

    loader: str  # class name in model_tools.data.datasets
    depth: bool
    labels: bool
    root_argument: str = "root"  # the loader's argument that ``root`` fills
    options: tuple[str, ...] = ()  # source-level fields passed to the loader besides root
    split_by_scenes: bool = False  # RUGD: the phase lists scenes, there is no split name


FORMATS: dict[str, SourceFormat] = {
    "synthetic": SourceFormat("SyntheticFolderDataset", depth=True, labels=True),
    "rellis": SourceFormat("RellisDataset", depth=False, labels=True),
    "rugd": SourceFormat("RugdDataset", depth=False, labels=True, split_by_scenes=True),
    "goose": SourceFormat("GooseDataset", depth=False, labels=True),
    "kitti": SourceFormat("KittiDepthDataset", depth=True, labels=False, root_argument="depth_root",
                          options=("raw_root",)),
}


def parse_source_argument(text: str) -> dict[str, Any]:
    """``FORMAT=ROOT[,option=value...]`` (the ``--source`` flag) -> a ``data.sources`` entry.

    ``kitti=/data/kitti/depth,raw_root=/data/kitti/raw`` gives
    ``{format: kitti, root: /data/kitti/depth, raw_root: /data/kitti/raw}``.
    """
    head, *rest = text.split(",")
    kind, sep, root = head.partition("=")
    if not sep or not kind or not root:
        raise ConfigError(f"--source {text!r} is not FORMAT=ROOT[,option=value...]")
    entry: dict[str, Any] = {"format": kind, "root": root}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--source {text!r}: {item!r} is not option=value")
        entry[key] = value
    return entry


def check_sources(entries: Sequence[Any], formats: Sequence[str], task: str) -> None:
    """ConfigError naming the entry unless every source is well formed and carries the task's ground truth."""
    if not entries:
        raise ConfigError("config: data.sources is empty; list at least one {format, root} source "
                          "(or pass --data / --source)")
    for index, entry in enumerate(entries):
        where = f"config: data.sources[{index}]"
        if not isinstance(entry, dict) or "format" not in entry or "root" not in entry:
            raise ConfigError(f"{where} needs 'format' and 'root', got {entry!r}")
        kind = entry["format"]
        if kind not in FORMATS:
            raise ConfigError(f"{where}.format {kind!r} is not one of {sorted(FORMATS)}")
        if kind not in formats:
            raise ConfigError(f"{where}.format {kind!r} has no {task} ground truth; the {task} task reads "
                              f"{', '.join(formats)}")
        known = {"format", "root", *PHASES, *FORMATS[kind].options}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where} has unknown field(s) {unknown}; known: {', '.join(sorted(known))}")


def build_source(entry: dict[str, Any], index: int, phase: str, transform: Any, *, default_split: str,
                 split: str | None = None, ontology: Any = None, seed: int | None = None,
                 with_depth: bool = True) -> Any:
    """The data set of ``data.sources[index]`` for ``phase`` (train or val).

    ``split`` forces the split name (evaluation on another split than the
    config's); a scene-split source (RUGD) cannot take one and is an error.
    """
    from model_tools.data import datasets

    where = f"config: data.sources[{index}]"
    fmt = FORMATS[entry["format"]]
    options = dict(entry.get(phase) or {})
    if fmt.split_by_scenes:
        if "scenes" not in options and phase == "val":
            raise ConfigError(f"{where}: {entry['format']} splits by scene; list val: {{scenes: [...]}} "
                              "(and train scenes)")
        if split is not None and split != default_split:
            raise ConfigError(f"{where}: {entry['format']} splits by scene, so it has no split {split!r}; "
                              f"evaluate it on its {phase} scenes")
    elif split is not None:
        options["split"] = split
    else:
        options.setdefault("split", default_split)
    kwargs: dict[str, Any] = {fmt.root_argument: entry["root"], "transform": transform, "seed": seed, **options}
    kwargs.update({name: entry[name] for name in fmt.options if name in entry})
    if fmt.labels:
        kwargs["ontology"] = ontology
    try:
        dataset = getattr(datasets, fmt.loader)(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}.{phase}: {err}") from err
    dataset.with_depth = with_depth
    return dataset


def build_sources(entries: Sequence[dict[str, Any]], phase: str, transform: Any, **kwargs: Any) -> Any:
    """Every source of ``entries`` for ``phase``, combined into one MultiSourceDataset."""
    from model_tools.data.datasets import MultiSourceDataset

    return MultiSourceDataset([build_source(entry, i, phase, transform, **kwargs) for i, entry in enumerate(entries)])


def evenly_spaced_subset(dataset: Any, count: int) -> Any:
    """``count`` items spread over the whole data set (every source of a mix), or the data set when smaller."""
    if count <= 0 or len(dataset) <= count:
        return dataset
    from torch.utils.data import Subset

    stride = len(dataset) / count
    return Subset(dataset, [int(i * stride) for i in range(count)])
