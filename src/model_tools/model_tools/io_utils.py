"""Atomic file output: a killed run never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perception_core.errors import OutputExistsError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it into place only on success.

    The temp file keeps ``path``'s suffix so writers that dispatch on it
    (cv2.imwrite, onnx.save, torch.save) behave the same.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; refusing to overwrite it (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f"{target.suffix}.tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.stat().st_size == 0:
            raise OSError(f"nothing was written for {target}")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal open()'s mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any, overwrite: bool = True) -> Path:
    """Write JSON atomically (pretty, NaN-safe: NaN becomes null)."""
    text = json.dumps(_nan_to_none(obj), indent=2, sort_keys=False)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
