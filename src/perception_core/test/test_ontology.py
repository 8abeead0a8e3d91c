"""The ontology file: structure, every source class mapped once, clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from perception_core.errors import ConfigError
from perception_core.ontology import UNMAPPED, load_ontology, parse_ontology

# Source classes as documented in /work/shared/DATASETS.md (the data sets' own lists).
RELLIS_IDS = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 17, 18, 19, 23, 27, 29, 30, 31, 32, 33, 34]
RUGD_IDS = list(range(25))
GOOSE_NAMES = [
    "undefined", "ego_vehicle", "outlier", "animal", "building", "wall", "fence", "bridge", "tunnel", "boom_barrier",
    "guard_rail", "road_block", "person", "rider", "traffic_cone", "obstacle", "street_light", "traffic_light", "pole",
    "barrier_tape", "kick_scooter", "container", "barrel", "pipe", "debris", "wire", "cobble", "bikeway",
    "pedestrian_crossing", "road_marking", "sidewalk", "curb", "asphalt", "rail_track", "on_rails", "traffic_sign",
    "misc_sign", "sky", "snow", "gravel", "soil", "rock", "leaves", "forest", "bush", "moss", "tree_crown", "tree_trunk",
    "crops", "low_grass", "high_grass", "scenery_vegetation", "hedge", "tree_root", "car", "bicycle", "bus",
    "motorcycle", "truck", "caravan", "trailer", "heavy_machinery", "military_vehicle", "water",
]
DEFAULT = Path(__file__).resolve().parents[1] / "perception_core" / "ontology.yaml"


def test_default_ontology_has_seven_classes_with_categories():
    onto = load_ontology()
    assert onto.path.resolve() == DEFAULT.resolve()  # the packaged file, wherever the package is installed
    assert onto.version and onto.ignore_index == 255
    assert onto.names == ["smooth_ground", "rough_ground", "low_vegetation", "water", "static_obstacle", "dynamic", "sky"]
    assert [onto.category_of(i) for i in range(7)] == ["FREE", "CAUTION", "CAUTION", "HAZARD", "BLOCKED", "HAZARD", None]
    assert onto.category_of(255) is None
    assert len(set(onto.colors)) == 7
    assert onto.color_table()[onto.id_of("water")].tolist() == list(onto.colors[3])


def test_every_source_class_is_mapped():
    onto = load_ontology()
    rellis = onto.id_lut("rellis")
    assert (rellis[RELLIS_IDS] != UNMAPPED).all()
    assert rellis[0] == 255 and rellis[31] == onto.id_of("water") and rellis[17] == onto.id_of("dynamic")
    rugd = onto.id_lut("rugd")
    assert (rugd[RUGD_IDS] != UNMAPPED).all()
    assert rugd[22] == onto.id_of("static_obstacle")  # bridge: a judgement call (docs/data.md)
    assert len(GOOSE_NAMES) == 64
    goose = onto.name_lut("goose", dict(enumerate(GOOSE_NAMES)))
    assert (goose[:64] != UNMAPPED).all()
    assert goose[GOOSE_NAMES.index("curb")] == onto.id_of("rough_ground")
    assert goose[GOOSE_NAMES.index("ego_vehicle")] == 255
    # An id that RELLIS does not define stays unmapped so that loaders reject it.
    assert rellis[2] == UNMAPPED


def _raw():
    return yaml.safe_load(DEFAULT.read_text())


def test_missing_version_is_named():
    raw = _raw()
    del raw["version"]
    with pytest.raises(ConfigError, match="missing field 'version'"):
        parse_ontology(raw, where="x.yaml")


def test_source_class_mapped_twice_is_rejected():
    raw = _raw()
    raw["classes"][0]["rellis"].append(1)  # dirt is already rough_ground
    with pytest.raises(ConfigError, match="rellis class 1 is mapped twice"):
        parse_ontology(raw, where="x.yaml")


def test_bad_category_and_colour_are_named():
    raw = _raw()
    raw["classes"][2]["category"] = "MAYBE"
    with pytest.raises(ConfigError, match=r"classes\[2\] \(low_vegetation\): category 'MAYBE'"):
        parse_ontology(raw, where="x.yaml")
    raw = _raw()
    raw["classes"][1]["color"] = [1, 2]
    with pytest.raises(ConfigError, match="color must be three integers"):
        parse_ontology(raw, where="x.yaml")


def test_unknown_goose_name_and_unreadable_file(tmp_path):
    onto = load_ontology()
    with pytest.raises(ConfigError, match=r"\['hovercraft'\] are not mapped"):
        onto.name_lut("goose", {0: "asphalt", 1: "hovercraft"}, where="mapping.csv")
    with pytest.raises(ConfigError, match="cannot read ontology"):
        load_ontology(tmp_path / "absent.yaml")
    lut = onto.name_lut("goose", {5: "water"})
    assert lut[5] == 3 and np.count_nonzero(lut != UNMAPPED) == 1


def test_a_binary_file_is_named_not_decoded(tmp_path):
    path = tmp_path / "labels.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ConfigError, match=r"ontology .*labels\.png is not a text \(YAML\) file"):
        load_ontology(path)

