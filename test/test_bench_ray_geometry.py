"""bench/bench_ray_geometry.py: it loads another revision's projection module and times it beside today's."""

from __future__ import annotations

import json


def test_it_times_a_revision_beside_today_and_a_small_move_costs_far_less(load_repo_script, tmp_path) -> None:
    bench = load_repo_script("bench/bench_ray_geometry.py")
    out = tmp_path / "ray_geometry.json"
    assert bench.main(["--base", "HEAD", "--frames", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    medians = report["median_ms"]
    assert set(medians) == {"base, full", "today, full", "today, moved 0.01 deg"}
    assert report["depth_hw"] == [768, 896] and report["command"].startswith("python bench/bench_ray_geometry.py")
    # Reusing the tables leaves only the rays to compute: a fraction of a full computation.
    assert medians["today, moved 0.01 deg"] < 0.5 * medians["today, full"]
