"""Damaged bags: chunk CRCs in the bags the project writes, and no message lost without a word.

The bags are real drive bags written by ``write_drive_bag``, damaged in place
the way storage is (model_tools.testing.bag_faults), and read by rosbags (the
independent check of the CRCs) and by eval-bag run as a user runs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from model_tools.bags import bagio
from model_tools.data.synth_bag import BAG_TOPICS
from model_tools.testing import bag_faults
from perception_core.errors import BagError
from perception_core.testing.cli import one_line_error, run_command

MODEL_HW = (24, 32)
FRAMES = 9  # at 160x120, 9 frames fill two 1 MiB MCAP chunks
PER_FRAME = len(BAG_TOPICS) - 1  # messages per frame: every topic but /tf_static (one message)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

    folder = tmp_path_factory.mktemp("models")
    return make_tiny_depth_model(folder / "depth.onnx", hw=MODEL_HW), make_tiny_seg_model(folder / "seg.onnx", hw=MODEL_HW)


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_tools.data.synth import CameraRig
    from model_tools.data.synth_bag import write_drive_bag

    return write_drive_bag(tmp_path_factory.mktemp("bags") / "drive", CameraRig.default(width=160, height=120),
                           n_frames=FRAMES, fps=10.0, seed=5, progress=False)


def _copy(bag: Path, to: Path) -> Path:
    shutil.copytree(bag, to)
    return to


def _eval_bag(bag: Path, models: tuple[Path, Path], out: Path):
    return run_command("model_tools.cli", "eval-bag", bag, "--depth-model", models[0], "--seg-model", models[1],
                       "--out", out, cwd=out.parent)


def test_a_drive_bag_reads_whole_and_a_flipped_bit_fails_its_chunk_crc(drive_bag: Path, tmp_path: Path) -> None:
    """rosbags checks a chunk's CRC when it is set: a whole bag reads, one flipped bit does not."""
    with Reader(drive_bag) as reader:
        assert sum(1 for _ in reader.messages()) == reader.message_count == PER_FRAME * FRAMES + 1
    flipped = _copy(drive_bag, tmp_path / "flipped")
    bag_faults.flip_message_bit(flipped, "/camera/image_raw", FRAMES - 1)
    with pytest.raises(Exception, match="Chunk checksum mismatch"), Reader(flipped) as reader:
        list(reader.messages())
    without_crcs = _copy(flipped, tmp_path / "no_crcs")
    assert bag_faults.clear_chunk_crcs(without_crcs) >= 2
    with Reader(without_crcs) as reader:  # the fault the CRCs catch: wrong pixels read back as data
        assert sum(1 for _ in reader.messages()) == reader.message_count


@pytest.mark.reliability(case="a flipped bit inside a message of a bag the project wrote (chunk CRC)",
                         outcome="eval-bag: exit 1, one error line naming the bag (chunk checksum mismatch) and the "
                                 "unread message count; metrics.json partial with unread_messages per topic")
def test_eval_bag_on_a_bag_with_a_flipped_bit(drive_bag: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    flipped = _copy(drive_bag, tmp_path / "flipped")
    bag_faults.flip_message_bit(flipped, "/camera/image_raw", FRAMES - 1)
    line = one_line_error(_eval_bag(flipped, models, tmp_path / "eval"), flipped)
    assert "Chunk checksum mismatch" in line and "messages could not be read" in line
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["partial"] is True and "checksum" in metrics["partial_reason"]
    assert 0 < metrics["frames_evaluated"] < FRAMES
    unread = metrics["unread_messages"]
    assert unread["/camera/image_raw"] == FRAMES - metrics["frames_evaluated"]
    assert set(unread) == {"/camera/image_raw", "/camera/camera_info", "/ground_truth/depth", "/ground_truth/labels",
                           "/ground_truth/elevation"}


@pytest.mark.reliability(case="2 message records of a bag without chunk CRCs zeroed (the storage reader skips them)",
                         outcome="eval-bag: exit 1, one error line '2 of 45 messages could not be read' with the "
                                 "topics; metrics.json partial with unread_messages")
def test_eval_bag_reports_messages_the_storage_skipped(drive_bag: Path, models: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    legacy = _copy(drive_bag, tmp_path / "legacy")
    bag_faults.clear_chunk_crcs(legacy)
    bag_faults.zero_record_opcodes(legacy, "/camera/image_raw", 2)
    bag_faults.zero_record_opcodes(legacy, "/ground_truth/depth", 6)
    with Reader(legacy) as reader:  # the fault: rosbags alone loses them without an error
        assert sum(1 for _ in reader.messages()) == reader.message_count - 2
    with pytest.raises(BagError, match=rf"2 of {PER_FRAME * FRAMES + 1} messages could not be read \(/camera/image_raw 1 of 9, "
                                       r"/ground_truth/depth 1 of 9\)"):
        list(bagio.iter_raw(legacy))
    line = one_line_error(_eval_bag(legacy, models, tmp_path / "eval"), legacy)
    assert "2 of 45 messages could not be read" in line  # eval-bag reads the camera and GT topics, not /tf, /tf_static
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["partial"] is True
    assert metrics["unread_messages"] == {"/camera/image_raw": 1, "/ground_truth/depth": 1}
    assert metrics["frames_evaluated"] == FRAMES - 1  # the frame without its image is not evaluated


def test_iter_raw_counts_every_message_of_a_whole_bag(drive_bag: Path) -> None:
    tally = bagio.ReadTally()
    assert len(list(bagio.iter_raw(drive_bag, tally=tally))) == PER_FRAME * FRAMES + 1
    assert tally.unread() == {} and tally.read == tally.expected
    assert tally.expected["/camera/image_raw"] == FRAMES
