"""Loaders on tiny fixtures written in each data set's native layout and encoding."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_tools.data.datasets import (
    GooseDataset,
    KittiDepthDataset,
    MultiSourceDataset,
    RellisDataset,
    RugdDataset,
    SyntheticFolderDataset,
    to_model_batch,
    to_model_image,
)
from model_tools.data.synth import CameraRig, write_synthetic_folder
from model_tools.data.transforms import Compose, RandomCrop, Resize
from perception_core.errors import DataError
from perception_core.ontology import load_ontology

ONTO = load_ontology()
H, W = 12, 16


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _write_rgb(path: Path, rgb: np.ndarray, ext: str = ".png") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path.with_suffix(ext)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _check_item(item: dict, h: int = H, w: int = W) -> None:
    """The compact item the workers ship, and the model batch to_model_batch makes of it."""
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, h, w)
    assert item["depth"].dtype == torch.float32 and item["depth"].shape == (1, h, w)
    assert item["label"].dtype == torch.uint8 and item["label"].shape == (h, w)
    assert isinstance(item["source"], str) and Path(item["path"]).is_file()
    model_batch = to_model_batch(torch.utils.data.default_collate([item]), "cpu")
    assert model_batch["image"].dtype == torch.float32 and model_batch["label"].dtype == torch.int64
    torch.testing.assert_close(model_batch["image"][0] * 255.0, item["image"].float())
    assert torch.equal(model_batch["label"][0], item["label"].long()) and model_batch["source"] == [item["source"]]
    assert to_model_batch(model_batch, "cpu")["image"] is model_batch["image"]  # idempotent
    torch.testing.assert_close(to_model_image(item["image"][None], "cpu"), model_batch["image"])


# --------------------------------------------------------------------------- RELLIS-3D


def _rellis(root: Path, ids: np.ndarray) -> Path:
    seq = root / "00000"
    name = "frame000000-1581624652_749"
    rgb = _rgb(1)
    _write_rgb(seq / "pylon_camera_node" / name, rgb, ".jpg")
    _write_gray(seq / "pylon_camera_node_label_id" / f"{name}.png", ids.astype(np.uint8))
    return seq / "pylon_camera_node_label_id" / f"{name}.png"


def test_rellis_ids_map_to_the_ontology(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[:3] = 7  # sky
    ids[3:6] = 31  # puddle -> water
    ids[6:9] = 17  # person -> dynamic
    ids[9:, :8] = 10  # asphalt -> smooth_ground
    ids[9:, 8:] = 0  # void -> ignore
    _rellis(tmp_path, ids)
    ds = RellisDataset(tmp_path)
    item = ds[0]
    _check_item(item)
    label = item["label"].numpy()
    assert (label[:3] == ONTO.id_of("sky")).all() and (label[3:6] == ONTO.id_of("water")).all()
    assert (label[6:9] == ONTO.id_of("dynamic")).all() and (label[9:, :8] == 0).all() and (label[9:, 8:] == 255).all()
    assert (item["depth"] == 0).all() and item["source"] == "rellis"


def test_rellis_split_list_and_unmapped_id(tmp_path):
    ids = np.full((H, W), 3, np.uint8)
    ids[0, 0] = 2  # RELLIS does not define id 2
    label_path = _rellis(tmp_path, ids)
    image_rel = next(tmp_path.glob("*/pylon_camera_node/*.jpg")).relative_to(tmp_path)
    (tmp_path / "train.lst").write_text(f"{image_rel} {label_path.relative_to(tmp_path)}\n")
    ds = RellisDataset(tmp_path, split="train")
    with pytest.raises(DataError, match=rf"{label_path.name} holds ids \[2\] that the ontology does not map"):
        ds[0]


# --------------------------------------------------------------------------- RUGD


RUGD_COLORMAP = """0 void 0 0 0
1 dirt 108 64 20
3 grass 0 102 0
6 water 0 0 255
7 sky 0 153 153
17 person 255 0 0
22 bridge 255 128 0
"""


def _rugd(root: Path, colours: np.ndarray, scene: str = "creek") -> Path:
    (root / "RUGD_annotation-colormap.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "RUGD_annotation-colormap.txt").write_text(RUGD_COLORMAP)
    _write_rgb(root / "RUGD_frames-with-annotations" / scene / f"{scene}_00001", _rgb(2))
    label = root / "RUGD_annotations" / scene / f"{scene}_00001.png"
    _write_rgb(label.with_suffix(""), colours)
    return label


def test_rugd_colours_decode_through_the_colormap_file(tmp_path):
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:4] = (0, 153, 153)  # sky
    colours[4:8] = (0, 0, 255)  # water
    colours[8:, :8] = (255, 128, 0)  # bridge -> static_obstacle
    colours[8:, 8:] = (108, 64, 20)  # dirt -> rough_ground
    _rugd(tmp_path, colours)
    item = RugdDataset(tmp_path)[0]
    _check_item(item)
    label = item["label"].numpy()
    assert (label[:4] == ONTO.id_of("sky")).all() and (label[4:8] == ONTO.id_of("water")).all()
    assert (label[8:, :8] == ONTO.id_of("static_obstacle")).all() and (label[8:, 8:] == ONTO.id_of("rough_ground")).all()


def test_rugd_unknown_colour_is_named(tmp_path):
    colours = np.zeros((H, W, 3), np.uint8)
    colours[0, 0] = (1, 2, 3)
    label = _rugd(tmp_path, colours)
    with pytest.raises(DataError, match=rf"{label.name} holds colours \[\(1, 2, 3\)\]"):
        RugdDataset(tmp_path)[0]


# --------------------------------------------------------------------------- GOOSE


def _goose(root: Path, ids: np.ndarray, split: str = "train") -> None:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "goose_label_mapping.csv").write_text(
        "label_key,class_name,has_instance,hex\n0,undefined,0,#000000\n12,asphalt,0,#aaaaaa\n"
        "23,low_grass,0,#00ff00\n31,water,0,#0000ff\n45,car,1,#ff0000\n50,sky,0,#88ccff\n"
    )
    prefix = "2022-07-22_flight__0071_1658494234334310308"
    _write_rgb(root / "images" / split / "scenario_a" / f"{prefix}_windshield_vis", _rgb(3))
    _write_gray(root / "labels" / split / "scenario_a" / f"{prefix}_labelids.png", ids.astype(np.uint8))


def test_goose_ids_map_by_class_name(tmp_path):
    ids = np.full((H, W), 23, np.uint8)
    ids[:3] = 50
    ids[3:5] = 45
    ids[5:7] = 31
    ids[7:9] = 12
    ids[9:] = 0
    _goose(tmp_path, ids)
    item = GooseDataset(tmp_path, "train")[0]
    _check_item(item)
    label = item["label"].numpy()
    assert (label[:3] == 6).all() and (label[3:5] == 5).all() and (label[5:7] == 3).all()
    assert (label[7:9] == 0).all() and (label[9:] == 255).all()


def test_goose_label_id_missing_from_csv_is_an_error(tmp_path):
    ids = np.full((H, W), 23, np.uint8)
    ids[2, 2] = 60  # not in the mapping file
    _goose(tmp_path, ids)
    with pytest.raises(DataError, match=r"_labelids.png holds ids \[60\]"):
        GooseDataset(tmp_path, "train")[0]


def test_goose_mapping_with_an_unmapped_class_name(tmp_path):
    _goose(tmp_path, np.zeros((H, W), np.uint8))
    path = tmp_path / "goose_label_mapping.csv"
    path.write_text(path.read_text() + "63,hovercraft,0,#123456\n")
    with pytest.raises(DataError, match=r"goose_label_mapping.csv: goose classes \['hovercraft'\]"):
        GooseDataset(tmp_path, "train")


# --------------------------------------------------------------------------- KITTI depth


def test_kitti_png16_depth(tmp_path):
    drive = "2011_09_26_drive_0001_sync"
    raw_depth = np.zeros((H, W), np.uint16)
    raw_depth[6:, :] = 2560  # 10 m
    raw_depth[11, 15] = 65535
    _write_gray(tmp_path / "depth" / "train" / drive / "proj_depth" / "groundtruth" / "image_02" / "0000000005.png", raw_depth)
    _write_rgb(tmp_path / "raw" / "2011_09_26" / drive / "image_02" / "data" / "0000000005", _rgb(4))
    ds = KittiDepthDataset(tmp_path / "depth", tmp_path / "raw", "train", cameras=("image_02",))
    item = ds[0]
    _check_item(item)
    depth = item["depth"][0].numpy()
    assert (depth[:6] == 0).all() and np.allclose(depth[6:11], 10.0) and np.isclose(depth[11, 15], 65535 / 256)
    assert (item["label"] == 255).all() and item["source"] == "kitti"


# --------------------------------------------------------------------------- synthetic + policies


def test_synthetic_folder_round_trip_and_multi_source(tmp_path):
    root = tmp_path / "synth"
    write_synthetic_folder(root, CameraRig.default(W, H), 3, seed=0, split="train", progress=False)
    synth = SyntheticFolderDataset(root, "train")
    assert len(synth) == 3 and synth.camera["width"] == W
    item = synth[1]
    _check_item(item)
    sky = item["label"] == ONTO.id_of("sky")
    assert sky.any() and (item["depth"][0][sky] == 0).all() and (item["depth"][0][~sky] > 0).float().mean() > 0.9

    ids = np.full((H, W), 3, np.uint8)
    _rellis(tmp_path / "rellis", ids)
    mixed = MultiSourceDataset([synth, RellisDataset(tmp_path / "rellis")])
    assert len(mixed) == 4 and mixed[3]["source"] == "rellis" and mixed[0]["source"] == "synthetic"
    weights = mixed.sample_weights()
    assert torch.isclose(weights[:3].sum(), weights[3:].sum())
    batch = torch.utils.data.default_collate([mixed[0], mixed[3]])
    assert batch["image"].shape == (2, 3, H, W) and to_model_batch(batch, "cpu")["label"].dtype == torch.int64
    # Segmentation training leaves depth out: not read, not in the item.
    for dataset in mixed.datasets:
        dataset.with_depth = False
    no_depth = mixed[0]
    assert "depth" not in no_depth and torch.equal(no_depth["label"], batch["label"][0])


def test_size_mismatch_strict_and_skip(tmp_path):
    _rellis(tmp_path, np.full((H, W), 3, np.uint8))
    seq = tmp_path / "00001"
    _write_rgb(seq / "pylon_camera_node" / "frame000001-1", _rgb(5), ".jpg")
    _write_gray(seq / "pylon_camera_node_label_id" / "frame000001-1.png", np.full((H, W + 2), 3, np.uint8))
    with pytest.raises(DataError, match=r"label file .*frame000001-1.png is 18x12 but image .*frame000001-1.jpg is 16x12"):
        RellisDataset(tmp_path)[1]
    ds = RellisDataset(tmp_path, policy="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = ds[1]
    assert item["path"].endswith("frame000000-1581624652_749.jpg")  # the next good sample instead
    assert len(ds.skipped) == 1 and "18x12" in ds.skipped[0][1] and caught


def test_missing_and_unreadable_files(tmp_path):
    _rellis(tmp_path, np.full((H, W), 3, np.uint8))
    seq = tmp_path / "00002" / "pylon_camera_node"
    seq.mkdir(parents=True)
    (seq / "frame000009-9.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"frame000009-9.png is missing"):
        RellisDataset(tmp_path)
    ds = RellisDataset(tmp_path, policy="skip")
    assert len(ds) == 1 and ds.skipped[0][1] == "missing file"
    _write_gray(tmp_path / "00002" / "pylon_camera_node_label_id" / "frame000009-9.png", np.full((H, W), 3, np.uint8))
    with pytest.raises(DataError, match=r"image file .*frame000009-9.jpg is not a readable image"):
        RellisDataset(tmp_path)[1]
    with pytest.raises(DataError, match="no samples found"):
        RellisDataset(tmp_path / "00002" / "pylon_camera_node")


def test_seeded_transform_is_reproducible(tmp_path):
    root = tmp_path / "synth"
    write_synthetic_folder(root, CameraRig.default(32, 24), 2, seed=1, progress=False)
    crop = Compose([RandomCrop(16, 16)])
    a = SyntheticFolderDataset(root, transform=crop, seed=7)[0]
    b = SyntheticFolderDataset(root, transform=crop, seed=7)[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"]) and a["image"].shape == (3, 16, 16)
    val = SyntheticFolderDataset(root, transform=Compose([Resize(12, 20)]))[1]
    assert val["image"].shape == (3, 12, 20) and val["label"].shape == (12, 20)


def test_loader_workers_start_after_the_parent_used_opencv_threads() -> None:
    """A forked worker's cv2.setNumThreads(1) once waited forever for the parent's pool threads; now it returns."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numpy as np, cv2, torch
        from torch.utils.data import DataLoader
        from model_tools.data.datasets import loader_worker_init
        image = np.random.default_rng(0).integers(0, 255, (544, 640, 3), dtype=np.uint8)
        for _ in range(5):  # a threaded cv2 call in the parent starts OpenCV's pthreads pool
            cv2.warpAffine(image, np.array([[0.7, 0, 3], [0, 0.7, 2]]), (640, 544))
        class Frames(torch.utils.data.Dataset):
            def __len__(self): return 4
            def __getitem__(self, i): return int(cv2.resize(image, (64, 54)).sum())
        loader = DataLoader(Frames(), batch_size=2, num_workers=2, worker_init_fn=loader_worker_init)
        print(sum(int(b.sum()) for b in loader) == 4 * int(cv2.resize(image, (64, 54)).sum()))
        print(cv2.getNumThreads() > 1 or cv2.getNumberOfCPUs() == 1)  # the parent's pool is back
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
