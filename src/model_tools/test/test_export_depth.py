"""Depth ONNX export: metadata, ONNX-Runtime-vs-PyTorch validation, QNN HTP load, checkpoint error cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_tools.depth_cli import export_depth, load_depth_model
from model_tools.export.validate import compare_outputs
from model_tools.models.depth_net import build_depth_net
from model_tools.training.checkpoint import CHECKPOINT_FORMAT, fp16_state_dict, load_split, save_atomic, save_split
from model_tools.training.config import load_config, save_config
from perception_core.errors import ConfigError, ModelFileError
from perception_core.model_metadata import graph_sha256_of_file, read_metadata

SMALL = ["model.width=8", "model.decoder_channels=[4,8,8,16,16]", "model.levels=32", "model.input_height=64", "model.input_width=96"]


def write_checkpoint(tmp_path: Path, kind: str, extra: list[str] | None = None) -> Path:
    torch.manual_seed(0)
    cfg = load_config(None, [*SMALL, f"model.kind={kind}", *(extra or [])])
    net = build_depth_net(cfg.model)
    path = tmp_path / f"{kind}.pt"
    save_atomic({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": net.state_dict(), "ema": None}, path)
    return path


@pytest.mark.parametrize("kind", ["levels", "sigmoid"])
@pytest.mark.parametrize("variant,opset", [("composed", 17), ("separate", 11)])
def test_export_writes_metadata_and_validates_against_pytorch(tmp_path: Path, kind: str, variant: str, opset: int) -> None:
    ckpt = write_checkpoint(tmp_path, kind)
    out = tmp_path / f"{kind}_{variant}.onnx"
    report = export_depth(ckpt, out, variant=variant, opset=opset)
    meta = read_metadata(out)
    assert meta.task == "depth" and meta.input_name == "rgb" and meta.input_shape == [1, 3, 64, 96]
    assert meta.mean == [0.45] * 3 and meta.std == [0.225] * 3 and meta.input_scale == pytest.approx(1 / 255)
    assert meta.integer_head_kind == kind and meta.depth_outputs == variant and meta.max_depth == 15.0
    assert meta.levels == (32 if kind == "levels" else 0)
    assert meta.output_names == (["depth"] if variant == "composed" else ["integer", "fractional"])
    assert meta.content_sha256 == graph_sha256_of_file(out)
    # The weights it came from, by which a range correction measured on another export of them is matched.
    from model_tools.training.checkpoint import checkpoint_sha256

    assert meta.extra["weights_sha256"] == checkpoint_sha256(ckpt) != ""
    assert report["verdict"] in ("excellent", "good")
    saved = json.loads(Path(report["report_path"]).read_text())
    for name in meta.output_names:
        assert saved["outputs"][name]["max_abs_error"] < 1e-3
    import onnx

    model = onnx.load(str(out))
    assert model.opset_import[0].version == opset
    ops = {n.op_type for n in model.graph.node}
    assert ("ArgMax" in ops) == (kind == "levels")
    assert not ({"Sub", "Div"} & ops and kind == "sigmoid")  # normalisation is not in the graph
    assert "Elu" not in ops and "Pad" not in ops  # ReLU and zero padding for the NPU


def test_export_at_another_input_size_and_refuses_non_multiples_of_32(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path, "sigmoid")
    export_depth(ckpt, tmp_path / "a.onnx", height=32, width=64)
    assert read_metadata(tmp_path / "a.onnx").input_shape == [1, 3, 32, 64]
    with pytest.raises(ConfigError, match="input width = 100 must be a positive multiple of 32"):
        export_depth(ckpt, tmp_path / "b.onnx", height=64, width=100)


def test_validation_fails_loudly_when_outputs_disagree() -> None:
    ref = {"depth": np.zeros((1, 1, 4, 4), np.float32)}
    assert compare_outputs(ref, {"depth": ref["depth"] + 5e-5}, {}, 1e-3)["depth"]["verdict"] == "excellent"
    assert compare_outputs(ref, {"depth": ref["depth"] + 5e-4}, {}, 1e-3)["depth"]["verdict"] == "good"
    assert compare_outputs(ref, {"depth": ref["depth"] + 5e-3}, {}, 1e-3)["depth"]["verdict"] == "fail"
    # Discrete outputs: one flipped level in 16 pixels is a 6% mismatch -> fail; errors come from agreeing pixels.
    flipped = ref["depth"].copy()
    flipped[0, 0, 0, 0] = 1 / 31
    res = compare_outputs(ref, {"depth": flipped}, {"depth": 1 / 31}, 1e-3)["depth"]
    assert res["mismatch_fraction"] == pytest.approx(1 / 16) and res["verdict"] == "fail" and res["max_abs_error"] == 0
    assert compare_outputs(ref, {"depth": flipped}, {"depth": 1 / 31}, 0.1)["depth"]["verdict"] == "excellent"


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelFileError, match=r"bad\.pt is corrupt"):
        load_depth_model(bad)
    with pytest.raises(ModelFileError, match=r"missing\.pt does not exist"):
        load_depth_model(tmp_path / "missing.pt")


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(1)}, "hook": Path("x")}, evil)
    with pytest.raises(ModelFileError, match=r"evil\.pt is corrupt or not a weights-only"):
        load_depth_model(evil)


def test_config_mismatch_names_the_field(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path, "levels")
    other = tmp_path / "other.yaml"
    save_config(load_config(None, [*SMALL, "model.kind=levels", "model.levels=64"]), other)
    with pytest.raises(ConfigError, match=r"model\.levels is 32 in the checkpoint but 64 in the config"):
        load_depth_model(ckpt, other)
    save_config(load_config(None, [*SMALL, "model.kind=levels", "model.encoder=resnet34"]), other)
    with pytest.raises(ConfigError, match=r"model\.encoder is 'resnet18' in the checkpoint but 'resnet34'"):
        load_depth_model(ckpt, other)


def test_plain_state_dict_with_wrong_config_names_file_and_key(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path, "levels")
    net, _ = load_depth_model(ckpt)
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(fp16_state_dict(net), run / "model_fp16.pt")
    with pytest.raises(ConfigError, match=r"no config\.yaml is beside it"):
        load_depth_model(run / "model_fp16.pt")
    save_config(load_config(None, [*SMALL, "model.kind=sigmoid"]), run / "config.yaml")
    with pytest.raises(ModelFileError, match=r"model_fp16\.pt: does not match the configured model: .*integer_convs"):
        load_depth_model(run / "model_fp16.pt")
    save_config(load_config(None, [*SMALL, "model.kind=levels"]), run / "config.yaml")
    loaded, cfg = load_depth_model(run / "model_fp16.pt")
    assert cfg.kind == "levels" and next(loaded.parameters()).dtype == torch.float32


def test_split_parts_are_small_plain_state_dicts_that_join_exactly(tmp_path: Path) -> None:
    net = build_depth_net({"width": 16, "kind": "levels", "levels": 64})
    state = fp16_state_dict(net)
    total = sum(v.numel() * v.element_size() for v in state.values())
    limit = total // 2 + 200_000
    parts = save_split(state, tmp_path / "m", max_part_bytes=limit)
    assert len(parts) >= 2 and all(p.stat().st_size < limit for p in parts)
    for p in parts:
        assert isinstance(torch.load(p, weights_only=True), dict)
    joined = load_split(tmp_path / "m")
    assert joined.keys() == state.keys() and all(torch.equal(joined[k], state[k]) for k in state)
    parts[1].unlink()
    with pytest.raises(ModelFileError, match=r"part\(s\) \[1\] of 2 missing"):
        load_split(tmp_path / "m")


@pytest.mark.htp
@pytest.mark.parametrize("kind", ["levels", "sigmoid"])
def test_both_variants_load_and_run_on_qnn_htp_without_cpu_fallback(tmp_path: Path, kind: str) -> None:
    import onnxruntime as ort

    from perception_core.runtime.qnn import qnn_session_options

    ckpt = write_checkpoint(tmp_path, kind)
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    for variant in ("composed", "separate"):
        out = tmp_path / f"{variant}.onnx"
        export_depth(ckpt, out, variant=variant, validate=False)
        cpu = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"rgb": x})
        htp = ort.InferenceSession(str(out), sess_options=qnn_session_options(disable_cpu_fallback=True)).run(None, {"rgb": x})
        assert [a.shape for a in htp] == [a.shape for a in cpu]
        # HTP runs FP32 graphs in reduced precision: compare loosely, mostly to prove it ran real numbers.
        for a, b in zip(cpu, htp, strict=True):
            assert np.isfinite(b).all()
            assert np.median(np.abs(a - b)) < 0.05 * max(1.0, float(np.abs(a).max()))


CAMERA = ["model.camera=canonical_focal_height", "model.canonical_focal_px=20.0", "model.canonical_height_m=0.8",
          "model.camera_input=true"]


def test_a_camera_input_model_exports_with_its_second_input_and_the_runtime_feeds_it(tmp_path: Path) -> None:
    """The camera input reaches the ONNX graph and the metadata; ONNX Runtime agrees with PyTorch on random
    cameras, and the node's pipeline feeds it, so two camera heights give different canonical depth."""
    from perception_core.pipelines import DepthPipeline
    from perception_core.runtime.loader import load_model

    ckpt = write_checkpoint(tmp_path, "levels", CAMERA)
    state = torch.load(ckpt, weights_only=True)
    torch.manual_seed(1)  # a modulation that is not the identity, as after training
    state["model"]["camera_modulation.out.weight"] = 0.5 * torch.randn_like(state["model"]["camera_modulation.out.weight"])
    save_atomic(state, ckpt)
    out = tmp_path / "camera.onnx"
    report = export_depth(ckpt, out, variant="separate")
    assert report["verdict"] in ("excellent", "good")
    meta = read_metadata(out)
    assert meta.camera_input == "camera" and meta.input_names == ["rgb", "camera"]
    pipe = DepthPipeline(load_model(out, backend="cpu"))
    rgb = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    k = [[40.0, 0, 47.5], [0, 40.0, 31.5], [0, 0, 1]]
    low, high = (pipe.infer(rgb, camera_k=k, camera_height=h) for h in (0.8, 1.6))
    assert high.depth_scale == pytest.approx(2 * low.depth_scale)
    assert not np.allclose(high.integer, low.integer) or not np.allclose(high.fractional, low.fractional)


