"""Checkpoint files: atomic writes, safe loads, fp16 exports and split parts.

Every load goes through ``torch.load(weights_only=True)``: a checkpoint is
data, never code. Full training checkpoints are dicts of tensors and plain
Python values (RNG states are converted to tensors/lists for that reason).
An fp16 export is a plain state dict; when it is too big for a file-size
limit, :func:`save_split` writes it as several plain state dicts (split by
key) and :func:`load_split` joins them again.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_tools.io_utils import atomic_write
from perception_core.errors import ModelFileError

CHECKPOINT_FORMAT = "model_tools.checkpoint.v1"
DEFAULT_PART_BYTES = 15 * 1024 * 1024 + 768 * 1024  # < 16 MiB with framing


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """torch.save to a temp file beside ``path``, then rename (a kill never leaves half a file)."""
    with atomic_write(path, overwrite=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_safe(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ModelFileError(f"checkpoint {path} is corrupt or not a weights-only torch file: {err}") from err


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model weights of a full checkpoint, a plain state dict, or a wrapped one."""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["ema"]["module"] if obj.get("ema") else obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{source}: holds no state dict of tensors")
    return {_strip_prefix(k): v for k, v in obj.items()}


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load whose error names the file and the first missing/unexpected/misshapen key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]!r}")
        if misshapen:
            k = misshapen[0]
            parts.append(f"shape of {k!r} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
        raise ModelFileError(f"{source}: does not match the configured model: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def fp16_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float tensors to fp16 (integer buffers such as BN counters kept), on the CPU."""
    out = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        out[key] = value.half() if value.is_floating_point() else value.clone()
    return out


def save_split(state: dict[str, torch.Tensor], prefix: str | os.PathLike[str], max_part_bytes: int = DEFAULT_PART_BYTES) -> list[Path]:
    """Write ``state`` as ``<prefix>.part<i>of<n>.pt`` files, each a plain state dict below ``max_part_bytes``.

    Tensors are packed largest first into the emptiest part that still has room
    (few, balanced parts); one tensor bigger than the limit raises.
    """
    budget = max_part_bytes - 64 * 1024  # room for the pickle/zip framing
    sizes = {key: value.numel() * value.element_size() for key, value in state.items()}
    for key, nbytes in sizes.items():
        if nbytes > budget:
            raise ModelFileError(f"tensor {key!r} ({nbytes} bytes) alone exceeds the part limit {max_part_bytes}")
    count = max(1, math.ceil(sum(sizes.values()) / budget))
    fill = [0] * count
    owner: dict[str, int] = {}
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        index = min(range(len(fill)), key=fill.__getitem__)
        if fill[index] + sizes[key] > budget:
            fill.append(0)
            index = len(fill) - 1
        fill[index] += sizes[key]
        owner[key] = index
    parts: list[dict[str, torch.Tensor]] = [{} for _ in fill]
    for key, value in state.items():  # keep the original key order inside each part
        parts[owner[key]][key] = value
    prefix = Path(prefix)
    for stale in prefix.parent.glob(f"{prefix.name}.part*.pt"):
        stale.unlink()
    paths = []
    for index, part in enumerate(parts):
        path = prefix.parent / f"{prefix.name}.part{index}of{len(parts)}.pt"
        save_atomic(part, path)
        paths.append(path)
    return paths


def split_part_paths(prefix: str | os.PathLike[str]) -> list[Path]:
    """The ``<prefix>.part<i>of<n>.pt`` files in order; error if none, or any of the n is missing."""
    prefix = Path(prefix)
    found: dict[int, Path] = {}
    counts = set()
    for path in prefix.parent.glob(f"{prefix.name}.part*of*.pt"):
        index, _, count = path.name[len(prefix.name) + len(".part"):-len(".pt")].partition("of")
        if index.isdigit() and count.isdigit():
            found[int(index)] = path
            counts.add(int(count))
    if not found:
        raise ModelFileError(f"no split parts {prefix}.part*of*.pt found")
    if len(counts) != 1:
        raise ModelFileError(f"split state dict {prefix}: parts of different splits ({sorted(counts)} parts) are mixed")
    count = counts.pop()
    missing = [i for i in range(count) if i not in found]
    if missing:
        raise ModelFileError(f"split state dict {prefix}: part(s) {missing} of {count} missing")
    return [found[i] for i in range(count)]


def checkpoint_sha256(checkpoint: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint's bytes: the file, or a split state dict's parts in order (``split_part_paths``).
    Exports record it (metadata extra ``weights_sha256``) so that what was measured for one export of the weights
    (a range correction) is known to hold for another export of them."""
    path = Path(checkpoint)
    digest = hashlib.sha256()
    for part in [path] if path.is_file() else split_part_paths(path):
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_split(prefix: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Join the parts written by :func:`save_split` into one state dict."""
    state: dict[str, torch.Tensor] = {}
    for path in split_part_paths(prefix):
        part = extract_state_dict(load_safe(path), str(path))
        overlap = set(part) & set(state)
        if overlap:
            raise ModelFileError(f"{path}: key {sorted(overlap)[0]!r} also appears in an earlier part")
        state.update(part)
    return state


def join_split(prefix: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Join split parts into one plain state-dict file (atomically)."""
    return save_atomic(load_split(prefix), out)


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, training config or None) from a checkpoint, fp16 export, or split prefix.

    ``path`` may name a full training checkpoint, a plain state dict, or the
    prefix/first part of a split state dict (``x.part0of2.pt`` or ``x``).
    """
    path = Path(path)
    name = path.name
    if ".part" in name and name.endswith(".pt"):
        return load_split(path.parent / name.rsplit(".part", 1)[0]), None
    if not path.exists() and list(path.parent.glob(f"{name}.part*of*.pt")):
        return load_split(path), None
    obj = load_safe(path)
    config = obj.get("config") if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT else None
    return extract_state_dict(obj, str(path)), config


# ---- RNG state in weights_only-loadable form ---------------------------------------------------


def rng_state() -> dict[str, Any]:
    """All RNG states this process uses, as tensors/lists (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
