"""The registry and the flags `model-tools depth` and `model-tools seg` share."""

from __future__ import annotations

import argparse

import pytest

from model_tools import depth_cli, seg_cli
from model_tools.registry import DEPTH, SEGMENTATION, get_task, task_names
from model_tools.task_cli import config_overrides
from perception_core.errors import ConfigError


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


COMMON = {
    "train": ["--config", "c.yaml", "--set", "lr=0.1", "--data", "d", "--source", "kitti=k,raw_root=r",
              "--run-dir", "r", "--resume", "--time-budget-min", "2", "--max-steps", "5", "--stop-after-steps", "3"],
    "eval": ["--checkpoint", "m.pt", "--config", "c.yaml", "--set", "lr=0.1", "--data", "d", "--split", "test",
             "--out", "o", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--max-images", "3", "--overwrite"],
    "export": ["--checkpoint", "m.pt", "--out", "m.onnx", "--opset", "11", "--height", "64", "--width", "96",
               "--overwrite", "--no-validate", "--validate-inputs", "2"],
    "validate": ["--onnx", "m.onnx", "--checkpoint", "m.pt", "--inputs", "2", "--seed", "1", "--report", "r.json"],
}


@pytest.mark.parametrize("action", sorted(COMMON))
def test_both_tasks_take_the_same_flags_for_the_same_thing(action: str) -> None:
    depth = vars(parse(depth_cli, [action, *COMMON[action]]))
    seg = vars(parse(seg_cli, [action, *COMMON[action]]))
    own = {"teacher", "htp", "variant"}  # depth train --teacher, seg validate --htp; --variant's values are the task's
    assert {k: v for k, v in depth.items() if k not in own} == {k: v for k, v in seg.items() if k not in own}


def test_export_variants_come_from_the_registry() -> None:
    for module, entry in ((depth_cli, DEPTH), (seg_cli, SEGMENTATION)):
        assert parse(module, ["export", "--checkpoint", "m", "--out", "o"]).variant == entry.variants[0]
        for variant in entry.variants:
            assert parse(module, ["export", "--checkpoint", "m", "--out", "o", "--variant", variant]).variant == variant
        other = next(v for e in (DEPTH, SEGMENTATION) for v in e.variants if v not in entry.variants)
        with pytest.raises(SystemExit):
            parse(module, ["export", "--checkpoint", "m", "--out", "o", "--variant", other])


def test_data_and_source_flags_become_the_config_sources() -> None:
    args = parse(depth_cli, ["train", "--config", "c", "--data", "/s", "--source", "kitti=/k,raw_root=/r",
                             "--set", "lr=0.5", "--max-steps", "7"])
    tree = config_overrides(args)
    assert tree == {"lr": 0.5, "max_steps": 7, "data": {"sources": [
        {"format": "synthetic", "root": "/s"}, {"format": "kitti", "root": "/k", "raw_root": "/r"}]}}
    with pytest.raises(ConfigError, match=r"--source 'kitti' is not FORMAT=ROOT"):
        config_overrides(parse(seg_cli, ["eval", "--checkpoint", "m", "--source", "kitti"]))


def test_registry_lookup_by_name_or_command() -> None:
    assert task_names() == ["depth", "segmentation"]
    assert get_task("seg") is get_task("segmentation") is SEGMENTATION and get_task("depth") is DEPTH
    with pytest.raises(ConfigError, match=r"run.yaml: field task: 'detection' is not a registered task; known: "
                                          r"depth, segmentation"):
        get_task("detection", "run.yaml: field task")
    with pytest.raises(ConfigError, match=r"model.arch 'unet' is not a registered segmentation model; known: "
                                          r"ddrnet23_slim"):
        SEGMENTATION.model_factory("unet")


def test_preprocessing_facts_are_the_ones_the_models_and_metadata_use() -> None:
    from model_tools.models.depth_net import NORM_MEAN, NORM_STD
    from model_tools.tasks.segmentation import IMAGENET_MEAN, IMAGENET_STD

    assert (NORM_MEAN, NORM_STD) == (DEPTH.preprocessing.mean[0], DEPTH.preprocessing.std[0]) == (0.45, 0.225)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    DEPTH.preprocessing.check_size(384, 640, "x")
    with pytest.raises(ConfigError, match=r"export: input width = 100 must be a positive multiple of 32"):
        DEPTH.preprocessing.check_size(64, 100, "export")
    SEGMENTATION.preprocessing.check_size(544, 640, "x")


def test_the_cli_imports_no_torch() -> None:
    """`model-tools --help` and the registry stay light: torch is imported by the actions only."""
    import subprocess
    import sys

    code = ("import sys, model_tools.cli, model_tools.depth_cli, model_tools.seg_cli, model_tools.registry; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_convert_exports_each_task_in_its_registered_deployment_form(tmp_path) -> None:
    """`convert --run` finds the task in the run's config.yaml and exports what the NPU runs (registry facts)."""
    import torch

    from model_tools.models.ddrnet import ddrnet23_slim
    from model_tools.models.depth_net import build_depth_net
    from model_tools.quant.convert import export_fp32, run_task
    from model_tools.training.checkpoint import fp16_state_dict, save_atomic
    from model_tools.training.config import load_config, save_config
    from perception_core.model_metadata import read_metadata
    from perception_core.ontology import load_ontology

    torch.manual_seed(0)
    depth_run, seg_run = tmp_path / "depth_run", tmp_path / "seg_run"
    depth_model = {"width": 8, "decoder_channels": [4, 8, 8, 16, 16], "kind": "levels", "levels": 32,
                   "input_height": 64, "input_width": 96}
    depth_run.mkdir()
    save_config(load_config(None, [f"model.{k}={v}" for k, v in depth_model.items()]), depth_run / "config.yaml")
    save_atomic(fp16_state_dict(build_depth_net(depth_model)), depth_run / "model_fp16.pt")
    seg_run.mkdir()
    save_config(load_config(None, ["task=segmentation", "data.val_hw=[64,64]"]), seg_run / "config.yaml")
    save_atomic(fp16_state_dict(ddrnet23_slim(num_classes=load_ontology().num_classes)), seg_run / "model_fp16.pt")
    for run, entry in ((depth_run, DEPTH), (seg_run, SEGMENTATION)):
        assert run_task(run) == entry.name
        out = tmp_path / f"{entry.name}.onnx"
        done = export_fp32(run / "model_fp16.pt", run_task(run), out)
        meta = read_metadata(out)
        assert done["variant"] == entry.deploy_variant == getattr(meta, entry.variant_field)
        assert meta.input_shape == [1, 3, *done["input_hw"]] and done["validation"]["verdict"] in ("excellent", "good")
    assert done["input_hw"] == [64, 64]  # the segmentation config's val_hw
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("task: detection\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: field task: 'detection' is not a registered task"):
        run_task(tmp_path / "other")
