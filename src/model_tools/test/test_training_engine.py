"""The shared engine on a tiny in-test depth data set: exact resume, logs, checkpoints, errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from model_tools.tasks.depth import DepthTask
from model_tools.training.checkpoint import load_safe
from model_tools.training.config import load_config
from model_tools.training.engine import DistInfo, ModelEma, ResumableSampler, Trainer
from perception_core.errors import ConfigError, ModelFileError


class TinyDepthSet(Dataset):
    """Deterministic scenes: depth is a ramp whose slope the image colour encodes; some pixels invalid.

    Each item draws a random flip from torch's RNG, so the test also checks
    that augmentation randomness is reproduced on resume.
    """

    def __init__(self, n: int, seed: int, hw: tuple[int, int] = (32, 32)) -> None:
        g = torch.Generator().manual_seed(seed)
        self.scales = torch.rand(n, generator=g) * 0.8 + 0.2
        self.hw = hw

    def __len__(self) -> int:
        return len(self.scales)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        h, w = self.hw
        ramp = torch.linspace(1.0, 0.2, h).view(1, h, 1).expand(1, h, w)
        depth = (ramp * 14.0 * self.scales[i]).clone()
        depth[:, :2] = 0.0  # invalid rows ("sky")
        image = torch.stack([ramp[0] * self.scales[i], ramp[0], 1 - ramp[0]]).clone()
        if torch.rand(()) < 0.5:
            image, depth = image.flip(-1), depth.flip(-1)
        return {"image": image, "depth": depth, "label": torch.full((h, w), 255, dtype=torch.long)}


def tiny_config(tmp_path: Path, **overrides: object) -> object:
    sets = {
        "epochs": 2, "batch_size": 2, "num_workers": 0, "lr": 1e-3, "warmup_steps": 2, "ema": True,
        "ema_decay": 0.9, "log_every_steps": 1, "progress_bar": False, "seed": 3,
        "model.width": 8, "model.decoder_channels": [4, 8, 8, 16, 16], "model.kind": "levels",
        "model.levels": 32, "model.max_depth": 15.0, "model.input_height": 32, "model.input_width": 32,
    }
    sets.update(overrides)  # type: ignore[arg-type]
    import yaml

    return load_config(None, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in sets.items()])


def make_task(config: object) -> DepthTask:
    return DepthTask(config, dataset_factory=lambda split, train: TinyDepthSet(8 if train else 4, 1 if train else 2))  # type: ignore[arg-type]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_safe(run_dir / "checkpoints" / "last.pt")
    return {"model": ckpt["model"], "ema": ckpt["ema"]["module"]}


def test_resume_continues_a_killed_run_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(tmp_path)
    straight = tmp_path / "straight"
    summary = Trainer(make_task(config), config, straight).fit()
    assert summary["steps"] == 8 and summary["stop_reason"] == "done"

    split = tmp_path / "split"
    stopped = Trainer(make_task(config), config, split).fit(stop_after_steps=3)  # mid-epoch 0 (4 steps/epoch)
    assert stopped["stop_reason"] == "stopped" and stopped["steps"] == 3
    ckpt = load_safe(split / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"], ckpt["index_in_epoch"]) == (0, 3, 3)
    resumed = Trainer(make_task(config), config, split, resume=True).fit()
    assert resumed["steps"] == 8

    a, b = final_weights(straight), final_weights(split)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part} {key} differs after resume"
    # The weights did train: they differ from a fresh model's.
    fresh = make_task(config).build_model().state_dict()
    assert any(not torch.equal(fresh[k], a["model"][k]) for k in fresh if fresh[k].is_floating_point())


def test_run_folder_holds_config_log_curves_and_fp16_export(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, epochs=1, warmup_steps=4)
    run = tmp_path / "run"
    summary = Trainer(make_task(config), config, run).fit()
    assert load_config(run / "config.yaml").to_dict() == config.to_dict()  # type: ignore[attr-defined]
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"phase", "step", "lr", "loss", "loss_integer", "loss_fractional", "loss_depth", "abs_rel"} <= set(header)
    assert len([r for r in rows if r.startswith("train")]) == 4 and len([r for r in rows if r.startswith("val")]) == 1
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(run / "model_fp16.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for k, v in state.items() if v.is_floating_point())
    assert summary["best"]["metric"] == "abs_rel" and summary["last_validation"]["abs_rel"] > 0
    # The warmup ramps the LR: first logged LR is below the base LR.
    first_lr = float(rows[1].split(",")[header.index("lr")])
    assert first_lr < 1e-3


def test_refuses_to_overwrite_a_run_and_resume_without_checkpoint(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, epochs=1)
    with pytest.raises(ModelFileError, match=r"no checkpoint .*last\.pt"):
        Trainer(make_task(config), config, tmp_path / "none", resume=True).fit()
    Trainer(make_task(config), config, tmp_path / "run").fit(stop_after_steps=1)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(make_task(config), config, tmp_path / "run").fit()


def test_resume_with_a_different_head_names_the_field(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, epochs=1)
    Trainer(make_task(config), config, tmp_path / "run").fit(stop_after_steps=1)
    other = tiny_config(tmp_path, epochs=1, **{"model.levels": 64})
    with pytest.raises(ConfigError, match=r"model\.levels is 32 in the checkpoint but 64 now"):
        Trainer(make_task(other), other, tmp_path / "run", resume=True).fit()


def test_distillation_from_a_teacher_checkpoint_with_fake_quant(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    teacher_cfg = tiny_config(tmp_path, epochs=1)
    Trainer(make_task(teacher_cfg), teacher_cfg, tmp_path / "teacher").fit()
    student_cfg = tiny_config(tmp_path, epochs=1, **{"distill.teacher": str(tmp_path / "teacher" / "checkpoints" / "last.pt"),
                                                      "distill.w_feature": 0.1, "distill.fake_quant_bits": 8})
    summary = Trainer(make_task(student_cfg), student_cfg, tmp_path / "student").fit()
    header = (tmp_path / "student" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_distill_output", "loss_distill_feature"} <= set(header)
    assert summary["steps"] == 4
    bad = tiny_config(tmp_path, epochs=1, **{"distill.teacher": str(tmp_path / "teacher" / "checkpoints" / "last.pt"),
                                             "model.levels": 64})
    with pytest.raises(ConfigError, match=r"model\.levels is 32 but the student's is 64"):
        Trainer(make_task(bad), bad, tmp_path / "bad").fit()


def test_endless_sampler_runs_whole_batches_epoch_after_epoch_per_rank() -> None:
    data = TinyDepthSet(11, 0)
    # 11 samples over 2 ranks: 5 each, cut to whole batches of 4 per epoch.
    ranks = [ResumableSampler(data, DistInfo(rank=r, world_size=2), shuffle=True, seed=4, drop_last=True, endless_batch_size=4)
             for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    streams = [list(itertools.islice(iter(s), 12)) for s in ranks]
    for sampler, stream in zip(ranks, streams, strict=True):
        assert [e for _, _, e in stream] == [2] * 4 + [3] * 4 + [4] * 4  # cut to whole batches, never straddling
        for epoch in (2, 3, 4):
            assert [i for i, _, e in stream if e == epoch] == sampler.epoch_indices(epoch)[:4]
        seeds = {(i, e): seed for i, seed, e in stream}
        assert len(set(seeds.values())) == len(seeds)  # each (index, epoch) gets its own augmentation seed
    for epoch in (2, 3, 4):  # the two ranks read disjoint shards
        assert not {i for i, _, e in streams[0] if e == epoch} & {i for i, _, e in streams[1] if e == epoch}
    ranks[0].start_index = 3  # resuming after 3 samples of epoch 2
    assert list(itertools.islice(iter(ranks[0]), 5)) == streams[0][3:8]
    with pytest.raises(TypeError, match="no length"):
        len(ranks[0])
    with pytest.raises(ConfigError, match="would hang"):
        ResumableSampler(data, DistInfo(), shuffle=True, seed=4, drop_last=True, endless_batch_size=12)
    finite = ResumableSampler(data, DistInfo(), shuffle=False, seed=4, drop_last=False)
    assert [i for i, _, _ in finite] == list(range(11)) and len(finite) == 11


def test_ema_update_lerps_floats_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.75, warmup=False)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.rand(2, 3, 8, 8))  # moves BN running stats and num_batches_tracked
    for _ in range(2):  # the second update reuses the cached pairing and must see the model's new values
        now = {k: v.clone() for k, v in model.state_dict().items()}
        ema.update(model)
        for key, value in ema.module.state_dict().items():
            if value.is_floating_point():
                torch.testing.assert_close(value, before[key] + 0.25 * (now[key] - before[key]))
            else:
                assert torch.equal(value, now[key])
        before = {k: v.clone() for k, v in ema.module.state_dict().items()}
        with torch.no_grad():
            model[0].weight.mul_(2.0)
    assert ema.updates == 2


class PoisonedDepthSet(TinyDepthSet):
    """TinyDepthSet whose item ``bad`` has a NaN image, so the loss of the step that reads it is NaN."""

    def __init__(self, n: int, seed: int, bad: int) -> None:
        super().__init__(n, seed)
        self.bad = bad

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        if i == self.bad:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_non_finite_loss_stops_the_run_before_a_checkpoint_holds_it(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, log_every_steps=2, checkpoint_every_steps=1, epochs=1)
    # Poison the 5th sample of epoch 0, i.e. step 3's batch (batch 2); checks run at every checkpoint.
    bad = ResumableSampler(TinyDepthSet(8, 1), DistInfo(), shuffle=True, seed=3, drop_last=True).epoch_indices(0)[4]
    task = DepthTask(config, dataset_factory=lambda split, train: PoisonedDepthSet(8 if train else 4, 1, bad if train else -1))
    with pytest.raises(FloatingPointError, match="between step 2 and step 3"):
        Trainer(task, config, tmp_path / "run").fit()
    assert load_safe(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2  # the last finite state
