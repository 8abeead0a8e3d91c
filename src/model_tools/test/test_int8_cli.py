"""`model-tools compare`, `compile` and `sensitivity` through the command line on tiny models and data sets.

The library functions have their own tests (test_compare, test_compile, test_quant); these check that each
command passes its flags through: its outputs equal the library's on the same inputs, and flags with a
known effect (thresholds, counts, refusal to overwrite) have it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from quant_fixtures import write_dataset

from model_tools.cli import main
from model_tools.quant.compare import compare_models
from model_tools.quant.images import ImageSource
from model_tools.quant.quantize import QuantSettings, quantize_model
from perception_core.testing.tiny_models import make_tiny_depth_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("int8_cli")
    data = write_dataset(base / "ds", n=4)
    fp32 = make_tiny_depth_model(base / "depth.onnx", outputs="separate", levels=32)
    qdq = base / "depth_qdq.onnx"
    quantize_model(fp32, qdq, ImageSource(folder=str(data), split="train"), QuantSettings(head_bits=16), count=4,
                   progress=False)
    return {"data": data, "fp32": fp32, "qdq": qdq}


def test_compare_cli_matches_the_library_and_applies_its_flags(tmp_path: Path, tiny: dict[str, Path]) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    # Limits below zero: any INT8 result (even one better than FP32 by less than 0.2) is beyond 'warning'.
    thresholds.write_text("depth:\n  abs_rel: [-1.0, -0.5, -0.2]\n")
    out = tmp_path / "cli"
    argv = ["compare", "--fp32", str(tiny["fp32"]), "--int8", str(tiny["qdq"]), "--data", str(tiny["data"]),
            "--split", "val", "--count", "2", "--htp-frames", "0", "--thresholds", str(thresholds),
            "--no-save-outputs", "--out-dir", str(out)]
    assert main(argv) == 0
    cli = json.loads((out / "comparison.json").read_text())
    library = compare_models(tiny["fp32"], tiny["qdq"], ImageSource(folder=str(tiny["data"]), split="val"),
                             tmp_path / "lib", count=2, htp_frames=0, save_outputs=False, progress=False)
    assert cli["frames"] == library["frames"] == 2
    for key in ("fp32_metrics", "int8_metrics", "int8_vs_fp32_metrics", "head_errors"):
        assert cli[key] == library[key], key
    rated = cli["acceptability"]["metrics"]["abs_rel"]
    assert rated["limits"] == [-1.0, -0.5, -0.2] and rated["level"] == "unacceptable"
    assert cli["acceptability"]["overall"] == "unacceptable"
    assert library["acceptability"]["metrics"]["abs_rel"]["limits"] == [0.002, 0.005, 0.010]
    assert not list((out / "outputs").glob("*.npz"))  # --no-save-outputs
    assert cli["htp_agreement"]["frames"] == 0
    # An existing report is kept unless --overwrite.
    before = (out / "comparison.json").read_bytes()
    assert main(argv) == 1 and (out / "comparison.json").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0


def test_sensitivity_cli_ranks_the_parts_the_library_ranks(tmp_path: Path, tiny: dict[str, Path]) -> None:
    from model_tools.quant.sensitivity import run_sensitivity

    out = tmp_path / "cli"
    argv = ["sensitivity", "--model", str(tiny["fp32"]), "--calib-data", str(tiny["data"]), "--calib-count", "4",
            "--data", str(tiny["data"]), "--split", "val", "--count", "2", "--head-bits", "8",
            "--part-granularity", "node", "--out-dir", str(out)]
    assert main(argv) == 0
    cli = json.loads((out / "sensitivity.json").read_text())
    library = run_sensitivity(tiny["fp32"], ImageSource(folder=str(tiny["data"]), split="train"),
                              ImageSource(folder=str(tiny["data"]), split="val"), tmp_path / "lib",
                              settings=QuantSettings(head_bits=8), calibration_count=4, validation_count=2,
                              granularity="node", progress=False)
    assert [(p["part"], p["worse_by"]) for p in cli["parts"]] == [(p["part"], p["worse_by"]) for p in library["parts"]]
    # Node granularity: one part per quantizable node, named <OpType>_<index> (the tiny model's nodes are unnamed).
    ops = [n.op_type for n in onnx.load(str(tiny["fp32"])).graph.node]
    for part in cli["parts"]:
        op, index = part["part"].rsplit("_", 1)
        assert ops[int(index)] == op, part
    with open(out / "sensitivity.csv") as table:
        rows = list(csv.DictReader(table))
    assert [r["part"] for r in rows] == [p["part"] for p in cli["parts"]]
    assert "mixed_precision" not in cli  # no --target-worse-by: no search


@pytest.mark.htp
def test_compile_cli_writes_the_context_binary_and_its_placement(tmp_path: Path, tiny: dict[str, Path]) -> None:
    from perception_core.model_metadata import read_metadata
    from perception_core.runtime.loader import load_model

    out = tmp_path / "depth_ctx.onnx"
    argv = ["compile", "--model", str(tiny["qdq"]), "--out", str(out), "--soc-model", "77", "--htp-arch", "73"]
    assert main(argv) == 0
    placement = json.loads(out.with_suffix(".placement.json").read_text())
    qdq_nodes = onnx.load(str(tiny["qdq"])).graph.node
    assert placement["placement"]["nodes_total"] == len(qdq_nodes) == placement["placement"]["nodes_on_npu"]
    assert placement["placement"]["fallback_nodes"] == []
    assert (placement["soc_model"], placement["htp_arch"]) == ("77", "73")
    meta = read_metadata(out)
    assert meta.format == "qnn_context" and meta.extra["qnn_compile"]["soc_model"] == "77"
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32) * 0.6
    htp = load_model(out, backend="npu").run({"image": x})
    cpu = load_model(tiny["qdq"], backend="cpu").run({"image": x})
    assert np.mean(np.abs(htp["integer"] - cpu["integer"]) < 1.5 / 31) > 0.95
    before = out.read_bytes()
    assert main(argv) == 1 and out.read_bytes() == before  # refuses to overwrite
