"""Damaged copies of model files, for the tests of what the runtime does with them."""

from __future__ import annotations

from pathlib import Path


def flip_weight_byte(path: Path, out: Path) -> Path:
    """Copy ``path`` to ``out`` with one bit flipped in the middle of its largest initializer's stored bytes.

    The copy still parses and runs; only its weights differ.
    """
    import onnx

    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    data = bytearray(path.read_bytes())
    at = data.find(weights.raw_data)
    if at < 0 or len(weights.raw_data) < 4:
        raise ValueError(f"{path}: no initializer with raw bytes to flip")
    data[at + len(weights.raw_data) // 2] ^= 0x40
    out.write_bytes(bytes(data))
    return out
