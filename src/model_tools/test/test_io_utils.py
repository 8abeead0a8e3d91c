"""Atomic writes leave either the whole file or nothing."""

from __future__ import annotations

import json
import os

import pytest

from model_tools.io_utils import atomic_write, write_json
from perception_core.errors import OutputExistsError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_renames_on_success(tmp_path) -> None:
    target = tmp_path / "sub" / "model.onnx"
    with atomic_write(target) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == target.parent
        tmp.write_bytes(b"abc")
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask(), "mode must follow the umask, not mkstemp's 0600"
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_existing_and_empty(tmp_path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match=r"x\.json exists"), atomic_write(target):
        pass
    assert target.read_text() == "old"
    with pytest.raises(OSError, match="nothing was written"), atomic_write(tmp_path / "y.bin"):
        pass
    assert not (tmp_path / "y.bin").exists()


def test_write_json_nan_becomes_null(tmp_path) -> None:
    path = write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("nan")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}


def test_output_checks_name_the_path_in_the_way_and_create_nothing(tmp_path) -> None:
    from model_tools.io_utils import check_output_file, check_output_folder
    from perception_core.errors import OutputError

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "new" / "model.onnx", "--out") == tmp_path / "new" / "model.onnx"
    with pytest.raises(OutputError, match=r"--out-dir .*notes\.txt: is a file, not a folder"):
        check_output_folder(tmp_path / "notes.txt", "--out-dir")
    with pytest.raises(OutputError, match=r"--out .*notes\.txt/sub/m\.onnx: cannot create it, .*notes\.txt is a file"):
        check_output_file(tmp_path / "notes.txt" / "sub" / "m.onnx")
    with pytest.raises(OutputError, match=r"--out .*folder: is a folder, not a file"):
        check_output_file(tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]  # probes leave nothing behind