def test_a_model_without_the_camera_input_refuses_a_camera_and_one_with_it_needs_one() -> None:
    from model_tools.training.config import load_config

    plain = build_depth_net(load_config(None, SMALL).model).eval()
    aware = build_depth_net(load_config(None, [*SMALL, *CAMERA]).model).eval()
    x = torch.zeros(1, 3, 64, 96)
    with pytest.raises(ConfigError, match=r"without model\.camera_input"):
        plain(x, camera=torch.zeros(1, 2))
    with pytest.raises(ConfigError, match="takes the camera as an input"):
        aware(x)
    with pytest.raises(ConfigError, match=r"camera_input needs model\.camera canonical_focal_height"):
        build_depth_net(load_config(None, [*SMALL, "model.camera_input=true"]).model)


@pytest.mark.htp
def test_a_camera_input_model_runs_on_qnn_htp_without_cpu_fallback(tmp_path: Path) -> None:
    import onnxruntime as ort

    from perception_core.runtime.qnn import qnn_session_options

    out = tmp_path / "camera.onnx"
    export_depth(write_checkpoint(tmp_path, "levels", CAMERA), out, variant="separate", validate=False)
    feeds = {"rgb": np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32),
             "camera": np.array([[0.4, 0.7]], np.float32)}
    cpu = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    htp = ort.InferenceSession(str(out), sess_options=qnn_session_options(disable_cpu_fallback=True)).run(None, feeds)
    for a, b in zip(cpu, htp, strict=True):
        assert a.shape == b.shape and np.isfinite(b).all()
        assert np.median(np.abs(a - b)) < 0.05 * max(1.0, float(np.abs(a).max()))
