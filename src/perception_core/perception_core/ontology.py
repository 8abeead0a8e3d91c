"""The off-road class ontology (``ontology.yaml`` in this package) and its source-data-set lookup tables.

One file defines the classes, their colours, their default costmap
categories and how every RELLIS-3D, RUGD and GOOSE class maps onto them,
so that loaders, the synthetic generator, model metadata and the costmap
cannot disagree. numpy + yaml only (used by nodes and training alike).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from perception_core.errors import ConfigError


class Category(IntEnum):
    """Costmap traversability category; the value is the severity rank (the higher wins a cell)."""

    FREE = 0
    CAUTION = 1
    BLOCKED = 2
    HAZARD = 3


CATEGORY_NAMES = tuple(c.name for c in Category)
NOT_PROJECTED = -1  # category-table value of classes that never enter the costmap (sky, ignore)
# Source data sets whose classes are mapped: RELLIS-3D and RUGD by integer id, GOOSE by class name.
ID_SOURCES = ("rellis", "rugd")
NAME_SOURCES = ("goose",)
SOURCES = ID_SOURCES + NAME_SOURCES
UNMAPPED = -1  # lookup-table value of a source id the ontology does not list (an error when seen)


@dataclass(frozen=True)
class OntologyClass:
    """One class of the ontology."""

    id: int
    name: str
    color: tuple[int, int, int]
    category: str | None  # FREE / CAUTION / BLOCKED / HAZARD, or None (never projected: sky)
    sources: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Ontology:
    """The loaded ontology; see ontology.yaml beside this module for the meaning of each field."""

    version: str
    classes: tuple[OntologyClass, ...]
    ignore_index: int
    ignored_sources: Mapping[str, tuple[Any, ...]]
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def category_of(self, class_id: int) -> str | None:
        """Default costmap category of a class id; None for sky and for ignore_index."""
        if class_id == self.ignore_index:
            return None
        if not 0 <= class_id < len(self.classes):
            raise ConfigError(f"class id {class_id} is not in ontology {self._where()} (0..{len(self.classes) - 1})")
        return self.classes[class_id].category

    def id_of(self, name: str) -> int:
        """Class id of a class name (ConfigError naming the ontology file if absent)."""
        for cls in self.classes:
            if cls.name == name:
                return cls.id
        raise ConfigError(f"ontology {self._where()} has no class {name!r}; it has {', '.join(self.names)}")

    def color_table(self) -> np.ndarray:
        """uint8 [256, 3] RGB per label value (ignore and unused values black), for colourising."""
        table = np.zeros((256, 3), dtype=np.uint8)
        for cls in self.classes:
            table[cls.id] = cls.color
        return table

    def source_mapping(self, source: str) -> dict[Any, int]:
        """Source class (id or name) -> ontology id or ignore_index, for one source data set."""
        if source not in SOURCES:
            raise ConfigError(f"unknown source data set {source!r}; known: {', '.join(SOURCES)}")
        mapping: dict[Any, int] = {key: self.ignore_index for key in self.ignored_sources.get(source, ())}
        for cls in self.classes:
            for key in cls.sources.get(source, ()):
                mapping[key] = cls.id
        return mapping

    def id_lut(self, source: str) -> np.ndarray:
        """int16 [256] lookup table source id -> ontology id (ignore_index, or UNMAPPED if not listed).

        For RELLIS-3D and RUGD, whose classes are integer ids below 256.
        """
        if source not in ID_SOURCES:
            raise ConfigError(f"{source!r} maps classes by name; use name_lut() with the data set's id->name table")
        lut = np.full(256, UNMAPPED, dtype=np.int16)
        for key, value in self.source_mapping(source).items():
            lut[int(key)] = value
        return lut

    def name_lut(self, source: str, id_to_name: Mapping[int, str], where: str = "") -> np.ndarray:
        """int16 [256] lookup table label id -> ontology id for a source that maps by class name (GOOSE).

        ``id_to_name`` comes from the data set's own mapping file. A class name
        that the ontology does not list is a ConfigError naming it and ``where``.
        """
        mapping = self.source_mapping(source)
        lut = np.full(256, UNMAPPED, dtype=np.int16)
        missing = []
        for label_id, name in id_to_name.items():
            if not 0 <= int(label_id) < 256:
                raise ConfigError(f"{where or source}: label id {label_id} ({name!r}) is outside 0..255")
            key = str(name).strip()
            if key not in mapping:
                missing.append(key)
                continue
            lut[int(label_id)] = mapping[key]
        if missing:
            raise ConfigError(
                f"{where or source}: {source} classes {sorted(missing)} are not mapped in ontology {self._where()}; "
                f"add them to a class's '{source}' list or to 'ignore'"
            )
        return lut

    def metadata(self) -> dict[str, str]:
        """Class names, colours and version as strings, for model metadata and bag metadata."""
        return {
            "ontology_version": self.version,
            "class_names": ",".join(self.names),
            "class_colors": ";".join(",".join(str(v) for v in c) for c in self.colors),
        }

    def _where(self) -> str:
        return str(self.path) if self.path is not None else f"version {self.version}"


def default_ontology_path() -> Path:
    """The ontology shipped with this package (installed as package data, so found from any directory)."""
    return Path(__file__).with_name("ontology.yaml")


def parse_category(name: Any, where: str = "ontology") -> Category | None:
    """A category name (case-insensitive) as a Category; None, "" or "none" (YAML null) mean "not projected"."""
    text = "" if name is None else str(name).strip()
    if text.lower() in ("", "none", "null"):
        return None
    try:
        return Category[text.upper()]
    except KeyError:
        raise ConfigError(f"{where}: category {name!r} is not one of {', '.join(CATEGORY_NAMES)} or null") from None


def load_ontology(path: str | os.PathLike[str] | None = None) -> Ontology:
    """Load and validate an ontology YAML (default: see default_ontology_path)."""
    import yaml

    file = Path(path) if path is not None else default_ontology_path()
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read ontology {file}: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"ontology {file} is not a text (YAML) file: {err.reason} at byte {err.start}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"ontology {file} is not valid YAML: {err}") from err
    return parse_ontology(raw, where=str(file), path=file)


def parse_ontology(raw: Any, where: str = "ontology", path: Path | None = None) -> Ontology:
    """Validate a parsed ontology mapping; every error names ``where`` and the field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    for key in ("version", "ignore_index", "classes"):
        if key not in raw:
            raise ConfigError(f"{where}: missing field '{key}'")
    ignore_index = _int(raw["ignore_index"], f"{where}: ignore_index")
    if not isinstance(raw["classes"], Sequence) or not raw["classes"]:
        raise ConfigError(f"{where}: 'classes' must be a non-empty list")
    classes = [_parse_class(entry, i, where) for i, entry in enumerate(raw["classes"])]
    if [c.id for c in classes] != list(range(len(classes))):
        raise ConfigError(f"{where}: class ids must be 0..{len(classes) - 1} in order, got {[c.id for c in classes]}")
    if ignore_index < len(classes) or ignore_index > 255:
        raise ConfigError(f"{where}: ignore_index {ignore_index} must be in {len(classes)}..255")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: duplicate class names in {names}")
    ignored_raw = raw.get("ignore") or {}
    if not isinstance(ignored_raw, Mapping):
        raise ConfigError(f"{where}: 'ignore' must map source names to lists")
    ignored = {src: _source_keys(ignored_raw.get(src), src, f"{where}: ignore.{src}") for src in SOURCES}
    for src in SOURCES:  # a source class may map to exactly one place
        seen: dict[Any, str] = {key: "ignore" for key in ignored[src]}
        for cls in classes:
            for key in cls.sources.get(src, ()):
                if key in seen:
                    raise ConfigError(f"{where}: {src} class {key!r} is mapped twice ({seen[key]} and {cls.name})")
                seen[key] = cls.name
    return Ontology(
        version=str(raw["version"]), classes=tuple(classes), ignore_index=ignore_index, ignored_sources=ignored, path=path
    )


