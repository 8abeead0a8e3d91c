"""`convert` end to end on a tiny FP32 ONNX, and the CLI wiring of the INT8 subcommands."""

from __future__ import annotations

import json

import pytest
from quant_fixtures import write_dataset

from model_tools.cli import main
from model_tools.quant.convert import convert, new_output_folder
from model_tools.quant.images import ImageSource
from perception_core.testing.tiny_models import make_tiny_depth_model


@pytest.mark.htp
def test_convert_from_fp32_onnx_writes_everything_in_a_new_folder(tmp_path):
    data = write_dataset(tmp_path / "ds", n=3)
    fp32 = make_tiny_depth_model(tmp_path / "depth.onnx", outputs="separate", levels=32)
    run = tmp_path / "run"
    first = convert(onnx_path=fp32, out_parent=run / "deploy", calibration=ImageSource(folder=str(data), split="train"),
                    validation=ImageSource(folder=str(data), split="val"), calibration_count=3, htp_frames=1,
                    progress=False)
    folder = run / "deploy" / first["folder"].split("/")[-1]
    for name in ("model_fp32.onnx", "model_qdq.onnx", "model_ctx.onnx", "model_ctx.placement.json",
                 "conversion_summary.json", "conversion_summary.md", "comparison.json", "compare/comparison.md"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "conversion_summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["steps"]["compile"]["placement"]["all_on_npu"] is True
    assert summary["steps"]["quantize"]["calibration_images"] == 3
    assert summary["steps"]["compare"]["htp_agreement"]["frames"] == 1
    assert "verdict" in (folder / "conversion_summary.md").read_text()
    second = convert(onnx_path=fp32, out_parent=run / "deploy", calibration=ImageSource(folder=str(data), split="train"),
                     calibration_count=3, htp_frames=0, progress=False)
    assert second["folder"] != first["folder"] and (folder / "model_ctx.onnx").is_file()


def test_new_output_folder_never_reuses(tmp_path):
    a, b = new_output_folder(tmp_path), new_output_folder(tmp_path)
    assert a != b and a.is_dir() and b.is_dir()


def test_cli_quantize_and_errors(tmp_path, capsys):
    data = write_dataset(tmp_path / "ds", splits=("train",), n=2)
    fp32 = make_tiny_depth_model(tmp_path / "depth.onnx", outputs="separate")
    out = tmp_path / "q.onnx"
    args = ["quantize", "--model", str(fp32), "--out", str(out), "--calib-data", str(data), "--calib-count", "2"]
    assert main(args) == 0
    assert "w8a8+head16" in capsys.readouterr().out  # depth models default to 16-bit heads
    assert main(args) == 1
    assert "q.onnx exists" in capsys.readouterr().err
    assert main(["quantize", "--model", str(fp32), "--out", str(out)]) == 1
    assert "exactly one calibration source" in capsys.readouterr().err
