"""bench/costmap_doc_tables.py: the costmap tables of the docs against the bench JSONs they cite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def tables(load_repo_script):
    return load_repo_script("bench/costmap_doc_tables.py")


def _row(recall: float) -> dict:
    return {"obstacle_recall": recall, "obstacle_precision": 0.5, "object_recall": 0.75, "holes": 0.012,
            "false_lethal": 0.021, "drop_recall": 0.4, "false_lethal_on_slopes": 0.003, "labelled_object_recall": 1.0,
            "counts": {"gt_groups": 8, "gt_groups_touched": 6, "gt_labelled_groups": 2, "gt_labelled_groups_touched": 2}}


def _doc(tmp_path: Path, recall_in_doc: str) -> Path:
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    (measurements / "costmap_bench_x.json").write_text(json.dumps({"models_in_the_loop": _row(0.6),
                                                                    "gt_in_gt_out": _row(1.0)}))
    doc = tmp_path / "costmap.md"
    doc.write_text(
        "Bench x (`docs/measurements/costmap_bench_x.json`), obstacle recall 0.123 in prose:\n\n"
        "| | obstacle recall | obstacle precision | object recall | holes | false lethal | drop recall "
        "| false lethal on slopes | labelled object recall |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| models in the loop | {recall_in_doc} | 0.500 | 0.750 (6 of 8) | 1.2 % | 2.1 % | 0.400 | 0.3 % "
        "| 1.000 (2 of 2) |\n"
        "\nLabels alone, the same file:\n\n"
        "| | obstacle recall | obstacle precision | object recall | holes | false lethal |\n"
        "|---|---|---|---|---|---|\n"
        "| GT depth + GT labels (control) | 1.000 | 0.500 | 0.750 (6 of 8) | 1.2 % | 2.1 % |\n")
    return doc


def test_the_committed_costmap_doc_matches_its_bench_jsons(tables, capsys) -> None:
    """Every table row of docs/costmap.md is the JSON it cites (after a re-run: --write)."""
    assert tables.main([]) == 0, capsys.readouterr().out
    assert len(tables.expected_lines(tables.DEFAULT_DOC, tables.ROOT / "docs" / "measurements")) >= 15


def test_a_stale_row_is_named_and_rewritten_and_prose_is_left_alone(tables, tmp_path: Path, capsys) -> None:
    doc = _doc(tmp_path, "0.555")
    args = ["--doc", str(doc), "--measurements", str(tmp_path / "measurements")]
    assert tables.main(args) == 1
    out = capsys.readouterr().out
    assert f"{doc}:5" in out and "| models in the loop | 0.600 |" in out
    assert tables.main([*args, "--write"]) == 0
    text = doc.read_text()
    assert "| models in the loop | 0.600 | 0.500 | 0.750 (6 of 8) | 1.2 % | 2.1 % | 0.400 | 0.3 % | 1.000 (2 of 2) |" in text
    assert "obstacle recall 0.123 in prose" in text  # sentences are a person's job
    assert "| GT depth + GT labels (control) | 1.000 | 0.500 | 0.750 (6 of 8) | 1.2 % | 2.1 % |\n" in text  # 5 columns kept
    assert tables.main(args) == 0


def test_rows_without_a_readable_json_are_refused_by_name(tables, tmp_path: Path, capsys) -> None:
    doc = _doc(tmp_path, "0.600")
    (tmp_path / "measurements" / "costmap_bench_x.json").write_text("{truncated")
    assert tables.main(["--doc", str(doc), "--measurements", str(tmp_path / "measurements")]) == 2
    assert f"{doc}:5: cites {tmp_path / 'measurements' / 'costmap_bench_x.json'}" in capsys.readouterr().err
    orphan = tmp_path / "orphan.md"
    orphan.write_text("| models in the loop | 0.5 |\n")
    assert tables.main(["--doc", str(orphan)]) == 2
    assert "no bench JSON named above it" in capsys.readouterr().err
