"""Output files: checked writable before the work starts, written atomically so a killed run leaves nothing half-done."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perception_core.errors import OutputError, OutputExistsError


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail now, with one line naming ``option`` and the folder, unless files can be written into ``path``.

    Commands call this before their work, so a long run never ends in an
    output it cannot write. Nothing is created: the nearest folder that
    exists on the path is probed with a temporary file (the permission that
    would let the command create the rest of the path).

    Raises:
        OutputError: ``path`` or a folder above it is a regular file, or the
            nearest existing folder does not accept new files.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{option} {target}: is a file, not a folder")
    _check_can_create(target, target, option)
    return target


def check_output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Like :func:`check_output_folder` for a file: its folder must accept new files, and it must not be a folder."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{option} {target}: is a folder, not a file")
    _check_can_create(target.parent, target, option)
    return target


def _check_can_create(folder: Path, target: Path, option: str) -> None:
    """Probe the nearest existing folder of ``folder`` for ``target`` (named with ``option`` in errors)."""
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {target}: cannot create it, {existing} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check.", dir=existing)
    except OSError as err:
        if existing == target:
            raise OutputError(f"{option} {target}: folder is not writable: {err.strerror}") from err
        raise OutputError(f"{option} {target}: cannot write it, folder {existing} is not writable: {err.strerror}") from err
    os.close(fd)
    os.unlink(name)


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
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=_temp_suffix(target), dir=target.parent)
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


def _temp_prefix(target: Path) -> str:
    return f".{target.stem}."


def _temp_suffix(target: Path) -> str:
    return f"{target.suffix}.tmp{target.suffix}"


def unfinished_writes(path: str | os.PathLike[str]) -> list[Path]:
    """Temp files that :func:`atomic_write` left beside ``path`` when its process was killed mid-write.

    A SIGKILL skips the cleanup, so a killed checkpoint write leaves its
    whole partial file (tens of MB) behind; only the one process that owns
    ``path``'s folder should remove them, at its start.
    """
    target = Path(path)
    prefix, suffix = _temp_prefix(target), _temp_suffix(target)
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir()
                  if p.name.startswith(prefix) and p.name.endswith(suffix) and len(p.name) > len(prefix) + len(suffix))


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
