"""Every model-tools command that writes checks its output before it starts: run as a user runs it, in a subprocess.

The output lies in a folder that refuses new files. Each command must fail
at once with exit code 1 and one line naming the option and the folder,
never a traceback and never after the work. eval-bag, whose run is the
longest, is checked on a real bag in test_bag_eval.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from perception_core.testing.cli import one_line_error, run_command, unwritable_folder

REPO = Path(__file__).resolve().parents[3]
DEPTH_CONFIG = REPO / "config" / "train" / "depth_levels_r18.yaml"
SEG_CONFIG = REPO / "config" / "train" / "seg_ddrnet23s.yaml"
OUTCOME = "exit 1 before any work, one error line naming the option and the unwritable folder"

# (command words, output option, output name under the locked folder, other arguments).
# Inputs need not exist: the output check comes first.
WRITERS: list[tuple[tuple[str, ...], str, str, tuple[str, ...]]] = [
    (("synth",), "--out", "synth", ("--frames", "1", "--width", "16", "--height", "16", "--no-progress")),
    (("synth",), "--bag", "drive", ("--frames", "1", "--width", "16", "--height", "16", "--no-progress")),
    (("depth", "train"), "--run-dir", "run", ("--config", str(DEPTH_CONFIG))),
    (("depth", "eval"), "--out", "eval", ("--checkpoint", "missing.pt", "--data", "missing_data")),
    (("depth", "export"), "--out", "depth.onnx", ("--checkpoint", "missing.pt")),
    (("depth", "validate"), "--report", "report.json", ("--checkpoint", "missing.pt", "--onnx", "missing.onnx")),
    (("depth", "join"), "--out", "joined.pt", ("--prefix", "missing")),
    (("seg", "train"), "--run-dir", "run", ("--config", str(SEG_CONFIG))),
    (("seg", "eval"), "--out", "eval", ("--checkpoint", "missing.pt")),
    (("seg", "export"), "--out", "seg.onnx", ("--checkpoint", "missing.pt")),
    (("seg", "validate"), "--onnx", "seg.onnx", ("--checkpoint", "missing.pt")),
    (("seg", "load-official"), "--out", "official.pt", ("--checkpoint", "missing.pth")),
    (("quantize",), "--out", "qdq.onnx", ("--model", "missing.onnx", "--calib-data", "missing_data")),
    (("sensitivity",), "--out-dir", "sens", ("--model", "missing.onnx", "--calib-data", "d", "--data", "d")),
    (("compile",), "--out", "ctx.onnx", ("--model", "missing.onnx")),
    (("compare",), "--out-dir", "compare", ("--fp32", "a.onnx", "--int8", "b.onnx", "--data", "d")),
    (("convert",), "--out-dir", "deploy", ("--onnx", "missing.onnx", "--calib-data", "d")),
]


@pytest.fixture(scope="module")
def locked_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with unwritable_folder(tmp_path_factory.mktemp("outputs")) as folder:
        if folder is None:
            pytest.skip("no folder on this machine refuses new files")
        yield folder


@pytest.mark.parametrize(
    ("words", "option", "name", "rest"),
    [pytest.param(*w, id=" ".join((*w[0], w[1])),
                  marks=pytest.mark.reliability(case=f"output folder not writable: model-tools {' '.join(w[0])} {w[1]}",
                                                outcome=OUTCOME))
     for w in WRITERS],
)
def test_unwritable_output_fails_before_the_work(locked_folder: Path, tmp_path: Path, words: tuple[str, ...],
                                                 option: str, name: str, rest: tuple[str, ...]) -> None:
    target = locked_folder / name
    result = run_command("model_tools.cli", *words, option, target, *rest, cwd=tmp_path)
    line = one_line_error(result, option, locked_folder)
    assert f"model-tools {words[0]}" in line and "not writable" in line
    assert not target.exists()


@pytest.mark.reliability(case="model-tools synth --out under a regular file",
                         outcome="exit 1, one error line naming the file in the way; nothing written")
def test_synth_out_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    result = run_command("model_tools.cli", "synth", "--out", tmp_path / "notes.txt" / "synth", "--frames", "1",
                         "--width", "16", "--height", "16", "--no-progress", cwd=tmp_path)
    line = one_line_error(result, "--out", tmp_path / "notes.txt")
    assert "is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.reliability(case="model-tools compile on a truncated model file",
                         outcome="exit 1, one error line naming the model as not a readable ONNX model; nothing written")
def test_compile_on_a_truncated_model(tmp_path: Path) -> None:
    from perception_core.testing.tiny_models import make_tiny_seg_model

    whole = make_tiny_seg_model(tmp_path / "seg.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) // 2])
    result = run_command("model_tools.cli", "compile", "--model", cut, "--out", tmp_path / "ctx.onnx", cwd=tmp_path)
    line = one_line_error(result, cut)
    assert "not a readable ONNX model" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.onnx", "seg.onnx"]