def _parse_class(entry: Any, index: int, where: str) -> OntologyClass:
    here = f"{where}: classes[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{here}: expected a mapping")
    for key in ("id", "name", "color", "category"):
        if key not in entry:
            raise ConfigError(f"{here}: missing field '{key}'")
    name = str(entry["name"])
    color = entry["color"]
    if (
        not isinstance(color, Sequence)
        or len(color) != 3
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in color)
    ):
        raise ConfigError(f"{here} ({name}): color must be three integers 0..255, got {color!r}")
    category = parse_category(entry["category"], where=f"{here} ({name})")
    sources = {src: _source_keys(entry.get(src), src, f"{here} ({name}).{src}") for src in SOURCES}
    return OntologyClass(
        id=_int(entry["id"], f"{here}.id"),
        name=name,
        color=(int(color[0]), int(color[1]), int(color[2])),
        category=None if category is None else category.name,
        sources=sources,
    )


def _source_keys(value: Any, source: str, where: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{where}: expected a list")
    if source in ID_SOURCES:
        keys = tuple(_int(v, where) for v in value)
        bad = [k for k in keys if not 0 <= k < 256]
        if bad:
            raise ConfigError(f"{where}: ids {bad} outside 0..255")
        return keys
    return tuple(str(v).strip() for v in value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value
