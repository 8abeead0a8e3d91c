"""Runtime loader on real tiny ONNX models: CPU EP, QNN HTP emulation, context binaries, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perception_core.errors import BackendError, ModelFileError
from perception_core.model_metadata import graph_sha256_of_file
from perception_core.runtime import loader
from perception_core.runtime.loader import CONTENT_UNVERIFIED, CONTENT_VERIFIED, load_model
from perception_core.testing.faults import flip_weight_byte
from perception_core.testing.tiny_models import expected_mean_intensity, make_tiny_depth_model, make_tiny_seg_model


def _feed(rgb: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()}


def _level_centred_image(levels: int, seed: int = 0) -> np.ndarray:
    """Grey pixels exactly on level centres, so fp16 HTP and fp32 CPU agree on every ArgMax."""
    rng = np.random.default_rng(seed)
    level = rng.integers(0, levels, (32, 32))
    grey = np.round(level * 255.0 / (levels - 1)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.mark.parametrize("kind", ["levels", "sigmoid"])
@pytest.mark.parametrize("outputs", ["composed", "separate"])
def test_tiny_depth_model_on_cpu_computes_the_documented_function(tmp_path: Path, kind: str, outputs: str) -> None:
    path = make_tiny_depth_model(tmp_path / "d.onnx", kind=kind, outputs=outputs, levels=16, max_depth=15.0)
    model = load_model(path, backend="cpu", expected_task="depth", num_threads=1)
    assert model.backend_used == "cpu" and model.metadata.depth_outputs == outputs
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = model.run(_feed(rgb))
    t = expected_mean_intensity(rgb)
    if kind == "levels":
        integer = np.floor(t * 15 + 0.5 - 1e-4) / 15  # nearest level, ties to the lower one
        step = 1.0
    else:
        integer = 1 / (1 + np.exp(-4 * (t - 0.5)))
        step = 1.0
    fractional = step / (1 + np.exp(-(t - 0.5)))
    if outputs == "composed":
        assert list(out) == ["depth"]
        np.testing.assert_allclose(out["depth"][0, 0], integer * 15.0 + fractional, atol=1e-3)
    else:
        assert list(out) == ["integer", "fractional"]
        np.testing.assert_allclose(out["integer"][0, 0], integer, atol=1e-4)
        np.testing.assert_allclose(out["fractional"][0, 0], fractional, atol=1e-4)


@pytest.mark.parametrize("output", ["logits", "class_id"])
def test_tiny_seg_model_on_cpu_picks_the_nearest_class(tmp_path: Path, output: str) -> None:
    model = load_model(make_tiny_seg_model(tmp_path / "s.onnx", output=output), backend="cpu",
                       expected_task="segmentation", num_threads=1)
    rgb = _level_centred_image(7, seed=2)
    out = model.run(_feed(rgb))[output][0]
    classes = out.argmax(axis=0) if output == "logits" else out[0]
    np.testing.assert_array_equal(classes, np.round(expected_mean_intensity(rgb) * 6))
    assert model.metadata.class_names[0] == "smooth_ground" and len(model.metadata.class_colors) == 7


@pytest.mark.htp
@pytest.mark.parametrize("make", [
    lambda p: make_tiny_depth_model(p, kind="levels", outputs="separate"),
    lambda p: make_tiny_depth_model(p, kind="sigmoid", outputs="composed"),
    lambda p: make_tiny_seg_model(p, output="logits"),
    lambda p: make_tiny_seg_model(p, output="class_id"),
], ids=["depth-levels-separate", "depth-sigmoid-composed", "seg-logits", "seg-class_id"])
def test_tiny_models_run_on_htp_without_cpu_fallback(tmp_path: Path, make) -> None:
    path = make(tmp_path / "m.onnx")
    npu = load_model(path, backend="npu")
    cpu = load_model(path, backend="cpu", num_threads=1)
    assert npu.backend_used == "npu" and npu.backend_reason == "requested"
    assert "QNNExecutionProvider" in npu.session.get_providers()
    levels = 16 if npu.metadata.task == "depth" else 7
    feed = _feed(_level_centred_image(levels, seed=3))
    got, want = npu.run(feed), cpu.run(feed)
    for name in want:
        # HTP emulation runs FP32 graphs in fp16: allow fp16-sized error relative to the output's range
        # (ArgMax outputs match exactly on level-centred input, so their error is the Mul's rounding alone).
        np.testing.assert_allclose(got[name], want[name], atol=5e-3 * max(1.0, float(np.abs(want[name]).max())))


@pytest.mark.htp
def test_npu_on_a_model_htp_cannot_run_fails_naming_the_file(tmp_path: Path) -> None:
    path = make_tiny_depth_model(tmp_path / "cpu_only.onnx", cpu_only_op=True)
    assert load_model(path, backend="cpu", num_threads=1).backend_used == "cpu"
    with pytest.raises(BackendError, match=r"cpu_only\.onnx: QNN HTP \(CPU fallback disabled\) cannot run"):
        load_model(path, backend="npu")


@pytest.mark.htp
def test_context_binary_runs_on_npu_and_is_refused_on_cpu(tmp_path: Path) -> None:
    import onnxruntime as ort

    from perception_core.runtime.qnn import qnn_session_options

    src = make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id")
    ctx = tmp_path / "seg_ctx.onnx"
    ort.InferenceSession(str(src), sess_options=qnn_session_options(context_path=str(ctx)))
    assert loader.is_context_binary(ctx) and not loader.is_context_binary(src)
    with pytest.raises(BackendError, match=r"seg_ctx\.onnx: is a QNN context binary.*only on backend 'npu'"):
        load_model(ctx, backend="cpu")
    auto = load_model(ctx, backend="auto")
    assert auto.backend_used == "npu" and "context binary" in auto.backend_reason
    feed = _feed(_level_centred_image(7, seed=4))
    # HTP hands back float ids with fp16 rounding noise (5.0000005): the same classes after rounding.
    np.testing.assert_array_equal(np.rint(auto.run(feed)["class_id"]), load_model(src, backend="cpu").run(feed)["class_id"])


def test_auto_picks_cpu_off_target_and_npu_on_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_tiny_seg_model(tmp_path / "s.onnx")
    monkeypatch.delenv(loader.AUTO_ENV, raising=False)
    monkeypatch.setattr(loader, "is_target_host", lambda: False)
    model = load_model(path, backend="auto", num_threads=1)
    assert model.backend_used == "cpu" and "emulator" in model.backend_reason
    monkeypatch.setattr(loader, "is_target_host", lambda: True)
    monkeypatch.setattr(loader, "qnn_available", lambda: True)
    assert loader.choose_auto_backend(False)[0] == "npu"
    monkeypatch.setattr(loader, "qnn_available", lambda: False)
    assert loader.choose_auto_backend(False) == ("cpu", "onnxruntime-qnn is not installed")
    monkeypatch.setenv(loader.AUTO_ENV, "npu")
    assert loader.choose_auto_backend(False)[0] == "npu"


def _with_hardmax(path: Path) -> Path:
    """The tiny seg model with a Hardmax after its logits: QNN HTP does not implement Hardmax."""
    import onnx
    from onnx import helper

    from perception_core.model_metadata import ModelMetadata, set_model_metadata

    model = onnx.load(str(path))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.output[0] = "relu_out"
    model.graph.node.append(helper.make_node("Hardmax", ["relu_out"], ["logits"], name="head_hardmax", axis=1))
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    # The graph changed: its metadata gets the new content hash, as an exporter would write it.
    set_model_metadata(model, ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path)))
    onnx.save(model, str(path))
    return path


@pytest.mark.htp
def test_auto_falls_back_to_cpu_when_the_npu_refuses_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = _with_hardmax(make_tiny_seg_model(tmp_path / "seg.onnx", output="logits"))
    with pytest.raises(BackendError, match=r"seg\.onnx: QNN HTP \(CPU fallback disabled\) cannot run this model"):
        load_model(path, backend="npu")  # an explicit npu request fails loudly
    monkeypatch.setenv(loader.AUTO_ENV, "npu")  # auto picks the NPU first, as on the vehicle
    with caplog.at_level("WARNING", logger=loader.__name__):
        auto = load_model(path, backend="auto")
    assert auto.backend_requested == "auto" and auto.backend_used == "cpu"
    assert auto.backend_reason.startswith("NPU refused the model") and "falling back to cpu" in caplog.text
    feed = _feed(_level_centred_image(7, seed=2))
    np.testing.assert_array_equal(auto.run(feed)["logits"], load_model(path, backend="cpu").run(feed)["logits"])


def test_missing_empty_and_truncated_files_raise_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nope\.onnx: model file does not exist"):
        load_model(tmp_path / "nope.onnx", backend="cpu")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty\.onnx: model file is empty"):
        load_model(tmp_path / "empty.onnx", backend="cpu")
    good = make_tiny_seg_model(tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.onnx: not a readable ONNX model"):
        load_model(tmp_path / "cut.onnx", backend="cpu")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00garbage" * 10)
    with pytest.raises(ModelFileError, match=r"junk\.onnx: not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx", backend="cpu")


def test_unknown_backend_and_wrong_task_are_rejected(tmp_path: Path) -> None:
    path = make_tiny_seg_model(tmp_path / "s.onnx")
    with pytest.raises(BackendError, match="backend 'gpu' is not one of"):
        load_model(path, backend="gpu")
    with pytest.raises(ModelFileError, match=r"s\.onnx: model task is 'segmentation'.*needs a 'depth' model"):
        load_model(path, backend="cpu", expected_task="depth")


def _rewrite_props(path: Path, out: Path, **changes: object) -> Path:
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(f"perception.{key}", None)
        else:
            props[f"perception.{key}"] = value if isinstance(value, str) else json.dumps(value)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(out))
    return out


def test_metadata_that_disagrees_with_the_graph_is_named(tmp_path: Path) -> None:
    src = make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate")
    cases = [
        ({"input_name": "rgb"}, r"graph inputs are \['image'\] but the metadata says \['rgb'\] \(input_name\)"),
        ({"input_shape": [1, 3, 64, 64]}, r"differs from metadata input_shape \[1, 3, 64, 64\]"),
        ({"output_names": ["integer", "frac"]}, r"metadata output_names \['frac'\] are not graph outputs"),
        ({"output_names": ["integer"]}, r"'separate' depth model needs 2 output\(s\)"),
        ({"task": None}, r"metadata lacks perception\.task"),
    ]
    for i, (change, message) in enumerate(cases):
        bad = _rewrite_props(src, tmp_path / f"bad{i}.onnx", **change)
        with pytest.raises(ModelFileError, match=rf"bad{i}\.onnx: .*{message}"):
            load_model(bad, backend="cpu")


def test_run_with_a_wrong_input_raises_backend_error_naming_the_file(tmp_path: Path) -> None:
    model = load_model(make_tiny_seg_model(tmp_path / "s.onnx"), backend="cpu", num_threads=1)
    with pytest.raises(BackendError, match=r"s\.onnx: inference on backend 'cpu' failed"):
        model.run({"image": np.zeros((1, 3, 16, 16), np.float32)})


@pytest.mark.reliability(case="model file with a flipped weight byte (runtime loader)",
                         outcome="ModelFileError at load: content hash mismatch, naming the file")
def test_flipped_weight_bytes_are_refused_at_load(tmp_path: Path) -> None:
    good = make_tiny_seg_model(tmp_path / "seg.onnx")
    assert load_model(good, backend="cpu").content_check == CONTENT_VERIFIED
    bad = flip_weight_byte(good, tmp_path / "flipped.onnx")
    # The damaged copy still parses and runs, which is why only the hash can tell.
    import onnxruntime as ort

    ort.InferenceSession(str(bad), providers=["CPUExecutionProvider"])
    with pytest.raises(ModelFileError, match=r"flipped\.onnx: content hash mismatch"):
        load_model(bad, backend="cpu")


def test_the_hash_covers_the_graph_and_not_the_metadata(tmp_path: Path) -> None:
    src = make_tiny_depth_model(tmp_path / "d.onnx", outputs="separate")
    renamed = _rewrite_props(src, tmp_path / "renamed.onnx", model_name="renamed")
    model = load_model(renamed, backend="cpu")
    assert model.metadata.model_name == "renamed" and model.content_check == CONTENT_VERIFIED
    assert graph_sha256_of_file(renamed) == graph_sha256_of_file(src) == model.metadata.content_sha256


@pytest.mark.reliability(case="model file without a content hash in its metadata",
                         outcome="loads with a logged warning; LoadedModel.content_check (published in the nodes' "
                                 "model_info) says it was not verified")
def test_model_without_a_content_hash_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = _rewrite_props(make_tiny_seg_model(tmp_path / "s.onnx"), tmp_path / "legacy.onnx", content_sha256=None)
    with caplog.at_level("WARNING", logger=loader.__name__):
        model = load_model(legacy, backend="cpu")
    assert model.content_check == CONTENT_UNVERIFIED and model.metadata.content_sha256 == ""
    assert any("legacy.onnx: model integrity not verified" in r.getMessage() for r in caplog.records)


def test_the_graph_hash_reader_names_a_truncated_file(tmp_path: Path) -> None:
    good = make_tiny_seg_model(tmp_path / "s.onnx").read_bytes()
    for name, data in (("cut_graph.onnx", good[: len(good) // 2]), ("cut_tail.onnx", good[:-3])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFileError, match=rf"{name.replace('.', '[.]')}: not a readable ONNX model"):
            graph_sha256_of_file(tmp_path / name)
