"""Tiny, self-describing ONNX models for tests (built with onnx.helper, no torch).

They exercise the real runtime path (ONNX Runtime CPU EP and QNN HTP with CPU
fallback disabled) in milliseconds, so node, pipeline, INT8 and bag tests need
no trained weights. Their outputs are a known function of the input, which lets
tests assert values, not just shapes:

- ``t = mean_rgb(x)`` per pixel, with ``x = pixel / 255`` (metadata: scale
  1/255, mean 0, std 1).
- Depth, ``levels`` kind: ``integer = round(t * (levels-1)) / (levels-1)``
  (an ArgMax over ``levels`` channels whose logits ``2*k*t' - k^2`` peak at the
  level nearest ``t' = t*(levels-1)``); ``fractional = step * sigmoid(t - 0.5)``.
- Depth, ``sigmoid`` kind: ``integer = sigmoid(4*(t - 0.5))``,
  ``fractional = sigmoid(t - 0.5)`` (metres, < 1 m step).
- Either kind, ``composed``: one output ``depth = integer*max_depth + fractional``.
- Depth with ``camera_input``: a second input ``camera`` [1, 2] = (c0, c1) shifts the
  fractional head's logit: ``fractional = step * sigmoid(t - 0.5 + c0 + c1)``.
- Segmentation: class ``round(t * (C-1))`` via logits ``2*k*t' - k^2 + (C-1)^2``
  (non-negative, passed through Relu); ``class_id`` adds ArgMax + Cast to float.

Output-name convention (what the runtime loader and pipelines rely on):
depth ``composed`` -> ``[depth]``; ``separate`` -> ``[integer, fractional]`` in
that order; segmentation -> ``[logits]`` or ``[class_id]``.

Ops are HTP-friendly only (Conv, Relu, Sigmoid, ArgMax + Cast to float, Add,
Mul; MatMul and Reshape for the camera input): the int64 ArgMax result is cast to float inside the graph because HTP
rejects int64 outputs at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from perception_core.depth_codec import integer_step
from perception_core.errors import ConfigError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata, set_model_metadata

OPSET = 17
# IR 8 is what opset 17 shipped with; older ONNX Runtimes (the GPU box's 1.30) load it.
IR_VERSION = 8
INPUT_NAME = "image"
CAMERA_INPUT_NAME = "camera"

# Names/colours of the project's proposed 7-class ontology (DATASETS.md), used
# as defaults so tests see realistic class info without reading the ontology file.
DEFAULT_CLASS_NAMES = [
    "smooth_ground", "rough_ground", "low_vegetation", "water", "static_obstacle", "dynamic", "sky",
]
DEFAULT_CLASS_COLORS = [
    [128, 64, 128], [140, 100, 40], [110, 190, 40], [30, 90, 220], [200, 40, 40], [255, 0, 200], [120, 200, 255],
]


def _nearest_level_conv(num_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """1x1 conv weights whose channel-k logit is ``2*k*t' - k^2`` for ``t' = mean_rgb * (K-1)``.

    The logit is a downward parabola in k peaking at t', so ArgMax picks the
    level nearest the mean intensity (ties go to the lower level).
    """
    k = np.arange(num_channels, dtype=np.float32)
    span = float(num_channels - 1)
    weight = np.repeat((2.0 * k * span / 3.0)[:, None], 3, axis=1).reshape(num_channels, 3, 1, 1)
    bias = -(k**2)
    return weight.astype(np.float32), bias.astype(np.float32)


def _mean_conv(gain: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """1x1 conv computing ``gain * (mean_rgb - offset)`` into one channel."""
    weight = np.full((1, 3, 1, 1), gain / 3.0, dtype=np.float32)
    bias = np.array([-gain * offset], dtype=np.float32)
    return weight, bias


def _save(model, path: str | os.PathLike[str], meta: ModelMetadata) -> Path:
    import onnx

    onnx.checker.check_model(model, full_check=True)
    set_model_metadata(model, meta)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def _finish(nodes, initializers, outputs, hw, name, extra_inputs=()):
    from onnx import TensorProto, helper

    h, w = hw
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, h, w])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n, shape in extra_inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, c, h, w]) for o, c in outputs],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="perception_core.testing")
    model.ir_version = IR_VERSION
    return model


def make_tiny_depth_model(
    path: str | os.PathLike[str],
    kind: str = "levels",
    outputs: str = "composed",
    hw: tuple[int, int] = (32, 32),
    levels: int = 16,
    max_depth: float = 15.0,
    min_depth: float = 0.0,
    cpu_only_op: bool = False,
    depth_camera: str = "fixed",
    canonical_focal_px: float = 0.0,
    canonical_height_m: float = 0.0,
    camera_input: bool = False,
) -> Path:
    """Write a tiny dual-head depth model with full metadata; return its path.

    ``cpu_only_op`` routes the fractional head through ``Mod(fmod=1)`` by 1 m
    (a no-op on values in [0, 1)) that QNN HTP does not support: the model runs
    on the CPU EP but must fail on ``npu`` with CPU fallback disabled.
    ``depth_camera`` and the canonical camera only change the metadata: the
    runtime then rescales the same outputs with the camera it is given.
    ``camera_input`` (with ``canonical_focal_height``) adds the camera input
    ``camera`` that shifts the fractional head (module doc).
    """
    from onnx import helper
    from onnx import numpy_helper as nh

    if kind not in ("levels", "sigmoid"):
        raise ConfigError(f"tiny depth model kind {kind!r} is not levels/sigmoid")
    if outputs not in ("composed", "separate"):
        raise ConfigError(f"tiny depth model outputs {outputs!r} is not composed/separate")
    step = integer_step(max_depth, kind, levels)
    inits = []
    nodes = []
    if kind == "levels":
        w, b = _nearest_level_conv(levels)
        inits += [nh.from_array(w, "int_w"), nh.from_array(b, "int_b"),
                  nh.from_array(np.array(1.0 / (levels - 1), np.float32), "inv_levels")]
        nodes += [
            helper.make_node("Conv", [INPUT_NAME, "int_w", "int_b"], ["level_logits"]),
            helper.make_node("ArgMax", ["level_logits"], ["level_index"], axis=1, keepdims=1),
            helper.make_node("Cast", ["level_index"], ["level_float"], to=1),
            helper.make_node("Mul", ["level_float", "inv_levels"], ["integer"]),
        ]
    else:
        w, b = _mean_conv(4.0, 0.5)
        inits += [nh.from_array(w, "int_w"), nh.from_array(b, "int_b")]
        nodes += [
            helper.make_node("Conv", [INPUT_NAME, "int_w", "int_b"], ["integer_logit"]),
            helper.make_node("Sigmoid", ["integer_logit"], ["integer"]),
        ]
    fw, fb = _mean_conv(1.0, 0.5)
    inits += [nh.from_array(fw, "frac_w"), nh.from_array(fb, "frac_b"),
              nh.from_array(np.array(step, np.float32), "frac_step")]
    nodes.append(helper.make_node("Conv", [INPUT_NAME, "frac_w", "frac_b"],
                                  ["frac_logit_image" if camera_input else "frac_logit"]))
    if camera_input:  # logit + c0 + c1: a MatMul with ones, reshaped to broadcast over the pixels
        inits += [nh.from_array(np.ones((CAMERA_INPUT_SHAPE[1], 1), np.float32), "camera_ones"),
                  nh.from_array(np.array([1, 1, 1, 1], np.int64), "camera_bcast_shape")]
        nodes += [helper.make_node("MatMul", [CAMERA_INPUT_NAME, "camera_ones"], ["camera_sum"]),
                  helper.make_node("Reshape", ["camera_sum", "camera_bcast_shape"], ["camera_shift"]),
                  helper.make_node("Add", ["frac_logit_image", "camera_shift"], ["frac_logit"])]
    nodes += [
        helper.make_node("Sigmoid", ["frac_logit"], ["frac_unit"]),
        helper.make_node("Mul", ["frac_unit", "frac_step"], ["fractional_raw" if cpu_only_op else "fractional"]),
    ]
    if cpu_only_op:
        inits.append(nh.from_array(np.array(1.0, np.float32), "one_metre"))
        nodes.append(helper.make_node("Mod", ["fractional_raw", "one_metre"], ["fractional"], fmod=1))
    if outputs == "composed":
        inits.append(nh.from_array(np.array(max_depth, np.float32), "max_depth"))
        nodes += [
            helper.make_node("Mul", ["integer", "max_depth"], ["integer_metres"]),
            helper.make_node("Add", ["integer_metres", "fractional"], ["depth"]),
        ]
        out_names = ["depth"]
        meaning = {"depth": "metres, float32 [1,1,H,W]"}
    else:
        out_names = ["integer", "fractional"]
        meaning = {"integer": "integer head in [0,1], float32 [1,1,H,W]",
                   "fractional": "fractional residual in metres, float32 [1,1,H,W]"}
    name = f"tiny_depth_{kind}_{outputs}" + ("_cpu_only" if cpu_only_op else "") + ("_camera" if camera_input else "")
    model = _finish(nodes, inits, [(o, 1) for o in out_names], hw, name,
                    [(CAMERA_INPUT_NAME, CAMERA_INPUT_SHAPE)] if camera_input else ())
    meta = ModelMetadata(
        task="depth",
        input_name=INPUT_NAME,
        input_shape=[1, 3, int(hw[0]), int(hw[1])],
        output_names=out_names,
        format="fp32",
        model_name=name,
        output_meaning=meaning,
        max_depth=float(max_depth),
        min_depth=float(min_depth),
        integer_head_kind=kind,
        levels=int(levels) if kind == "levels" else 0,
        depth_outputs=outputs,
        depth_camera=depth_camera,
        canonical_focal_px=float(canonical_focal_px),
        canonical_height_m=float(canonical_height_m),
        camera_input=CAMERA_INPUT_NAME if camera_input else "",
        extra={"producer": "perception_core.testing.tiny_models"},
    )
    meta.validate(str(path))
    return _save(model, path, meta)


def make_tiny_seg_model(
    path: str | os.PathLike[str],
    output: str = "logits",
    hw: tuple[int, int] = (32, 32),
    num_classes: int = 7,
    class_names: list[str] | None = None,
    class_colors: list[list[int]] | None = None,
) -> Path:
    """Write a tiny segmentation model with full metadata; return its path."""
    from onnx import helper
    from onnx import numpy_helper as nh

    if output not in ("logits", "class_id"):
        raise ConfigError(f"tiny seg model output {output!r} is not logits/class_id")
    if num_classes < 2:
        raise ConfigError(f"tiny seg model needs num_classes >= 2, got {num_classes}")
    if class_names is None:
        class_names = (DEFAULT_CLASS_NAMES if num_classes == len(DEFAULT_CLASS_NAMES)
                       else [f"class_{i}" for i in range(num_classes)])
    if class_colors is None:
        class_colors = (DEFAULT_CLASS_COLORS if num_classes == len(DEFAULT_CLASS_COLORS)
                        else [[(37 * i) % 256, (91 * i + 60) % 256, (173 * i + 120) % 256] for i in range(num_classes)])
    w, b = _nearest_level_conv(num_classes)
    b = b + float((num_classes - 1) ** 2)  # every logit >= 0, so the Relu keeps them unchanged
    inits = [nh.from_array(w, "cls_w"), nh.from_array(b.astype(np.float32), "cls_b")]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "cls_w", "cls_b"], ["pre_logits"]),
        helper.make_node("Relu", ["pre_logits"], ["logits"]),
    ]
    if output == "logits":
        outputs = [("logits", num_classes)]
        meaning = {"logits": f"class scores, float32 [1,{num_classes},H,W]"}
    else:
        nodes += [
            helper.make_node("ArgMax", ["logits"], ["class_index"], axis=1, keepdims=1),
            helper.make_node("Cast", ["class_index"], ["class_id"], to=1),
        ]
        outputs = [("class_id", 1)]
        meaning = {"class_id": "class id as float32 [1,1,H,W]"}
    name = f"tiny_seg_{output}"
    model = _finish(nodes, inits, outputs, hw, name)
    meta = ModelMetadata(
        task="segmentation",
        input_name=INPUT_NAME,
        input_shape=[1, 3, int(hw[0]), int(hw[1])],
        output_names=[o for o, _ in outputs],
        format="fp32",
        model_name=name,
        output_meaning=meaning,
        class_names=list(class_names),
        class_colors=[list(map(int, c)) for c in class_colors],
        ontology_version="tiny-test",
        seg_output=output,
        extra={"producer": "perception_core.testing.tiny_models"},
    )
    meta.validate(str(path))
    return _save(model, path, meta)


def expected_mean_intensity(rgb_uint8_hwc: np.ndarray) -> np.ndarray:
    """The per-pixel ``t = mean_rgb / 255`` the tiny models compute (float64, for test oracles)."""
    return rgb_uint8_hwc.astype(np.float64).mean(axis=2) / 255.0
