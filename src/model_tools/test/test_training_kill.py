"""Training runs killed with SIGKILL (mid-step or mid-checkpoint-write) and resumed, through the CLI in subprocesses.

The depth task trains a tiny net on a tiny synthetic folder with one loader
worker. ``kill_harness.py`` kills its own process half-way through a chosen
checkpoint write; the step-17 case is killed from outside, at whatever
moment the process happens to be in when step 17 appears in its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_tools.cli import main as cli

REPO = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).with_name("kill_harness.py")
TINY = ["model.width=8", "model.decoder_channels=[4,8,8,16,16]", "model.input_height=64", "model.input_width=96",
        "batch_size=2", "num_workers=1", "epochs=3", "log_every_steps=1", "checkpoint_every_steps=5",
        "progress_bar=false", "val_every_epochs=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    assert cli(["synth", "--out", str(root), "--frames", "16", "--width", "128", "--height", "96",
                "--val-fraction", "0.25", "--seed", "3", "--no-progress"]) == 0
    return root


def _args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [arg for item in TINY for arg in ("--set", item)]
    return ["depth", "train", "--config", str(REPO / "config/train/depth_levels_r18.yaml"), "--data", str(data),
            "--run-dir", str(run_dir), *sets, *extra]


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def _train(data: Path, run_dir: Path, *extra: str, kill_in_write: int = 0,
           threads: int = 1) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(HARNESS), str(kill_in_write), "--", *_args(data, run_dir, *extra)]
    return subprocess.run(command, env=_env(threads), capture_output=True, text=True, timeout=300, cwd=REPO)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last_fp16.pt", weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("straight") / "run"
    done = _train(data, run)
    assert done.returncode == 0, done.stderr[-2000:]
    return _weights(run)


@pytest.mark.reliability(case="training killed (SIGKILL) half-way through writing a checkpoint",
                         outcome="the next start deletes the partial temp file, names it, and resumes exactly from the previous checkpoint")
def test_killed_checkpoint_write_is_cleaned_and_resume_is_exact(data: Path, tmp_path: Path,
                                                                 straight: dict[str, torch.Tensor]) -> None:
    run = tmp_path / "run"
    killed = _train(data, run, kill_in_write=2)  # the write at step 10; step 5's checkpoint is complete
    assert killed.returncode == -signal.SIGKILL
    temps = list((run / "checkpoints").glob(".last.*.pt.tmp.pt"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # what a SIGKILL leaves behind
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 5

    resumed = _train(data, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed 1 unfinished write(s)" in resumed.stdout and temps[0].name in resumed.stdout
    assert not temps[0].exists() and not list(run.rglob("*.tmp.*"))
    _assert_same(_weights(run), straight)


@pytest.mark.reliability(case="training killed (SIGKILL) while writing its first checkpoint, then started with --resume",
                         outcome="exit 1 with a one-line error saying to start again without --resume; that start trains normally")
def test_killed_first_checkpoint_write_says_what_to_do(data: Path, tmp_path: Path,
                                                      straight: dict[str, torch.Tensor]) -> None:
    run = tmp_path / "run"
    assert _train(data, run, kill_in_write=1).returncode == -signal.SIGKILL
    assert not (run / "checkpoints" / "last.pt").exists()

    refused = _train(data, run, "--resume")
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert "killed while writing the first one" in error and "start the run again without --resume" in error
    assert "Traceback" not in refused.stderr

    fresh = _train(data, run)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    _assert_same(_weights(run), straight)
    steps = [line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:] if line.startswith("train")]
    assert steps == [str(s) for s in range(1, 19)]  # the killed run's rows are gone, none repeated


@pytest.mark.reliability(case="training killed (SIGKILL) from outside at step 17, wherever it is, then resumed",
                         outcome="the resumed run's fp16 weights equal the uninterrupted run's bit for bit (CPU)")
def test_kill_at_step_17_then_resume_equals_the_straight_run(data: Path, tmp_path: Path,
                                                            straight: dict[str, torch.Tensor]) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "model_tools.cli", *_args(data, run)], env=_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.csv"
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and "\ntrain,17," in metrics.read_text():
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (run / "summary.json").exists(), "the run ended before the kill; the case was not exercised"

    resumed = _train(data, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same(_weights(run), straight)


@pytest.mark.reliability(case="training killed (SIGKILL), then resumed by a process with another intra-op thread count",
                         outcome="the resume takes the checkpointed run's thread count, says so, and equals the straight run bit for bit")
def test_resume_under_another_thread_count_computes_as_the_killed_run(data: Path, tmp_path: Path,
                                                                     straight: dict[str, torch.Tensor]) -> None:
    run = tmp_path / "run"
    assert _train(data, run, kill_in_write=3).returncode == -signal.SIGKILL  # last finished checkpoint: step 10
    resumed = _train(data, run, "--resume", threads=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming with 1 intra-op threads as the checkpointed run had (this process started with 2)" in resumed.stdout
    _assert_same(_weights(run), straight)
