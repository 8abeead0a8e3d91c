"""`model-tools seg export/validate/load-official` end to end at 64x64, and the HTP load.

Uses a randomly initialised DDRNet23-Slim saved the way training saves it
(fp16 state dict with the aux head); the exported graph drops the aux head.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from model_tools.cli import main
from model_tools.models.ddrnet import ddrnet23_slim
from model_tools.training.checkpoint import fp16_state_dict, save_atomic
from perception_core.errors import ModelFileError
from perception_core.model_metadata import graph_sha256_of_file, read_metadata
from perception_core.ontology import load_ontology

# Ops the NPU path allows. BatchNormalization stays only where DDRNet's pre-activation order
# (BN -> ReLU -> Conv in DAPPM and the heads) leaves no Conv before it to fold into.
ALLOWED_OPS = {"Conv", "BatchNormalization", "Relu", "Add", "Resize", "Concat", "AveragePool", "GlobalAveragePool",
               "ArgMax", "Cast"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = ddrnet23_slim(num_classes=load_ontology().num_classes, aux_head=True)
    # Non-trivial BN statistics, so a missing BN fold or a wrong eval mode shows up in the comparison.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "model_fp16.pt"
    save_atomic(fp16_state_dict(model), path)
    return path


@pytest.mark.parametrize("output", ["logits", "class_id"])
def test_export_graph_metadata_and_validation(weights: Path, tmp_path: Path, output: str) -> None:
    out = tmp_path / f"seg_{output}.onnx"
    rc = main(["seg", "export", "--checkpoint", str(weights), "--out", str(out), "--variant", output,
               "--height", "64", "--width", "64"])
    assert rc == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 17
    ops = {node.op_type for node in model.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert ("ArgMax" in ops) == (output == "class_id")
    bn_count = sum(node.op_type == "BatchNormalization" for node in model.graph.node)
    assert bn_count == 12  # 11 in DAPPM (BN-ReLU-Conv) + the head's first BN; the rest are folded into Conv
    for node in model.graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: (a.s.decode() if a.type == onnx.AttributeProto.STRING else a.i) for a in node.attribute}
            assert attrs.get("mode") in ("linear", "nearest")
            assert attrs.get("coordinate_transformation_mode", "half_pixel") != "align_corners"
    (graph_input,) = model.graph.input
    assert graph_input.name == "rgb"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 3, 64, 64]
    (graph_output,) = model.graph.output
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    expected_channels = load_ontology().num_classes if output == "logits" else 1
    assert [d.dim_value for d in graph_output.type.tensor_type.shape.dim] == [1, expected_channels, 64, 64]

    meta = read_metadata(out)
    ontology = load_ontology()
    assert meta.task == "segmentation" and meta.seg_output == output
    assert meta.content_sha256 == graph_sha256_of_file(out)  # hashed after the shape folding rewrote the graph
    assert meta.class_names == ontology.names
    assert [tuple(c) for c in meta.class_colors] == [tuple(c) for c in ontology.colors]
    assert meta.ontology_version == ontology.version
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406]) and meta.std == pytest.approx([0.229, 0.224, 0.225])

    report = json.loads(out.with_suffix(".validation.json").read_text())
    assert report["verdict"] in ("excellent", "good")
    if output == "class_id":
        assert report["outputs"]["class_id"]["mismatch_fraction"] <= 1e-3


def test_validate_detects_wrong_weights(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.onnx"
    assert main(["seg", "export", "--checkpoint", str(weights), "--out", str(out), "--height", "64", "--width", "64",
                 "--no-validate"]) == 0
    assert main(["seg", "validate", "--onnx", str(out), "--checkpoint", str(weights)]) == 0
    torch.manual_seed(1)
    other = tmp_path / "other_fp16.pt"
    save_atomic(fp16_state_dict(ddrnet23_slim(num_classes=load_ontology().num_classes)), other)
    # A model/weights mismatch is a failed validation: exit code 1 with the reason on stderr.
    assert main(["seg", "validate", "--onnx", str(out), "--checkpoint", str(other)]) == 1


def test_export_refuses_existing_file_and_bad_size(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seg.onnx"
    out.write_bytes(b"keep me")
    assert main(["seg", "export", "--checkpoint", str(weights), "--out", str(out), "--height", "64", "--width", "64"]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["seg", "export", "--checkpoint", str(weights), "--out", str(tmp_path / "x.onnx"),
                 "--height", "60", "--width", "64"]) == 1
    assert "multiple of 8" in capsys.readouterr().err


def test_export_rejects_class_count_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cityscapes_fp16.pt"
    save_atomic(fp16_state_dict(ddrnet23_slim(num_classes=19)), path)
    assert main(["seg", "export", "--checkpoint", str(path), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "19 classes" in capsys.readouterr().err


def test_load_official_cli_converts_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    official = ddrnet23_slim(num_classes=19, aux_head=True).state_dict()
    ckpt = {"state_dict": {"model." + k: v for k, v in official.items()}}
    ckpt["state_dict"]["loss.criterion.weight"] = torch.ones(19)
    src = tmp_path / "city.pth"
    torch.save(ckpt, src)
    out = tmp_path / "init.pt"
    assert main(["seg", "load-official", "--checkpoint", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "checkpoint classes: 19" in text and "re-initialised heads" in text
    converted = torch.load(out, weights_only=True)
    assert converted["final_layer.conv2.weight"].shape[0] == load_ontology().num_classes
    assert torch.equal(converted["layer3.0.conv1.weight"], official["layer3.0.conv1.weight"])
    # The converted file is our own weights format: it exports.
    assert main(["seg", "export", "--checkpoint", str(out), "--out", str(tmp_path / "m.onnx"),
                 "--height", "64", "--width", "64"]) == 0


@pytest.mark.htp
def test_exported_model_runs_on_htp_without_cpu_fallback(weights: Path, tmp_path: Path) -> None:
    from model_tools.seg_cli import htp_check

    out = tmp_path / "seg_class_id.onnx"
    assert main(["seg", "export", "--checkpoint", str(weights), "--out", str(out), "--variant", "class_id",
                 "--height", "64", "--width", "64", "--no-validate"]) == 0
    result = htp_check(out)
    assert result["backend_used"] == "npu"
    assert result["shape"] == [1, 1, 64, 64]
    # HTP runs the FP32 graph at fp16: nearly every pixel's class matches the CPU EP.
    assert result["class_agreement"] > 0.97


def test_htp_check_names_a_missing_file(tmp_path: Path) -> None:
    from model_tools.seg_cli import htp_check

    with pytest.raises(ModelFileError, match=r"absent\.onnx"):
        htp_check(tmp_path / "absent.onnx")

