"""Compare costmap-bench results of two or more runs, seed by seed.

One run's costmap differs from another's by about as much as one training
seed moves it (models/reports/training_runs/README.md, runs 12 and 14), so a
difference in the totals alone is weak evidence. This prints, for each
candidate against the base: each measure's total, the change, and on how many
of the drives (seeds) it moved the right way (a measure with a lower-is-better
goal, such as holes, moves the right way when it falls).

Both files must come from ``bench/bench_costmap.py`` on the same drives (seeds,
frames, rig); other models or costmap parameters are what is compared.

    python bench/compare_costmap.py BASE.json CANDIDATE.json [MORE.json ...]
    python bench/compare_costmap.py BASE.json X.json --row model_depth_gt_labels --out /tmp/compare.md
    python bench/compare_costmap.py --pairs B1.json C1.json B2.json C2.json ... --out /tmp/compare.md

``--pairs`` compares each candidate with its own base (benches of different drives or rigs, one change between
each pair) and adds the measures pooled over all pairs: from the summed cell and group counts, so a large bench
weighs as much as its cells.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The bench JSON fields that must agree for two results to be comparable.
SAME_DRIVES_KEYS = ("rig", "drive")
# Values this close are the same (the bench's ratios come out a few ulp apart on another machine).
SAME = 1e-9


class CompareError(ValueError):
    """Results that cannot be compared (naming the file and the field)."""


@dataclass(frozen=True)
class MeasureChange:
    """One measure of one candidate against the base."""

    measure: str
    base: float
    candidate: float
    higher_is_better: bool
    seeds_better: int
    seeds_worse: int
    seeds: int

    @property
    def change(self) -> float:
        return self.candidate - self.base


def load_result(path: Path) -> dict[str, Any]:
    """A bench JSON, or a CompareError naming the file."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CompareError(f"{path}: not a readable bench JSON ({err})") from err
    for key in (*SAME_DRIVES_KEYS, "per_seed"):
        if key not in result:
            raise CompareError(f"{path}: no field {key!r} (not written by bench/bench_costmap.py?)")
    return result


def higher_is_better(goal: str) -> bool:
    """Direction of a goal string of the bench (``">= 0.95"`` or ``"<= 0.02"``)."""
    goal = goal.strip()
    if goal.startswith(">="):
        return True
    if goal.startswith("<="):
        return False
    raise CompareError(f"goal {goal!r} is neither '>= x' nor '<= x'")


def compare(base: dict[str, Any], candidate: dict[str, Any], row: str = "models_in_the_loop",
            names: tuple[str, str] = ("base", "candidate")) -> list[MeasureChange]:
    """Each goal measure of ``row``: totals, and per seed how often the candidate moved the right way.

    Raises:
        CompareError: different drives, a missing row or seed.
    """
    for key in SAME_DRIVES_KEYS:
        if base[key] != candidate[key]:
            raise CompareError(f"{names[1]}: field {key!r} is {candidate[key]} but {names[0]}'s is {base[key]}; "
                               "compare results of the same drives")
    for name, result in zip(names, (base, candidate), strict=True):
        if row not in result:
            raise CompareError(f"{name}: no row {row!r}")
    goals = base[row]["goals"]
    seeds = sorted(base["per_seed"])
    changes = []
    for measure, goal in goals.items():
        up = higher_is_better(goal)
        better = worse = counted = 0
        for seed in seeds:
            b, c = base["per_seed"][seed].get(row, {}), candidate["per_seed"].get(seed, {}).get(row)
            if c is None:
                raise CompareError(f"{names[1]}: no row {row!r} for seed {seed}")
            b_value, c_value = b.get(measure), c.get(measure)
            if b_value is None or c_value is None or not math.isfinite(b_value + c_value):
                continue  # no such cells on this drive (e.g. no drops: None; no slopes: NaN)
            counted += 1
            if abs(c_value - b_value) > SAME:
                if (c_value > b_value) == up:
                    better += 1
                else:
                    worse += 1
        changes.append(MeasureChange(measure, float(base[row][measure]), float(candidate[row][measure]), up,
                                     better, worse, counted))
    return changes


