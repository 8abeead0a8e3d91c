"""Run a command-line tool in a subprocess, as a user does, and check how it fails (for tests)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


def run_command(module: str, *argv: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``python -m module argv...`` in a fresh interpreter; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", module, *(str(a) for a in argv)], capture_output=True, text=True,
                          cwd=cwd, env=None if env is None else dict(env), timeout=timeout_s, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *must_name: str | Path) -> str:
    """Assert the command failed with exit code 1 and one ``error:`` line (no traceback) naming each of ``must_name``.

    Returns that line. Other stderr lines (library warnings, progress bars) are allowed.
    """
    stderr = result.stderr
    assert result.returncode == 1, f"exit code {result.returncode}, stderr:\n{stderr}\nstdout:\n{result.stdout}"
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{stderr}"
    for name in must_name:
        assert str(name) in errors[0], f"{name!s} not named in: {errors[0]}"
    return errors[0]


def accepts_new_files(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` right now."""
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@contextlib.contextmanager
def unwritable_folder(base: Path) -> Iterator[Path | None]:
    """A folder that refuses new files, or None where this machine has none.

    ``base/locked`` with mode 0555; where permission bits do not bind (root),
    sysfs's root, which accepts no new files even from root.
    """
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        folder = locked if not accepts_new_files(locked) else Path("/sys")
        yield folder if folder.is_dir() and not accepts_new_files(folder) else None
    finally:
        locked.chmod(0o755)
