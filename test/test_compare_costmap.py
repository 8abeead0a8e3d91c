"""bench/compare_costmap.py: seed-by-seed comparison of two costmap-bench results."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest


@pytest.fixture
def compare_costmap(load_repo_script):
    return load_repo_script("bench/compare_costmap.py")


GOALS = {"obstacle_recall": ">= 0.95", "holes": "<= 0.02", "drop_recall": ">= 0.95"}


def _result(totals: dict[str, float], per_seed: dict[str, dict[str, float | None]]) -> dict:
    """The fields of a bench_costmap.py JSON that the comparison reads."""
    return {
        "rig": {"width": 1280, "height": 1080, "mount_height_m": 1.4},
        "drive": {"seeds": [int(s) for s in per_seed], "frames_per_seed": 8},
        "models_in_the_loop": {**totals, "goals": GOALS},
        "per_seed": {seed: {"models_in_the_loop": {k: v for k, v in m.items() if v is not None}}
                     for seed, m in per_seed.items()},
    }


BASE = _result({"obstacle_recall": 0.50, "holes": 0.020, "drop_recall": 0.40},
               {"1": {"obstacle_recall": 0.4, "holes": 0.02, "drop_recall": 0.5},
                "2": {"obstacle_recall": 0.6, "holes": 0.02, "drop_recall": None}})


def test_counts_drives_that_move_the_right_way_for_each_goal_direction(compare_costmap) -> None:
    candidate = _result({"obstacle_recall": 0.55, "holes": 0.015, "drop_recall": 0.45},
                        {"1": {"obstacle_recall": 0.5, "holes": 0.01, "drop_recall": 0.6},
                         "2": {"obstacle_recall": 0.5, "holes": 0.015, "drop_recall": None}})
    changes = {c.measure: c for c in compare_costmap.compare(BASE, candidate)}
    recall = changes["obstacle_recall"]
    assert recall.higher_is_better and recall.change == pytest.approx(0.05)
    assert (recall.seeds_better, recall.seeds_worse, recall.seeds) == (1, 1, 2)
    holes = changes["holes"]  # lower is better: both seeds fell
    assert not holes.higher_is_better and holes.change == pytest.approx(-0.005)
    assert (holes.seeds_better, holes.seeds_worse, holes.seeds) == (2, 0, 2)
    drop = changes["drop_recall"]  # seed 2 has no drops: not counted
    assert (drop.seeds_better, drop.seeds_worse, drop.seeds) == (1, 0, 1)


def test_a_measure_the_bench_wrote_as_nan_is_not_counted(compare_costmap) -> None:
    """The bench writes NaN for a ratio without cells (no sloped ground on a drive); it is no drive moved."""
    base, candidate = copy.deepcopy(BASE), copy.deepcopy(BASE)
    base["per_seed"]["2"]["models_in_the_loop"]["holes"] = float("nan")
    candidate["per_seed"]["2"]["models_in_the_loop"]["holes"] = float("nan")
    candidate["per_seed"]["1"]["models_in_the_loop"]["holes"] = 0.01
    holes = {c.measure: c for c in compare_costmap.compare(base, candidate)}["holes"]
    assert (holes.seeds_better, holes.seeds_worse, holes.seeds) == (1, 0, 1)


def test_identical_results_move_nothing(compare_costmap) -> None:
    changes = compare_costmap.compare(BASE, copy.deepcopy(BASE))
    assert all(c.change == 0 and c.seeds_better == 0 and c.seeds_worse == 0 for c in changes)


def test_other_drives_are_refused_naming_the_field(compare_costmap) -> None:
    other = copy.deepcopy(BASE)
    other["rig"]["mount_height_m"] = 2.0
    with pytest.raises(compare_costmap.CompareError, match="rig"):
        compare_costmap.compare(BASE, other, names=("a.json", "b.json"))


def test_cli_writes_markdown_and_names_a_bad_file(compare_costmap, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base, candidate, bad = tmp_path / "base.json", tmp_path / "cand.json", tmp_path / "bad.json"
    base.write_text(json.dumps(BASE))
    worse = copy.deepcopy(BASE)
    worse["models_in_the_loop"]["obstacle_recall"] = 0.4
    worse["per_seed"]["1"]["models_in_the_loop"]["obstacle_recall"] = 0.3
    candidate.write_text(json.dumps(worse))
    out = tmp_path / "compare.md"
    assert compare_costmap.main([str(base), str(candidate), "--out", str(out)]) == 0
    table = out.read_text()
    assert "| obstacle_recall (higher is better) | 0.500 | 0.400 | -0.100 | 0 / 1 / 2 |" in table
    assert table.startswith("Command: `python bench/compare_costmap.py")

    bad.write_text(json.dumps({"rig": {}}))
    assert compare_costmap.main([str(base), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def _counted(recall_hits: int, holes_unknown: int) -> dict:
    """BASE's fields with counts behind its obstacle recall and holes (of 100 cells each)."""
    result = copy.deepcopy(BASE)
    result["models_in_the_loop"].update(obstacle_recall=recall_hits / 100, holes=holes_unknown / 100)
    result["models_in_the_loop"]["counts"] = {"gt_obstacle_cells": 100, "gt_obstacle_cells_hit": recall_hits,
                                              "gt_traversable_cells": 100,
                                              "gt_traversable_cells_unknown": holes_unknown}
    return result


def test_pairs_compare_each_candidate_with_its_base_and_pool_the_counts(compare_costmap, tmp_path: Path) -> None:
    files = []
    for name, result in (("a_base", _counted(50, 2)), ("a_cand", _counted(60, 1)), ("b_base", _counted(10, 4)),
                         ("b_cand", _counted(10, 5))):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(result))
    out = tmp_path / "pairs.md"
    assert compare_costmap.main(["--pairs", *map(str, files), "--out", str(out)]) == 0
    table = out.read_text()
    assert "Pooled over 2 pairs" in table
    assert "| obstacle_recall (higher is better) | 0.300 | 0.350 | +0.050 | 1 / 0 / 2 |" in table
    assert "| holes (lower is better) | 0.030 | 0.030 | +0.000 | 1 / 1 / 2 |" in table
    assert "| drop_recall (higher is better) | nan | nan | +nan | 0 / 0 / 2 |" in table  # no counts behind it
    assert table.count("against") == 2  # and each pair's own table
    with pytest.raises(SystemExit):
        compare_costmap.main(["--pairs", str(files[0])])
