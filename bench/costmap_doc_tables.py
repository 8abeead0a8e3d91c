"""Check (or rewrite) the costmap tables of the docs against the bench JSONs they cite.

``docs/costmap.md`` quotes each costmap bench as a Markdown table under the
paragraph that names its JSON (``docs/measurements/costmap_bench*.json``).
After the benches are measured again (``bench/rerun_measurements.py``), every
row must be typed anew; this does it from the files, so a table cannot drift
from the measurement it cites:

    python bench/costmap_doc_tables.py            # exit 1 and list the rows that differ
    python bench/costmap_doc_tables.py --write    # rewrite them in place

A row is recognised by its label (``models in the loop``, ``GT depth + GT
labels (control)``, ...) and belongs to the last JSON named above it; a table
with fewer columns (labels alone) keeps its columns. Other rows and all prose
are left alone: the numbers in sentences still need a person.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOC = ROOT / "docs" / "costmap.md"
# Row label in the docs -> the bench JSON's row.
ROW_LABELS = {
    "models in the loop": "models_in_the_loop",
    "GT depth + GT labels (control)": "gt_in_gt_out",
    "GT depth + model labels": "gt_depth_model_labels",
    "model depth + GT labels": "model_depth_gt_labels",
    "... with GT depth on the ground pixels": "gt_ground_depth_gt_labels",
    "... with GT depth on standing obstacles": "gt_obstacle_depth_gt_labels",
    "... with each obstacle's own offset removed": "object_offset_removed_depth_gt_labels",
    "... scaled per frame to fit the truth": "frame_scaled_depth_gt_labels",
}
CITED_JSON = re.compile(r"docs/measurements/(costmap_bench[\w.]*\.json)")


class DocTableError(ValueError):
    """A table row whose bench JSON or row cannot be read (naming the doc line and the file)."""


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def table_cells(row: dict[str, Any]) -> list[str]:
    """The cells after the label, in the docs' column order."""
    counts = row["counts"]
    return [f"{row['obstacle_recall']:.3f}", f"{row['obstacle_precision']:.3f}",
            f"{row['object_recall']:.3f} ({counts['gt_groups_touched']} of {counts['gt_groups']})",
            percent(row["holes"]), percent(row["false_lethal"]), f"{row['drop_recall']:.3f}",
            percent(row["false_lethal_on_slopes"]),
            f"{row['labelled_object_recall']:.3f} ({counts['gt_labelled_groups_touched']} of "
            f"{counts['gt_labelled_groups']})"]


def expected_lines(doc: Path, measurements: Path) -> list[tuple[int, str, str]]:
    """(line number, line as it is, line as the JSON says) of every recognised row."""
    rows = []
    cited = None
    results: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        names = CITED_JSON.findall(line)
        if names:
            cited = names[-1]
        cells = [cell.strip() for cell in line.split("|")[1:-1]] if line.startswith("| ") else []
        if not cells or cells[0] not in ROW_LABELS:
            continue
        if cited is None:
            raise DocTableError(f"{doc}:{number}: row {cells[0]!r} with no bench JSON named above it")
        if cited not in results:
            path = measurements / cited
            try:
                results[cited] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise DocTableError(f"{doc}:{number}: cites {path}, which cannot be read ({error})") from error
        result = results[cited].get(ROW_LABELS[cells[0]])
        if result is None:
            raise DocTableError(f"{doc}:{number}: {cited} has no row {ROW_LABELS[cells[0]]!r}")
        wanted = table_cells(result)[: len(cells) - 1]
        rows.append((number, line, "| " + " | ".join([cells[0], *wanted]) + " |"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="Markdown file with the tables")
    parser.add_argument("--measurements", type=Path, default=ROOT / "docs" / "measurements",
                        help="folder of the cited bench JSONs")
    parser.add_argument("--write", action="store_true", help="rewrite the rows that differ")
    args = parser.parse_args(argv)
    try:
        rows = expected_lines(args.doc, args.measurements)
    except DocTableError as error:
        print(f"costmap_doc_tables: {error}", file=sys.stderr)
        return 2
    stale = [(number, old, new) for number, old, new in rows if old != new]
    for number, old, new in stale:
        print(f"{args.doc}:{number}\n  doc:  {old}\n  json: {new}")
    if stale and args.write:
        lines = args.doc.read_text().split("\n")
        for number, _, new in stale:
            lines[number - 1] = new
        args.doc.write_text("\n".join(lines))
        print(f"rewrote {len(stale)} of {len(rows)} rows in {args.doc}")
        return 0
    print(f"{len(rows) - len(stale)} of {len(rows)} rows match their bench JSON")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
