"""bench/rerun_measurements.py: re-running the command a measurement JSON records."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest


@pytest.fixture
def rerun(load_repo_script):
    return load_repo_script("bench/rerun_measurements.py")


def _record(path: Path, command: str) -> Path:
    path.write_text(json.dumps({"command": command, "value": 1}))
    return path


def test_the_recorded_command_is_run_with_this_python(rerun, tmp_path: Path) -> None:
    file = _record(tmp_path / "m.json", f"python bench/bench_x.py --seeds 1 2 --out {tmp_path / 'm.json'}")
    assert rerun.recorded_command(file) == [sys.executable, "bench/bench_x.py", "--seeds", "1", "2",
                                            "--out", str(tmp_path / "m.json")]


def test_an_empty_value_survives_the_record_and_the_rerun(rerun, tmp_path: Path) -> None:
    """Benches record shlex.join(argv): `--range-correction ''` (correction off) must come back as an argument.

    Joined with spaces it became `--range-correction  --out ...`, which the bench's parser refuses.
    """
    argv = ["--range-correction", "", "--out", str(tmp_path / "m.json")]
    file = _record(tmp_path / "m.json", "python bench/bench_x.py " + shlex.join(argv))
    assert rerun.recorded_command(file)[2:] == argv


def test_into_and_append_measure_a_variant_beside_the_record(rerun, tmp_path: Path, capsys) -> None:
    """--into moves each bench's --out (adding one where the command had none); --append adds the variant's
    arguments; the committed record is not touched."""
    default = rerun.ROOT / "docs" / "measurements" / "costmap_bench.json"
    into = tmp_path / "variant"
    command = rerun.redirected(rerun.recorded_command(default), default, into, ["--interpolate-levels", "false"])
    assert command[1] == "bench/bench_costmap.py"
    assert command[command.index("--out") + 1] == str(into / "costmap_bench.json")
    assert command[-2:] == ["--interpolate-levels", "false"] and command.count("--out") == 1
    file = _record(tmp_path / "m.json", f"python bench/bench_x.py --seeds 1 --out {tmp_path / 'm.json'}")
    assert rerun.main([str(file), "--into", str(into), "--append", "--range-correction ''", "--dry-run"]) == 0
    printed = shlex.split(capsys.readouterr().out.strip())
    assert printed[1:] == ["bench/bench_x.py", "--seeds", "1", "--out", str(into / "m.json"), "--range-correction", ""]
    assert json.loads(file.read_text())["value"] == 1
    # Appending without --into would overwrite the record with another measurement.
    with pytest.raises(SystemExit):
        rerun.main([str(file), "--append", "--interpolate-levels false"])
    # A module's --out may be a folder: not redirected.
    fit = _record(tmp_path / "fit.yaml", "")
    fit.write_text(f"source:\n  command: python -m model_tools.depth_range_fit --out {fit}\n")
    with pytest.raises(rerun.RerunError, match="bench commands only"):
        rerun.redirected(rerun.recorded_command(fit), fit, into, [])


def test_a_command_without_out_must_be_the_bench_default_file(rerun, tmp_path: Path) -> None:
    default = rerun.ROOT / "docs" / "measurements" / "costmap_bench.json"
    assert rerun.recorded_command(default)[1] == "bench/bench_costmap.py"
    copy = _record(tmp_path / "costmap_bench.json", json.loads(default.read_text())["command"])
    with pytest.raises(rerun.RerunError, match=r"costmap_bench\.json.*not this file"):
        rerun.recorded_command(copy)


@pytest.mark.parametrize("command, reason", [
    (None, "no recorded 'command'"),
    ("bash run.sh", "not 'python bench/...'"),
    ("python bench/bench_x.py --out /elsewhere/m.json", "writes /elsewhere/m.json, not this file"),
])
def test_files_that_cannot_be_rerun_are_refused_by_name(rerun, tmp_path: Path, command, reason) -> None:
    file = tmp_path / "m.json"
    file.write_text(json.dumps({} if command is None else {"command": command}))
    with pytest.raises(rerun.RerunError, match=f"{re.escape(str(file))}: .*{re.escape(reason)}"):
        rerun.recorded_command(file)
    assert rerun.main([str(file)]) == 2


def test_a_failing_command_is_named_and_fails_the_run(rerun, tmp_path: Path, capsys) -> None:
    """A real subprocess: compare_costmap.py on files that do not exist exits non-zero."""
    file = _record(tmp_path / "m.json", f"python bench/compare_costmap.py {tmp_path}/a.json {tmp_path}/b.json "
                                        f"--out {tmp_path / 'm.json'}")
    assert rerun.main([str(file), "--jobs", "2", "--log-dir", str(tmp_path / "logs")]) == 1
    assert f"FAIL (exit 2) {file}" in capsys.readouterr().out
    assert "not a readable bench JSON" in (tmp_path / "logs" / "m.log").read_text()
    assert json.loads(file.read_text())["value"] == 1  # the failed command left the file as it was


def test_skip_refused_names_the_one_off_record_and_runs_the_rest(rerun, tmp_path: Path, capsys) -> None:
    """A glob catches one-off records (their --out names another file); --skip-refused runs the others."""
    record = _record(tmp_path / "old.json", f"python bench/bench_x.py --out {tmp_path / 'other.json'}")
    runnable = _record(tmp_path / "m.json", f"python bench/compare_costmap.py {tmp_path}/a.json {tmp_path}/b.json "
                                            f"--out {tmp_path / 'm.json'}")
    assert rerun.main([str(record), str(runnable), "--dry-run"]) == 2  # strict by default: nothing runs
    capsys.readouterr()
    assert rerun.main([str(record), str(runnable), "--skip-refused", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert f"skipped: {record}" in captured.err and "not this file" in captured.err
    assert captured.out.strip().split("\n") == [f"{sys.executable} bench/compare_costmap.py {tmp_path}/a.json "
                                                f"{tmp_path}/b.json --out {tmp_path / 'm.json'}"]


def test_camera_reports_and_range_corrections_are_rerun_by_their_module(rerun, tmp_path: Path) -> None:
    """`python -m model_tools.eval_cameras --out DIR` wrote DIR/cameras.json; a fit's YAML holds source.command."""
    cameras = tmp_path / "cams" / "cameras.json"
    cameras.parent.mkdir()
    _record(cameras, f"python -m model_tools.eval_cameras --model m.onnx --out {cameras.parent} --seed 3")
    assert rerun.recorded_command(cameras) == [sys.executable, "-m", "model_tools.eval_cameras", "--model", "m.onnx",
                                               "--out", str(cameras.parent), "--seed", "3"]
    fit = tmp_path / "fit.yaml"
    fit.write_text(f"format: x\nsource:\n  command: python -m model_tools.depth_range_fit --model m.onnx\n"
                   f"    --out {fit} --workers 2\n")
    assert rerun.recorded_command(fit)[1:] == ["-m", "model_tools.depth_range_fit", "--model", "m.onnx",
                                               "--out", str(fit), "--workers", "2"]
    elsewhere = tmp_path / "old.yaml"
    elsewhere.write_text(f"source:\n  command: python -m model_tools.depth_range_fit --out {fit}\n")
    with pytest.raises(rerun.RerunError, match=f"{re.escape(str(elsewhere))}: its command writes .*fit.yaml"):
        rerun.recorded_command(elsewhere)
    unknown = _record(tmp_path / "u.json", "python -m model_tools.other --out u.json")
    with pytest.raises(rerun.RerunError, match=r"not 'python bench/\.\.\.' or 'python -m \{model_tools"):
        rerun.recorded_command(unknown)


