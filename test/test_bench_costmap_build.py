"""bench/bench_costmap_build.py: it builds another revision's costmap beside today's, in turns, on the same frame."""

from __future__ import annotations

import json


def test_it_times_a_revision_beside_today_and_checks_they_build_the_same_grid(load_repo_script, tmp_path) -> None:
    bench = load_repo_script("bench/bench_costmap_build.py")
    exported = tmp_path / "export"
    bench.export_revision("HEAD", exported)
    sources = [p.read_text() for p in (exported / bench.BASE_NAME).rglob("*.py")]
    assert sources and not any("from perception_core." in s or "import perception_core\n" in s for s in sources)
    out = tmp_path / "turns.json"
    assert bench.main(["--base", "HEAD", "--frames", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["stages"]) == {"costmap build", "labels alone", "odom window"}
    assert report["depth_hw"] == [768, 896] and report["command"].startswith("python bench/bench_costmap_build.py")
    for stage in report["stages"].values():
        assert stage["base_ms"] > 0 and stage["today_ms"] > 0 and stage["ratio"] > 0
    warm = report["warm_up_s"]
    assert warm["load (cached)"] < warm["compile (empty cache)"]  # the second process found the first one's cache
