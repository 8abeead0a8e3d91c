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
    height, width = depth.shape
    # Levels count as int16, as always. Integers of 16 bits or more need no int16 copy: their differences wrap
    # around to the same int16 steps.
    if level.dtype.kind not in "iu" or level.dtype.itemsize < 2:
        level = level.astype(np.int16)
    # steps[c, r]: in image column c, the level of row r - 1 minus that of row r, on the edge above row r. Rows
    # 0 and height are the image's top and bottom edges, marked 2 (a jump) so that no run touching them
    # qualifies. Transposed, so that each column's edges follow one another, a band of rows at a time: twice as
    # fast as a transposed copy of the whole image, whose reads leave the cache. Everything else stays in the
    # image's own row-major order, and big temporaries are dropped as soon as they are used: fresh memory costs
    # page faults on every call, about as much as the passes themselves.
    steps = np.empty((width, height + 1), np.int16)
    steps[:, 0] = steps[:, height] = 2
    for row in range(1, height, 64):
        band = slice(row, min(row + 64, height))
        steps[:, band] = (level[row - 1:band.stop - 1] - level[band]).T
    steps = steps.ravel()  # column c's edge above row r at c * (height + 1) + r
    edges = np.flatnonzero(steps != 0)  # every run lies between two edges next in this list
    edge_step = steps[edges]
    del steps
    # A run qualifies where the edge above it and the one below are the same one-level step: +1 is k + 1 above
    # and k - 1 below (the ground rising up the image), -1 the other way (an overhang). The pair of a column's
    # bottom edge and the next column's top edge is two jumps.
    upper = edge_step[:-1]
    runs = np.flatnonzero((upper == edge_step[1:]) & ((upper == 1) | (upper == -1)))
    top = edges[runs]
    length = edges[runs + 1] - top
    del edges
    # Longest runs first (a stable sort of small ints is a radix sort): the runs longer than i rows are a prefix.
    order = np.argsort((height - length).astype(np.min_scalar_type(height)), kind="stable")
    top, length, rising = top[order], length[order], upper[runs[order]] == 1
    column = top // (height + 1)
    top -= column * (height + 1)  # the run's top row
    k = level.ravel()[top * width + column].astype(np.int16)
    bottom_pixel = (top + length - 1) * width + column  # row-major index of the run's bottom pixel
    # Level 0 has no edge at depth 0 to go to. Level 32767 has no k + 1 in int16, and leaving it out keeps a
    # step that wrapped around (32767 next to -32768) from passing for a one-level one.
    valid = (k >= 1) & (k < np.iinfo(np.int16).max)
    if not valid.all():  # (a filter keeps the order by length)
        length, rising, k, bottom_pixel = length[valid], rising[valid], k[valid], bottom_pixel[valid]
    out = np.array(depth, np.float32, order="C")  # always a copy: the caller's depth stays as it was
    if length.size == 0:
        return out
    inv_lower = 1.0 / ((k + ~rising) * float(step))  # at the run's lower edge: level k rising, k + 1 falling
    inv_upper = 1.0 / ((k + rising) * float(step))
    # inverse depth of the run's pixel i rows above its bottom one: bottom + slope * i (the edges lie half a row
    # beyond the end pixels)
    slope = (inv_upper - inv_lower) / length
    bottom = (inv_lower + 0.5 * slope).astype(np.float32)
    slope = slope.astype(np.float32)
    # Row i up from the bottom of every run longer than i at once: a few dozen steps over short slices (runs are a
    # few rows), where expanding every run to its pixels first costs several passes over all of them.
    longer = length.size - np.searchsorted(length[::-1], np.arange(length[0]), "right")  # runs over i rows long
    flat = out.reshape(-1)
    for i, n in enumerate(longer.tolist()):
        if n <= 256:
            # The last few, longest runs: all their rows left in one padded block (a step per row costs more).
            up = np.arange(i, length[0], dtype=np.float32)
            inside = up < length[:n, None]
            inverse = slope[:n, None] * up + bottom[:n, None]
            flat[(bottom_pixel[:n, None] - np.arange(up.size) * width)[inside]] = np.float32(1.0) / inverse[inside]
            break
        inverse = slope[:n] * np.float32(i)
        inverse += bottom[:n]
        flat[bottom_pixel[:n]] = np.float32(1.0) / inverse
        bottom_pixel[:n] -= width  # one row up
    return out
