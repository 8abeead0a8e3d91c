"""Runs a ``model-tools`` command in this process and SIGKILLs it in the middle of a checkpoint write.

    python kill_harness.py WRITE_NUMBER -- depth train --config ... --run-dir RUN

The WRITE_NUMBER-th write of ``checkpoints/last.pt`` (1 = the first) is cut
after half of its bytes reached the temp file, by a real SIGKILL of this
process: no ``finally`` block, no atexit handler and no temp-file cleanup
runs, exactly as when the machine's OOM killer or a job scheduler ends a
run. ``0`` runs the command unharmed. The tests drive it as a subprocess.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch


class _KillingFile:
    """A binary file that kills its process once ``limit`` bytes were written through it."""

    def __init__(self, path: Path, limit: int) -> None:
        self.handle = open(path, "wb", buffering=0)  # closed by close(), or by the kill
        self.limit, self.written = limit, 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        room = self.limit - self.written
        if len(view) >= room:
            self.handle.write(view[:room])
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(view)
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _kill_in_write(number: int) -> None:
    """Wrap torch.save so that the ``number``-th save of a ``last.pt`` temp file dies half-way."""
    real_save = torch.save
    seen = [0]

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        path = Path(f) if isinstance(f, (str, os.PathLike)) else None
        if path is not None and path.name.startswith(".last.") and path.parent.name == "checkpoints":
            seen[0] += 1
            if seen[0] == number:
                full = len(_serialised(obj, real_save))
                real_save(obj, _KillingFile(path, full // 2), *args, **kwargs)  # type: ignore[arg-type]
                return
        real_save(obj, f, *args, **kwargs)

    torch.save = save  # type: ignore[assignment]


def _serialised(obj: Any, real_save: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    real_save(obj, buffer)
    return buffer.getvalue()


def main() -> int:
    number = int(sys.argv[1])
    if sys.argv[2] != "--":
        raise SystemExit("usage: kill_harness.py WRITE_NUMBER -- model-tools arguments")
    if number > 0:
        _kill_in_write(number)
    from model_tools.cli import main as cli

    return cli(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
