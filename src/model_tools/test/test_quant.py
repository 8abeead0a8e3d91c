"""INT8 quantize + sensitivity on tiny models: calibration from a folder and a rosbag, metadata, error paths."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
from quant_fixtures import gradient_frame, write_dataset, write_image_bag

from model_tools.quant.images import ImageSource
from model_tools.quant.quantize import QuantSettings, quantize_model
from perception_core.errors import ConfigError, DataError, ModelFileError, OutputExistsError
from perception_core.model_metadata import ModelMetadata, read_metadata
from perception_core.runtime.loader import CONTENT_VERIFIED, load_model
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("int8data") / "ds")


@pytest.fixture(scope="module")
def depth_fp32(tmp_path_factory):
    return make_tiny_depth_model(tmp_path_factory.mktemp("m") / "depth.onnx", outputs="separate", levels=64)


def _props(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_quantize_from_folder_carries_metadata_and_settings(tmp_path, data_root, depth_fp32):
    out = tmp_path / "depth_qdq.onnx"
    result = quantize_model(depth_fp32, out, ImageSource(folder=str(data_root), split="train"),
                            QuantSettings(per_channel=True, head_bits=16), count=4, progress=False)
    assert result.calibration_images == 4
    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    meta = ModelMetadata.from_props(_props(out), str(out))
    fp32_meta = read_metadata(depth_fp32)
    assert meta.format == "qdq"
    assert (meta.task, meta.max_depth, meta.levels, meta.output_names) == (
        fp32_meta.task, fp32_meta.max_depth, fp32_meta.levels, fp32_meta.output_names)
    q = meta.extra["quantization"]
    assert q["settings"]["per_channel"] is True and q["label"] == "w8a8+head16"
    assert q["calibration_images"] == 4 and "split train" in q["calibration_source"]
    # The head tail (level logits -> ArgMax -> Cast -> Mul, fractional sigmoid) is 16-bit.
    assert {"level_logits", "integer", "fractional"} <= set(q["raised_to_16bit_tensors"])
    sixteen = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT16]
    assert sixteen, "no uint16 zero points: 16-bit activations were not applied"
    # The QDQ model loads through the runtime loader and runs on the CPU EP.
    loaded = load_model(out, backend="cpu")
    assert loaded.content_check == CONTENT_VERIFIED
    outputs = loaded.run({"image": np.full((1, 3, 32, 32), 0.5, np.float32)})
    assert outputs["integer"].shape == (1, 1, 32, 32)


def test_head16_beats_w8a8_on_the_depth_heads(tmp_path, data_root, depth_fp32):
    """The 8-bit level logits tie in ArgMax; 16-bit head activations keep the integer head (measured)."""
    x = (gradient_frame(7).astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()  # in calibration range
    ref = load_model(depth_fp32, backend="cpu").run({"image": x})["integer"]
    errors = {}
    for bits in (8, 16):
        out = tmp_path / f"q{bits}.onnx"
        quantize_model(depth_fp32, out, ImageSource(folder=str(data_root), split="train"),
                       QuantSettings(head_bits=bits), count=6, progress=False)
        errors[bits] = float(np.abs(load_model(out, backend="cpu").run({"image": x})["integer"] - ref).mean())
    assert errors[16] < errors[8] / 3, errors


def test_quantize_from_rosbag(tmp_path):
    bag = write_image_bag(tmp_path / "drive", n=5)
    seg = make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id")
    out = tmp_path / "seg_qdq.onnx"
    result = quantize_model(seg, out, ImageSource(bag=str(bag), topic="/camera/image_raw"), count=3, progress=False)
    assert result.calibration_images == 3
    meta = ModelMetadata.from_props(_props(out), str(out))
    assert meta.format == "qdq" and meta.class_names == read_metadata(seg).class_names
    assert "topic /camera/image_raw" in meta.extra["quantization"]["calibration_source"]


def test_calibration_size_mismatch_names_sizes(tmp_path, depth_fp32):
    root = write_dataset(tmp_path / "big", splits=("train",), n=2, hw=(40, 48))
    with pytest.raises(DataError, match=r"is 40x48 \(HxW\) but the model input is 32x32.*--resize-calibration"):
        quantize_model(depth_fp32, tmp_path / "q.onnx", ImageSource(folder=str(root), split="train"), count=2,
                       progress=False)
    assert not (tmp_path / "q.onnx").exists()
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
    quantize_model(depth_fp32, tmp_path / "q.onnx", ImageSource(folder=str(root), split="train"), count=2,
                   resize=True, progress=False)
    assert (tmp_path / "q.onnx").is_file()


def test_empty_calibration_set(tmp_path, depth_fp32):
    (tmp_path / "empty" / "train" / "rgb").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images .* found in data set"):
        quantize_model(depth_fp32, tmp_path / "q.onnx", ImageSource(folder=str(tmp_path / "empty"), split="train"),
                       progress=False)
    bag = write_image_bag(tmp_path / "bag", n=2, topic="/other/image")
    with pytest.raises(Exception, match="/camera/image_raw"):
        quantize_model(depth_fp32, tmp_path / "q.onnx", ImageSource(bag=str(bag)), progress=False)
    assert not (tmp_path / "q.onnx").exists()


def test_existing_output_is_refused(tmp_path, data_root, depth_fp32):
    out = tmp_path / "q.onnx"
    out.write_bytes(b"earlier result")
    with pytest.raises(OutputExistsError, match=r"q\.onnx exists"):
        quantize_model(depth_fp32, out, ImageSource(folder=str(data_root), split="train"), count=2, progress=False)
    assert out.read_bytes() == b"earlier result"


def test_quantize_refuses_a_qdq_input(tmp_path, data_root, depth_fp32):
    qdq = tmp_path / "q.onnx"
    quantize_model(depth_fp32, qdq, ImageSource(folder=str(data_root), split="train"), count=2, progress=False)
    with pytest.raises(ModelFileError, match="format is 'qdq'; quantize needs the FP32"):
        quantize_model(qdq, tmp_path / "qq.onnx", ImageSource(folder=str(data_root), split="train"), progress=False)


def test_sensitivity_ranks_parts_and_mixed_precision_meets_target(tmp_path, data_root, depth_fp32):
    from model_tools.quant.sensitivity import run_sensitivity

    out = tmp_path / "sens"
    result = run_sensitivity(
        depth_fp32, ImageSource(folder=str(data_root), split="train"), ImageSource(folder=str(data_root), split="val"),
        out, settings=QuantSettings(head_bits=8), calibration_count=4, validation_count=3, granularity="node",
        target_worse_by=0.01, progress=False,
    )
    ranked = result["parts"]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert all(a["worse_by"] >= b["worse_by"] for a, b in itertools.pairwise(ranked))
    # The level-logit Conv feeds the ArgMax: quantizing it alone must hurt more than the fractional Sigmoid.
    by_name = {r["part"]: r for r in ranked}
    level_conv = next(p for p in by_name if p.startswith("Conv") and by_name[p]["worse_by"] > 0.01)
    assert by_name[level_conv]["worse_by"] > by_name[next(p for p in by_name if p.startswith("Sigmoid"))]["worse_by"]
    assert result["full_int8_worse_by"] > 0.01
    mixed = result["mixed_precision"]
    assert mixed["target_met"] and mixed["raised_parts"]
    assert mixed["steps"][-1]["worse_by"] <= 0.01 < mixed["steps"][0]["worse_by"]
    meta = read_metadata(mixed["model"])
    assert meta.extra["quantization"]["mixed_precision"]["raised_parts"] == mixed["raised_parts"]
    assert meta.extra["quantization"]["settings"]["raised_parts"] == mixed["raised_parts"]
    table = (out / "sensitivity.csv").read_text().splitlines()
    assert table[0] == "rank,part,nodes,op_types,abs_rel,worse_by" and len(table) == len(ranked) + 1
    assert "Mixed precision" in (out / "sensitivity.md").read_text()
    assert (out / "sensitivity.png").stat().st_size > 1000
    assert json.loads((out / "sensitivity.json").read_text())["metric"] == "abs_rel"


@pytest.mark.reliability(case="calibration frames without a camera record for a camera-input depth model",
                         outcome="ConfigError naming the calibration image")
def test_a_camera_input_model_calibrates_on_each_frames_camera_and_its_qdq_model_runs(tmp_path):
    """Calibration feeds every frame's camera input from the synthetic folder's records (the QDQ model's camera
    input gets a range from them); a folder without camera records is refused, naming the frame."""
    from model_tools.data.synth import CameraRanges, write_synthetic_folder
    from model_tools.quant.images import CalibrationReader
    from perception_core.pipelines import DepthPipeline, camera_features

    fp32 = make_tiny_depth_model(tmp_path / "cam.onnx", outputs="separate", levels=64, hw=(32, 32),
                                 depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                 canonical_height_m=0.8, camera_input=True)
    meta = read_metadata(fp32)
    folder = write_synthetic_folder(tmp_path / "synth", CameraRanges(64, 48), 3, seed=5, split="train", progress=False)
    reader = CalibrationReader(ImageSource(folder=str(folder.parent), split="train"), meta, count=3, resize=True,
                               progress=False)
    feeds = [reader.get_next() for _ in range(3)]
    assert all(set(f) == {"image", "camera"} for f in feeds)
    frames = ImageSource(folder=str(folder.parent), split="train").frames(3)[1]
    for feed, frame in zip(feeds, frames, strict=True):
        np.testing.assert_allclose(feed["camera"], camera_features(meta, **frame.camera))
    assert len({float(f["camera"][0, 1]) for f in feeds}) == 3  # three drawn mount heights
    out = tmp_path / "cam_qdq.onnx"
    result = quantize_model(fp32, out, ImageSource(folder=str(folder.parent), split="train"), QuantSettings(),
                            count=3, resize=True, progress=False)
    assert read_metadata(out).camera_input == "camera"
    # The camera conditioning is 16-bit by default: the MatMul and Reshape fed by the camera alone, and the Add
    # where it joins the image path; nothing of the image path before that join.
    assert {"camera_sum", "camera_shift", "frac_logit"} <= set(result.raised_tensors)
    assert "frac_logit_image" not in result.raised_tensors
    eight = quantize_model(fp32, tmp_path / "cam8.onnx", ImageSource(folder=str(folder.parent), split="train"),
                           QuantSettings(camera_bits=8), count=3, resize=True, progress=False)
    assert not {"camera_sum", "camera_shift", "frac_logit"} & set(eight.raised_tensors)
    frame = next(ImageSource(folder=str(folder.parent), split="train").frames(1)[1])
    depth = DepthPipeline(load_model(out, backend="cpu")).infer(frame.rgb, **frame.camera).depth
    assert np.isfinite(depth).any()
    # Frames without a camera record (a plain image folder) cannot calibrate a camera-input model.
    with pytest.raises(ConfigError, match=r"calibration image 000000 .* takes its camera as an input"):
        CalibrationReader(ImageSource(folder=str(write_dataset(tmp_path / "plain")), split="train"), meta, count=2,
                          progress=False).get_next()