def test_every_committed_range_correction_and_camera_report_can_be_rerun(rerun, capsys) -> None:
    """What a retrained model needs measured again: each fit and held-out camera set, by its own command."""
    files = sorted((rerun.ROOT / "config" / "range_correction").glob("*.yaml"))
    files += sorted((rerun.ROOT / "models" / "reports").glob("depth_cameras*/cameras.json"))
    # The FP32 model's fit and the four held-out camera sets at least (and the INT8 model's fit).
    assert rerun.ROOT / "config" / "range_correction" / "depth_levels_r18.yaml" in files
    assert len(files) >= 5
    assert rerun.main([*map(str, files), "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip().split("\n")
    assert len(printed) == len(files)
    for file, line in zip(files, printed, strict=True):
        words = shlex.split(line)
        out = Path(words[words.index("--out") + 1])
        assert (rerun.ROOT / out).resolve() in (file.resolve(), file.parent.resolve()), line


def test_a_module_command_runs_in_this_environment(rerun, tmp_path: Path, capsys) -> None:
    """A real subprocess: eval_cameras is found (not 'No module named') and refuses a model that is not there."""
    cameras = tmp_path / "cams" / "cameras.json"
    cameras.parent.mkdir()
    _record(cameras, f"python -m model_tools.eval_cameras --model {tmp_path / 'missing.onnx'} --out {cameras.parent}")
    assert rerun.main([str(cameras), "--log-dir", str(tmp_path / "logs")]) == 1
    assert "FAIL (exit" in capsys.readouterr().out
    log = (tmp_path / "logs" / "cameras.log").read_text()
    assert "eval_cameras: error: " in log and "missing.onnx: model file does not exist" in log
    assert "Traceback" not in log


def test_files_that_share_a_stem_get_their_own_logs(rerun, tmp_path: Path) -> None:
    """Every camera report is cameras.json, and a bench shares its stem with its without-correction twin."""
    a, b, c = tmp_path / "set_a" / "cameras.json", tmp_path / "set_b" / "cameras.json", tmp_path / "x" / "bench.json"
    assert rerun.log_names([a, b, c]) == {a: "set_a_cameras", b: "set_b_cameras", c: "bench"}


def test_a_broken_range_correction_is_refused_by_name(rerun, tmp_path: Path) -> None:
    broken = tmp_path / "fit.yaml"
    broken.write_text("source: [unclosed\n")
    with pytest.raises(rerun.RerunError, match=f"{re.escape(str(broken))}: no recorded 'command'.*not YAML"):
        rerun.recorded_command(broken)
