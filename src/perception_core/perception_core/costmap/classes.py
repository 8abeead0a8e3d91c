"""What the costmap does with each label id: its category, whether it lies flat on the ground, whether it is known.

- Category: from the ontology (``category`` of each class); sky and the
  ignore id are not projected. A label id the ontology does not define (a
  model or a bag of another ontology) is projected as ``unknown_category``,
  BLOCKED by default: unknown is not free.
- Surface: FREE and CAUTION classes lie on the ground, and so do the lethal
  classes named in ``flat_obstacle_classes`` (water). Surface pixels are
  filled as a continuous surface between neighbouring rows and are what a
  standing obstacle stands on; every other lethal class stands up from the
  ground (rocks, trees, people, vehicles).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception_core.errors import ConfigError
from perception_core.ontology import NOT_PROJECTED, Category, Ontology, load_ontology, parse_category

DEFAULT_FLAT_OBSTACLE_CLASSES = ("water",)


@dataclass(frozen=True)
class ClassMap:
    """Per label id (0..255): Category value or NOT_PROJECTED, surface flag, and whether the ontology defines it."""

    category: np.ndarray  # int8 [256]
    surface: np.ndarray  # bool [256]
    known: np.ndarray  # bool [256]

    @classmethod
    def from_table(cls, class_to_category: np.ndarray) -> ClassMap:
        """From a bare category table: FREE/CAUTION are surfaces, every id counts as known."""
        table = np.asarray(class_to_category, dtype=np.int8).reshape(-1)
        if table.size != 256:
            raise ConfigError(f"class -> category table must have 256 entries, got {table.size}")
        surface = (table == Category.FREE) | (table == Category.CAUTION)
        return cls(table, surface, np.ones(256, dtype=bool))

    @property
    def standing(self) -> np.ndarray:
        """bool [256]: ids of obstacles that stand up from the ground (lethal, not lying flat like water)."""
        return (self.category >= int(Category.BLOCKED)) & ~self.surface

    @property
    def defined_standing(self) -> np.ndarray:
        """bool [256]: the ids of ``standing`` that the ontology defines (a ground truth's obstacle classes; an
        undefined id stands only because the costmap treats unknown labels as obstacles)."""
        return self.standing & self.known

    def unknown_ids(self, labels: np.ndarray) -> int:
        """How many pixels of ``labels`` carry an id the ontology does not define."""
        labels = np.asarray(labels)
        if self.known.all():
            return 0
        if labels.dtype == np.uint8:
            import cv2

            unknown = np.where(self.known, 0, 255).astype(np.uint8)
            return int(cv2.countNonZero(cv2.LUT(np.ascontiguousarray(labels), unknown)))
        ids = labels.astype(np.int64)
        outside = (ids < 0) | (ids > 255)
        return int((outside | ~self.known[np.clip(ids, 0, 255)]).sum())


def _ontology(ontology: Ontology | str | Path | None) -> Ontology:
    return ontology if isinstance(ontology, Ontology) else load_ontology(ontology)


def class_categories_from_ontology(
    ontology: Ontology | str | Path | None = None,
    overrides: Mapping[int, str | None] | None = None,
    unknown_category: str | Category | None = Category.BLOCKED,
) -> np.ndarray:
    """Lookup table class id -> Category value (NOT_PROJECTED for sky and ignore), int8 [256].

    ``ontology`` is a loaded Ontology, a path to ontology YAML, or None for the packaged default.
    ``overrides`` maps class ids to category names (or None: not projected), e.g. from a node parameter.
    Ids the ontology does not define get ``unknown_category`` (None: not projected).
    """
    ontology = _ontology(ontology)
    fallback = unknown_category if isinstance(unknown_category, Category) or unknown_category is None else (
        parse_category(unknown_category, where="unknown_class_category"))
    table = np.full(256, NOT_PROJECTED if fallback is None else int(fallback), dtype=np.int8)
    table[ontology.ignore_index] = NOT_PROJECTED
    for cls in ontology.classes:
        table[cls.id] = NOT_PROJECTED if cls.category is None else int(Category[cls.category])
    for class_id, name in (overrides or {}).items():
        category = parse_category(name, where=f"category override for class {class_id}")
        table[int(class_id)] = NOT_PROJECTED if category is None else int(category)
    return table


def class_map_from_ontology(
    ontology: Ontology | str | Path | None = None,
    flat_obstacle_classes: Iterable[str] = DEFAULT_FLAT_OBSTACLE_CLASSES,
    unknown_category: str | Category | None = Category.BLOCKED,
    overrides: Mapping[int, str | None] | None = None,
) -> ClassMap:
    """The costmap's ClassMap; a name in ``flat_obstacle_classes`` the ontology lacks is a ConfigError."""
    ontology = _ontology(ontology)
    table = class_categories_from_ontology(ontology, overrides, unknown_category)
    surface = (table == Category.FREE) | (table == Category.CAUTION)
    for name in flat_obstacle_classes:
        try:
            surface[ontology.id_of(str(name))] = True
        except ConfigError as err:
            raise ConfigError(f"costmap parameter flat_obstacle_classes: {err}") from None
    known = np.zeros(256, dtype=bool)
    known[[c.id for c in ontology.classes]] = True
    known[ontology.ignore_index] = True
    return ClassMap(table, surface, known)


def as_class_map(classes: ClassMap | np.ndarray) -> ClassMap:
    return classes if isinstance(classes, ClassMap) else ClassMap.from_table(classes)
