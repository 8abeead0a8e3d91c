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


def interpolate_level_runs(depth: Any, level: Any, step: float) -> Any:
    """Depth with each column's staircase of integer levels replaced by the surface through the level edges.

    A levels head whose fractional head does not resolve its step (the demo model's reads about half a step
    everywhere; docs/depth.md, "Level interpolation") gives a smooth surface as a staircase: a run of rows at
    level k, then one at k + 1. Where a run of one level in an image column has level k - 1 on one side and
    k + 1 on the other, the surface crosses depth k * step at its edge with the first and (k + 1) * step at its
    edge with the second; the run's pixels are set on the line between those two edges in inverse depth (which
    is linear in the image row on a plane). Every other pixel keeps ``depth``: runs at a jump of more than one
    level (an outline, an object's face), a run that turns back (a crest), runs at the image's top or bottom
    row and runs of level 0. ``depth`` and ``level`` are H x W (``level`` the integer head's index, ``step`` its
    metres per level, in the units of ``depth``); a new float32 array is returned.
    """
    import numpy as np

    depth = np.asarray(depth, np.float32)
    level = np.asarray(level)
    if depth.shape != level.shape or depth.ndim != 2:
        raise ValueError(f"depth {depth.shape} and level {level.shape} must be the same H x W")
    height = depth.shape[0]
    columns = np.ascontiguousarray(level.T, np.int16).ravel()  # one image column after another, top row first
    starts = np.empty(columns.size, bool)
    starts[0] = True
    np.not_equal(columns[1:], columns[:-1], out=starts[1:])
    starts[::height] = True  # a column's first row starts a run
    first = np.flatnonzero(starts)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = columns.size - 1
    k = columns[first].astype(np.int32)
    above = columns[np.maximum(first - 1, 0)]  # the run's neighbour one row up (farther on the ground)
    below = columns[np.minimum(last + 1, columns.size - 1)]
    inner = (first % height > 0) & (last % height < height - 1) & (k >= 1)
    rising = inner & (above == k + 1) & (below == k - 1)  # ground: farther up the image
    falling = inner & (above == k - 1) & (below == k + 1)  # an overhang or a ceiling
    chosen = np.flatnonzero(rising | falling)
    out = np.array(depth.T, np.float32, order="C").ravel()  # always a copy: the caller's depth stays as it was
    if chosen.size:
        first_c, last_c, k_c, rising_c = first[chosen], last[chosen], k[chosen], rising[chosen]
        lengths = last_c - first_c + 1
        inv_lower = 1.0 / (np.where(rising_c, k_c, k_c + 1) * float(step))  # at the run's lower edge
        inv_upper = 1.0 / (np.where(rising_c, k_c + 1, k_c) * float(step))
        # inverse depth of the run's pixel i rows above its bottom one: bottom + slope * i (the edges lie half a row
        # beyond the end pixels)
        slope = (inv_upper - inv_lower) / lengths
        bottom = inv_lower + 0.5 * slope
        rows_up = (np.arange(int(lengths.sum()), dtype=np.float32)
                   - np.repeat((np.cumsum(lengths) - lengths).astype(np.float32), lengths))
        inverse = np.repeat(bottom.astype(np.float32), lengths) + np.repeat(slope.astype(np.float32), lengths) * rows_up
        out[np.repeat(last_c, lengths) - rows_up.astype(np.int64)] = np.float32(1.0) / inverse
    return out.reshape(depth.shape[1], height).T.copy()
