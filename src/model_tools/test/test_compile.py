"""QDQ -> QNN context binary on HTP emulation (tiny 32x32 models): placement, refusals, overwrite, AI Hub job."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx import numpy_helper as nh
from quant_fixtures import write_dataset

from model_tools.quant.compile import compile_context_binary
from model_tools.quant.images import ImageSource
from model_tools.quant.quantize import QuantSettings, quantize_model
from perception_core.errors import BackendError, ConfigError, OutputExistsError
from perception_core.model_metadata import ModelMetadata, read_metadata
from perception_core.runtime.loader import CONTENT_VERIFIED, load_model
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model


@pytest.fixture(scope="module")
def qdq_depth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cmp")
    data = write_dataset(folder / "ds", splits=("train",), n=4)
    fp32 = make_tiny_depth_model(folder / "depth.onnx", outputs="separate", levels=32)
    out = folder / "depth_qdq.onnx"
    quantize_model(fp32, out, ImageSource(folder=str(data), split="train"), QuantSettings(head_bits=16), count=4,
                   progress=False)
    return out


@pytest.mark.htp
def test_compile_puts_every_node_on_the_npu_and_runs(tmp_path, qdq_depth):
    out = tmp_path / "depth_ctx.onnx"
    summary = compile_context_binary(qdq_depth, out)
    p = summary.placement
    qdq_nodes = len(onnx.load(str(qdq_depth)).graph.node)
    assert (p.nodes_total, p.nodes_on_npu, p.fallback_nodes) == (qdq_nodes, qdq_nodes, [])
    assert p.npu_partitions == 1 and p.op_types["ArgMax"] == 1 and p.op_types["Conv"] == 2
    ctx = onnx.load(str(out), load_external_data=False)
    assert [n.op_type for n in ctx.graph.node] == ["EPContext"]
    meta = ModelMetadata.from_props({q.key: q.value for q in ctx.metadata_props}, str(out))
    assert meta.format == "qnn_context" and meta.extra["qnn_compile"]["soc_model"] == "77"
    assert meta.extra["quantization"]["label"] == "w8a8+head16"
    saved = json.loads(out.with_suffix(".placement.json").read_text())
    assert saved["placement"]["all_on_npu"] is True and saved["htp_arch"] == "73"
    assert summary.htp_run_ms is not None and summary.htp_run_ms > 0
    # The binary runs on HTP (fallback disabled) and agrees with QDQ on the CPU EP.
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32) * 0.6
    compiled = load_model(out, backend="npu")
    assert compiled.content_check == CONTENT_VERIFIED
    htp = compiled.run({"image": x})
    cpu = load_model(qdq_depth, backend="cpu").run({"image": x})
    assert np.mean(np.abs(htp["integer"] - cpu["integer"]) < 1.5 / 31) > 0.95


def _with_hardmax(path):
    """A tiny seg model with a Hardmax (which QNN HTP does not implement) after its logits."""
    model = onnx.load(str(path))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.output[0] = "relu_out"
    model.graph.node.append(helper.make_node("Hardmax", ["relu_out"], ["hard"], name="head_hardmax", axis=1))
    model.graph.initializer.append(nh.from_array(np.array(1.0, np.float32), "one"))
    model.graph.node.append(helper.make_node("Mul", ["hard", "one"], ["logits"], name="head_scale"))
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.htp
def test_op_htp_cannot_run_is_named_and_nothing_is_written(tmp_path):
    data = write_dataset(tmp_path / "ds", splits=("train",), n=2)
    fp32 = _with_hardmax(make_tiny_seg_model(tmp_path / "seg.onnx", output="logits"))
    qdq = tmp_path / "seg_qdq.onnx"
    quantize_model(fp32, qdq, ImageSource(folder=str(data), split="train"), count=2, progress=False)
    out = tmp_path / "seg_ctx.onnx"
    with pytest.raises(BackendError, match=r"not on the NPU: Hardmax 'head_hardmax'"):
        compile_context_binary(qdq, out)
    assert not out.exists() and not out.with_suffix(".placement.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.htp
def test_existing_outputs_refused_unless_overwrite(tmp_path, qdq_depth):
    out = tmp_path / "ctx.onnx"
    out.write_bytes(b"old binary")
    with pytest.raises(OutputExistsError, match=r"ctx\.onnx exists"):
        compile_context_binary(qdq_depth, out)
    assert out.read_bytes() == b"old binary"
    summary = compile_context_binary(qdq_depth, out, overwrite=True, check_run=False)
    assert summary.placement.all_on_npu and out.stat().st_size > 1000


def test_aihub_job_construction_with_client_double(tmp_path, qdq_depth):
    from model_tools.quant.aihub import IQ9075_DEVICE, build_compile_job, submit_compile_job

    class FakeHubClient:
        """Test double of the `qai_hub` module (cannot be reached here: needs network and an API token).

        Records the calls and 'compiles' by copying the model, like a finished AI Hub job.
        """

        def __init__(self):
            self.calls = []

        def Device(self, name):  # noqa: N802 - mirrors qai_hub.Device
            return ("device", name)

        def submit_compile_job(self, **kwargs):
            self.calls.append(kwargs)
            source = kwargs["model"]

            class Job:
                def get_target_model(self):
                    class Target:
                        def download(self, path):
                            with open(source, "rb") as src, open(path, "wb") as dst:
                                dst.write(src.read())
                    return Target()
            return Job()

    meta = read_metadata(qdq_depth)
    job = build_compile_job(qdq_depth, meta)
    assert job.device_name == IQ9075_DEVICE == "Dragonwing IQ-9075 EVK"
    assert job.options == "--target_runtime qnn_context_binary"
    assert job.input_specs == {"image": ((1, 3, 32, 32), "float32")}
    client = FakeHubClient()
    out = submit_compile_job(job, tmp_path / "hub_ctx.bin", client=client)
    assert client.calls[0]["device"] == ("device", IQ9075_DEVICE) and client.calls[0]["options"] == job.options
    assert out.read_bytes() == qdq_depth.read_bytes()
    with pytest.raises(OutputExistsError, match=r"hub_ctx\.bin exists"):
        submit_compile_job(job, out, client=client)
    fp32 = make_tiny_seg_model(tmp_path / "seg.onnx")
    with pytest.raises(ConfigError, match="takes the QDQ model"):
        build_compile_job(fp32, read_metadata(fp32))
