"""System test: `make demo`'s script in its reduced mode, end to end over real DDS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.system, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def test_demo_reduced_mode_runs_both_paths_and_they_agree(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # With the real models the automatic replay rate is ~0.03x (a frame every ~3 s). The costmap node must pair
    # each frame's labels with that frame's depth (no flat-ground fallback), so the live costmaps match the
    # offline ones cell for cell.
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--frames", "3", "--size", "64x54", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo finished" in done.stdout and str(out / "offline" / "report.html") in done.stdout
    offline = json.loads((out / "offline" / "metrics.json").read_text())
    live = json.loads((out / "live" / "metrics.json").read_text())
    assert offline["partial"] is False and offline["frames_evaluated"] == 3
    assert live["path"] == "live" and live["frames_in_bag"] == 3
    assert live["frames_scored"] >= 2  # the nodes keep only the newest frame; at most one may be lost
    agreement = live["agreement_with_offline"]
    assert agreement["agree"] is True
    assert agreement["frames_compared"] == live["frames_scored"]
    assert agreement["depth_max_abs_diff_m"] <= 1e-3
    assert agreement["label_agreement_min"] == 1.0
    assert agreement["costmap_cell_agreement_min"] == 1.0 and agreement["costmap_flat_ground_frames"] == 0
    stack_params = yaml.safe_load((out / "live" / "stack_params.yaml").read_text())
    costmap_params = next(v for k, v in stack_params.items() if k.split("/")[-1] == "costmap_node")["ros__parameters"]
    assert costmap_params["depth_timeout_s"] >= min(60.0, 1.0 / live["replay_rate"])
    assert live["latency_ms"]["end_to_end_ms"]["count"] == live["frames_scored"]
    recorded = out / "live" / "outputs_bag"
    assert (recorded / "metadata.yaml").is_file()
    assert (out / "live" / "report.html").read_text().count("data:image/png;base64,") >= 5
