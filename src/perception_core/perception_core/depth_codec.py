"""Dual-head depth codec: metric depth <-> (integer head, fractional head).

    depth = integer * max_depth + fractional

``integer`` is in [0, 1] (what the network's integer head outputs) and
``fractional`` is a non-negative residual in metres. The integer head carries
whole quantisation steps of ``integer_step(...)`` metres:

- ``sigmoid`` kind: step = 1 m (the integer head encodes whole metres).
- ``levels`` kind:  step = max_depth / (levels - 1); level k <-> k / (levels - 1).

Decomposition takes the floor (never round), so the residual is in
[0, step) and is always representable by the sigmoid fractional head as long
as step <= 1 m. Works on numpy arrays and on torch tensors alike (only
arithmetic, ``floor`` and ``clip`` via the array's own methods).
"""

from __future__ import annotations

import math
from typing import Any

from perception_core.errors import ConfigError

HEAD_KINDS = ("sigmoid", "levels")


def integer_step(max_depth: float, kind: str, levels: int = 256) -> float:
    """Metres per integer-head step (the integer head's own depth resolution)."""
    if kind not in HEAD_KINDS:
        raise ConfigError(f"integer head kind {kind!r} is not one of {HEAD_KINDS}")
    if not max_depth > 0:
        raise ConfigError(f"max_depth must be > 0, got {max_depth}")
    if kind == "sigmoid":
        return 1.0
    if levels < 2:
        raise ConfigError(f"levels must be >= 2 for the 'levels' head, got {levels}")
    step = max_depth / (levels - 1)
    if step > 1.0:
        raise ConfigError(
            f"levels={levels} over max_depth={max_depth} m gives a {step:.3f} m step; the fractional "
            "head (sigmoid, metres) can only carry residuals below 1 m"
        )
    return step


def max_level(max_depth: float, kind: str, levels: int = 256) -> int:
    """Largest integer-head step index for this head."""
    if kind == "levels":
        return levels - 1
    return math.floor(max_depth)


def compose_depth(integer: Any, fractional: Any, max_depth: float) -> Any:
    """Metric depth from the two heads (the host-side composition)."""
    return integer * max_depth + fractional


def depth_to_level(depth: Any, max_depth: float, kind: str, levels: int = 256) -> Any:
    """Integer step index (floor) of each depth, clipped to the head's range."""
    step = integer_step(max_depth, kind, levels)
    # A tiny epsilon keeps exact multiples of the step (e.g. 3.0 m) from landing
    # one level low through float error in the division.
    return _floor(depth / step + 1e-6).clip(0, max_level(max_depth, kind, levels))


def decompose_depth(depth: Any, max_depth: float, kind: str, levels: int = 256) -> tuple[Any, Any]:
    """Split depth into (integer in [0, 1], fractional residual in metres >= 0).

    Inverse of :func:`compose_depth` up to float rounding for depths in
    [0, max_depth]; depths beyond max_depth are clipped to it.
    """
    step = integer_step(max_depth, kind, levels)
    depth = depth.clip(0.0, max_depth)
    q = depth_to_level(depth, max_depth, kind, levels)
    integer = q * (step / max_depth)
    fractional = (depth - q * step).clip(0.0, None)
    return integer, fractional


def levels_to_integer(level_index: Any, levels: int) -> Any:
    """ArgMax level index -> integer-head value in [0, 1] (what the exported graph does)."""
    return level_index / float(levels - 1)


def _floor(x: Any) -> Any:
    if type(x).__module__.startswith("torch"):
        return x.floor()
    import numpy as np

    return np.floor(x)
