"""ONNX graph facts the INT8 tools need: node names, parts, the output head's tensors.

A *part* is what sensitivity analysis quantizes on its own and what mixed
precision raises to 16 bit: a single node (``node`` granularity) or a block of
nodes sharing a name prefix (``block`` granularity, e.g. ``/encoder/layer1``
for TorchScript-exported names like ``/encoder/layer1/layer1.0/conv1/Conv``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Ops with weights: the head tail walk stops at them (their output is included).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
GRANULARITIES = ("node", "block")
FLOAT_TYPES = frozenset({1, 10, 16})  # FLOAT, FLOAT16, BFLOAT16


def name_unnamed_nodes(model: Any) -> int:
    """Give every unnamed node a stable unique name ``<OpType>_<index>``; return how many were named.

    Quantization by node (``nodes_to_quantize``) and the reports need names;
    the tiny test models and some exporters leave them empty.
    """
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        candidate = f"{node.op_type}_{index}"
        while candidate in taken:
            candidate += "_"
        node.name = candidate
        taken.add(candidate)
        named += 1
    return named


def float_tensors(model: Any) -> set[str]:
    """Names of float activation tensors known to shape inference (value_info, inputs, outputs)."""
    infos = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    return {v.name for v in infos if v.type.tensor_type.elem_type in FLOAT_TYPES}


def part_name(node_name: str, granularity: str = "block", depth: int = 2) -> str:
    """The part a node belongs to: itself, or the first ``depth`` components of its ``/``-path."""
    if granularity == "node":
        return node_name
    pieces = [p for p in node_name.split("/") if p]
    if len(pieces) <= 1:
        return node_name
    return "/" + "/".join(pieces[: min(depth, len(pieces) - 1)])


def model_parts(
    model: Any, op_types: list[str] | None = None, granularity: str = "block", depth: int = 2
) -> OrderedDict[str, list[str]]:
    """Part name -> names of its quantizable nodes, in graph order.

    ``op_types`` limits which nodes count (the QNN QDQ config's
    ``op_types_to_quantize``); Q/DQ and shape-only nodes never count.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    parts: OrderedDict[str, list[str]] = OrderedDict()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if op_types is not None and node.op_type not in op_types:
            continue
        parts.setdefault(part_name(node.name, granularity, depth), []).append(node.name)
    return parts


def node_output_tensors(model: Any, node_names: list[str]) -> list[str]:
    """Float activation outputs of the named nodes (what a 16-bit override applies to)."""
    wanted = set(node_names)
    floats = float_tensors(model)
    outs: list[str] = []
    for node in model.graph.node:
        if node.name in wanted:
            outs += [o for o in node.output if o in floats]
    return outs


def head_tail_nodes(model: Any) -> list[str]:
    """Nodes from the graph outputs back to (and including) the last weighted op on each path.

    For the dual-head depth net this is each head's final Conv plus what
    follows it: Sigmoid, ArgMax/Cast/Div (or Mul), the depth composition. These
    carry the model's fine depth resolution, so keeping their activations at
    16 bit is the cheap first fix for depth INT8 accuracy.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    seen_tensors: set[str] = set()
    names: list[str] = []
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        if tensor in seen_tensors:
            continue
        seen_tensors.add(tensor)
        node = producers.get(tensor)
        if node is None:
            continue
        if node.name not in names:
            names.append(node.name)
        if node.op_type in WEIGHTED_OPS:
            continue
        stack.extend(i for i in node.input if i in producers)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    return sorted(names, key=lambda n: order.get(n, 0))


def camera_conditioning_nodes(model: Any, camera_input: str) -> list[str]:
    """Nodes that compute from the camera input alone, and those where that joins the image path.

    For the depth net's ``CameraModulation`` this is the MLP, the gamma/beta slices and the
    Mul/Add that scale and shift each encoder level: small values whose 8-bit rounding moves
    every feature map downstream, so the INT8 tools keep them at 16 bit. Initializers, and
    nodes computed from them alone, count as camera-only (they carry no image).
    """
    constants = {i.name for i in model.graph.initializer}
    camera_only = {camera_input}
    names: list[str] = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        fed = [i for i in node.input if i and i not in constants]
        if not fed:  # a Constant, or computed from initializers alone: no image in it either
            camera_only.update(node.output)
            continue
        from_camera = [i in camera_only for i in fed]
        if all(from_camera):
            camera_only.update(node.output)
            names.append(node.name)
        elif any(from_camera):
            names.append(node.name)  # the camera joins the image path here
    return names


def op_histogram(nodes: Any) -> dict[str, int]:
    """op_type -> count, sorted by op name."""
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