def markdown(base_name: str, candidate_name: str, row: str, changes: list[MeasureChange]) -> str:
    """A Markdown table of one comparison."""
    lines = [f"`{candidate_name}` against `{base_name}` (row `{row}`)", "",
             "| measure | base | candidate | change | drives better / worse / of |", "|---|---|---|---|---|"]
    for ch in changes:
        arrow = "higher is better" if ch.higher_is_better else "lower is better"
        lines.append(f"| {ch.measure} ({arrow}) | {ch.base:.3f} | {ch.candidate:.3f} | {ch.change:+.3f} | "
                     f"{ch.seeds_better} / {ch.seeds_worse} / {ch.seeds} |")
    return "\n".join(lines) + "\n"


def pooled_markdown(pairs: list[tuple[dict[str, Any], dict[str, Any]]], row: str) -> str:
    """A Markdown table of the measures pooled over every pair (summed counts) and on how many pairs each moved
    the right way."""
    from perception_core.metrics.costmap import measures_from_counts

    totals = []
    for side in (0, 1):
        counts: dict[str, int] = {}
        for pair in pairs:
            for key, value in pair[side][row]["counts"].items():
                counts[key] = counts.get(key, 0) + value
        totals.append(measures_from_counts(counts))
    goals = pairs[0][0][row]["goals"]
    lines = [f"Pooled over {len(pairs)} pairs (row `{row}`; summed counts)", "",
             "| measure | base | candidate | change | pairs better / worse / of |", "|---|---|---|---|---|"]
    for measure, goal in goals.items():
        up = higher_is_better(goal)
        moved = [(c[row][measure], b[row][measure]) for b, c in pairs
                 if math.isfinite(b[row][measure] + c[row][measure])]
        better = sum(1 for c, b in moved if abs(c - b) > SAME and (c > b) == up)
        worse = sum(1 for c, b in moved if abs(c - b) > SAME and (c > b) != up)
        base, cand = totals[0][measure], totals[1][measure]
        arrow = "higher is better" if up else "lower is better"
        lines.append(f"| {measure} ({arrow}) | {base:.3f} | {cand:.3f} | {cand - base:+.3f} | "
                     f"{better} / {worse} / {len(moved)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, nargs="?", help="bench_costmap.py JSON of the reference run")
    parser.add_argument("candidates", type=Path, nargs="*", help="bench_costmap.py JSONs to compare with it")
    parser.add_argument("--pairs", type=Path, nargs="+", metavar="JSON",
                        help="BASE CANDIDATE BASE CANDIDATE ...: each candidate against its own base, and pooled")
    parser.add_argument("--row", default="models_in_the_loop",
                        help="which input combination to compare (a top-level row of the JSON; default models_in_the_loop)")
    parser.add_argument("--out", type=Path, help="also write the tables as Markdown here")
    args = parser.parse_args(argv)
    if args.pairs is not None:
        if args.base is not None or len(args.pairs) % 2:
            parser.error("--pairs takes BASE CANDIDATE pairs (an even number of files) and no positional files")
    elif args.base is None or not args.candidates:
        parser.error("give BASE and at least one CANDIDATE, or --pairs")
    try:
        tables = []
        if args.pairs is not None:
            pairs = []
            for base_path, path in zip(args.pairs[::2], args.pairs[1::2], strict=True):
                base, candidate = load_result(base_path), load_result(path)
                changes = compare(base, candidate, args.row, (str(base_path), str(path)))
                tables.append(markdown(str(base_path), str(path), args.row, changes))
                pairs.append((base, candidate))
            tables.insert(0, pooled_markdown(pairs, args.row))
        else:
            base = load_result(args.base)
            for path in args.candidates:
                changes = compare(base, load_result(path), args.row, (str(args.base), str(path)))
                tables.append(markdown(str(args.base), str(path), args.row, changes))
    except CompareError as err:
        print(f"compare_costmap: {err}", file=sys.stderr)
        return 2
    text = "\n".join(tables)
    print(text, end="")
    if args.out:
        args.out.write_text(f"Command: `python bench/compare_costmap.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
                            + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
