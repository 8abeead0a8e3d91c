"""The one training engine shared by the depth and segmentation tasks.

``Trainer(task, config, run_dir).fit()`` runs the loop: AdamW with a
warmup + cosine schedule, autocast (bf16 on CUDA), gradient clipping, an
optional EMA of the weights (used for validation and exports), channels_last
on CUDA, a tqdm bar, a CSV metrics log with PNG curves, validation every N
epochs, and atomic checkpoints holding everything needed to continue a killed
run exactly (``resume=True``): model, optimizer, schedule, scaler, EMA, epoch,
step, position inside the epoch and RNG states.

Exact resume works because data order and augmentation randomness are pure
functions of (seed, epoch, sample index): the sampler is a seeded
DistributedSampler that can start mid-epoch, and each sample is loaded under
RNGs seeded from its own (seed, epoch, index), whichever worker loads it.

DDP is picked up from the environment ``torchrun`` sets (RANK, WORLD_SIZE,
LOCAL_RANK): the model is wrapped in DistributedDataParallel, each rank reads
its shard, validation metrics are averaged over ranks, and only rank 0 writes
logs, plots and checkpoints.
"""

from __future__ import annotations

import copy
import csv
import gc
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from model_tools.data.batch_augment import UnsupportedAugmentationError
from model_tools.data.datasets import loader_worker_init, to_model_batch
from model_tools.data.frame_cache import CachedBatches, FrameCache, fits_on_device, plan_cache
from model_tools.training.checkpoint import (
    CHECKPOINT_FORMAT,
    fp16_state_dict,
    load_safe,
    rng_state,
    save_atomic,
    set_rng_state,
)
from model_tools.training.config import TrainConfig, save_config
from model_tools.training.step import (
    StepParts,
    build_train_step,
    current_lr,
    load_optimizer_state,
    make_optimizer,
    optimizer_state_for_checkpoint,
    set_lr,
)
from model_tools.training.task import TrainingTask
from perception_core.errors import ConfigError, ModelFileError

# Config sections that define the model: resuming with different values is an error.
_ARCH_SECTIONS = ("task", "model")
# What the trainer writes into the run folder (besides checkpoints/last.pt), each atomically.
_RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "model_fp16.pt", "last_fp16.pt", "summary.json")


# ---- distributed -------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Rank info from torchrun's environment variables (single process when absent)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def resolve_device(name: str, dist: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config field 'device' = {name!r} but CUDA is not available")
        if dist.enabled or name == "cuda":
            return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
    return torch.device(name)


# ---- data order --------------------------------------------------------------------------------


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded by seed + epoch) that can start mid-epoch and run on through epochs.

    Yields ``(index, sample_seed, epoch)`` so that :class:`SeededSamples` can
    make each sample's augmentation depend only on (seed, epoch, index).

    With ``endless_batch_size`` set it is endless: epoch after epoch, each
    cut to whole batches of that size so no batch straddles two epochs.
    The engine's one training iterator then never restarts, so the workers
    keep prefetching across epoch ends instead of draining and refilling
    (measured on 1140 frames at batch 16: the first logging window of every
    epoch ran at a quarter of the steady rate).
    """

    def __init__(self, dataset: Dataset, dist: DistInfo, *, shuffle: bool, seed: int, drop_last: bool,
                 endless_batch_size: int | None = None) -> None:
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.per_epoch: int | None = None  # samples per epoch when endless
        if endless_batch_size is not None:
            if not 0 < endless_batch_size <= self.num_samples:
                raise ConfigError(f"batch size {endless_batch_size} must be in 1..{self.num_samples} (samples per process); "
                                  "an endless sampler with nothing to yield would hang the loader")
            self.per_epoch = self.num_samples // endless_batch_size * endless_batch_size
        self.start_index = 0

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch`` (DistributedSampler's order for that epoch)."""
        current = self.epoch
        self.epoch = epoch
        try:
            return list(super().__iter__())
        finally:
            self.epoch = current

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        epoch, start = self.epoch, self.start_index
        while True:
            indices = self.epoch_indices(epoch)
            for index in indices[start:self.per_epoch]:
                yield index, (self.seed * 1_000_003 + epoch * 7_919 + index) % (2**31 - 1), epoch
            if self.per_epoch is None:
                return
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        if self.per_epoch is not None:
            raise TypeError("an endless ResumableSampler (endless_batch_size set) has no length")
        return self.num_samples - self.start_index


class SeededSamples(Dataset):
    """Loads sample ``index`` with python/numpy/torch RNGs seeded for it, restoring them after.

    Datasets with their own seeded augmentation stream (``set_epoch``, as in
    ``model_tools.data``) get the epoch from the sampler here, inside the
    worker, so it holds with persistent workers too.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        index, seed, epoch = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def make_loader(dataset: Dataset, cfg: TrainConfig, dist: DistInfo, on_cuda: bool, *, train: bool,
                sampler: ResumableSampler | None = None) -> DataLoader:
    """The worker loader: endless for training (one iterator for the whole run), one pass per call for validation."""
    if sampler is None:
        sampler = ResumableSampler(dataset, dist, shuffle=train, seed=cfg.seed, drop_last=train,
                                   endless_batch_size=cfg.batch_size if train else None)
    workers = cfg.num_workers
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"persistent_workers": cfg.persistent_workers, "prefetch_factor": cfg.prefetch_factor}
    return DataLoader(
        SeededSamples(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(cfg.pin_memory and on_cuda),
        drop_last=train,
        worker_init_fn=loader_worker_init if workers > 0 else None,
        **kwargs,
    )


def train_batches(train_set: Dataset, cfg: TrainConfig, dist: DistInfo, device: torch.device, *, channels_last: bool,
                  run_dir: Path, epoch: int = 0, index_in_epoch: int = 0,
                  log: Callable[[str], None] = print) -> Iterator[dict[str, Any]]:
    """The endless training batches from (epoch, index_in_epoch) on, as ``cfg.data_pipeline`` makes them.

    ``cached``: the frame cache (built by rank 0 into ``cfg.cache_dir`` or
    ``<run_dir>/frame_cache``) and batched augmentation on ``device``; the
    worker loader, with one line saying why, when the data set or its
    transform has no cached form. ``workers``: the worker loader.
    """
    sampler = ResumableSampler(train_set, dist, shuffle=True, seed=cfg.seed, drop_last=True,
                               endless_batch_size=cfg.batch_size)
    sampler.set_epoch(epoch)
    sampler.start_index = index_in_epoch * cfg.batch_size
    if cfg.data_pipeline == "cached":
        try:
            plan = plan_cache(train_set)
        except UnsupportedAugmentationError as err:
            log(f"train: data_pipeline=cached is not possible here ({err}); decoding and augmenting in loader workers")
        else:
            folder = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "frame_cache"
            max_hw = (cfg.cache_max_hw[0], cfg.cache_max_hw[1])
            if dist.is_main:
                FrameCache.build_or_open(plan, folder, max_hw, cfg.num_workers, log=log, progress=cfg.progress_bar)
            if dist.enabled:
                torch.distributed.barrier()
            cache = FrameCache.open_matching(plan, folder, max_hw)
            on_device = cfg.cache_on_device and fits_on_device(cache.nbytes, device)
            if cfg.cache_on_device and device.type == "cuda" and not on_device:
                log(f"train: the frame cache ({cache.nbytes / 2**30:.1f} GiB) takes more than half the free device "
                    "memory; gathering batches from host memory instead")
            return CachedBatches(cache, plan.augment, sampler, cfg.batch_size, cfg.seed, device, on_device=on_device,
                                 channels_last=channels_last, extras=plan.extras)
    return iter(make_loader(train_set, cfg, dist, device.type == "cuda", train=True, sampler=sampler))


# ---- EMA and schedule --------------------------------------------------------------------------


class ModelEma:
    """Exponential moving average of a model's weights (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self._pairs_of: nn.Module | None = None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = lerp(ema, model, 1 - decay) for float tensors; integer buffers copied.

        One fused ``_foreach_lerp_`` over all float tensors instead of a
        Python loop of ~350 small kernels, because the step of a small net at
        small batch is bound by host time (DDRNet23-Slim on CPU: 8.0 -> 3.5 ms
        per update).
        """
        decay = self.current_decay()
        self.updates += 1
        if self._pairs_of is not model:
            self._pair_with(model)
        if self._float_pairs[0]:
            torch._foreach_lerp_(self._float_pairs[0], self._float_pairs[1], 1.0 - decay)
        for ema_value, value in zip(*self._other_pairs, strict=True):
            ema_value.copy_(value)

    def _pair_with(self, model: nn.Module) -> None:
        """Cache (EMA tensor, model tensor) lists; the tensors are updated in place, so the pairing holds."""
        source = model.state_dict()
        floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        others: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for key, ema_value in self.module.state_dict().items():
            value = source[key].detach()
            same_kind = ema_value.is_floating_point() and value.dtype == ema_value.dtype and value.device == ema_value.device
            target = floats if same_kind else others
            target[0].append(ema_value)
            target[1].append(value)
        if any(e.is_floating_point() for e in others[0]):
            raise ValueError("ModelEma: the model's float tensors changed dtype or device after the EMA copy was made")
        self._float_pairs, self._other_pairs, self._pairs_of = floats, others, model

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


class WarmupCosine:
    """Linear warmup to the base LR, then cosine to ``min_lr_ratio`` of it.

    Progress is ``step / total_steps``, or the elapsed fraction of a time
    budget when that is further along, so a budgeted run still anneals.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = max(1, total_steps)
        self.min_lr_ratio = min_lr_ratio
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.progress = 0.0
        self.apply(0, 0.0)

    def factor(self, step: int, progress: float) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cos

    def apply(self, step: int, time_fraction: float) -> None:
        self.progress = max(step / self.total_steps, time_fraction)
        f = self.factor(step, self.progress)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            set_lr(group, base * f)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "total_steps": self.total_steps, "progress": self.progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.progress = float(state["progress"])


# ---- metric log and plots ----------------------------------------------------------------------


class MetricLog:
    """Append-only CSV of training and validation rows (rank 0 only), plus a PNG of the curves."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        """Continue the log at ``path``; ``fresh`` starts it empty (a new run in a folder a killed run left)."""
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists() and not fresh:
            with path.open(newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a killed run may have logged past its last checkpoint)."""
        self.rows = [r for r in self.rows if int(float(r["step"])) <= step]
        self._rewrite()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._rewrite()

    def _rewrite(self) -> None:
        from model_tools.io_utils import atomic_write

        fields: list[str] = []
        for row in self.rows:
            fields += [k for k in row if k not in fields]
        with atomic_write(self.path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["step"])
            writer.writeheader()
            writer.writerows(self.rows)

    def plot(self, path: Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from model_tools.io_utils import atomic_write

        train = [r for r in self.rows if r.get("phase") == "train"]
        val = [r for r in self.rows if r.get("phase") == "val"]
        loss_keys = [k for k in (train[0] if train else {}) if k.startswith("loss")]
        val_keys = [k for k in (val[0] if val else {}) if k not in ("phase", "step", "epoch", "lr", "time_s") and val[0].get(k) not in ("", None)]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for key in loss_keys:
            xs = [float(r["step"]) for r in train if r.get(key) not in ("", None)]
            ys = [float(r[key]) for r in train if r.get(key) not in ("", None)]
            axes[0].plot(xs, ys, label=key)
        axes[0].set_yscale("log")
        axes[0].set_title("training loss")
        axes[0].set_xlabel("step")
        axes[1].plot([float(r["step"]) for r in train], [float(r["lr"]) for r in train])
        axes[1].set_title("learning rate")
        axes[1].set_xlabel("step")
        for key in val_keys:
            xs = [float(r["step"]) for r in val if r.get(key) not in ("", None)]
            ys = [float(r[key]) for r in val if r.get(key) not in ("", None)]
            axes[2].plot(xs, ys, marker="o", label=key)
        axes[2].set_title("validation")
        axes[2].set_xlabel("step")
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        with atomic_write(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)


# ---- the trainer -------------------------------------------------------------------------------


class Trainer:
    """Runs one training task under one config, writing everything into ``run_dir``.

    Files in ``run_dir``: ``config.yaml`` (effective config), ``metrics.csv``,
    ``curves.png``, ``checkpoints/last.pt`` (full state, for ``--resume``),
    ``checkpoints/best.pt``, ``model_fp16.pt`` (plain fp16 state dict of the
    best validated weights, EMA when on; the final weights when no validation
    ran) and ``last_fp16.pt``, and ``summary.json``.
    """

    def __init__(
        self,
        task: TrainingTask,
        config: TrainConfig,
        run_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        dist: DistInfo | None = None,
    ) -> None:
        self.task = task
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.dist = dist or dist_from_env()
        self.device = resolve_device(config.device, self.dist)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.on_cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if config.amp_dtype == "bf16" else torch.float16
        self.use_amp = bool(config.amp and self.on_cuda)
        self.channels_last = bool(config.channels_last and self.on_cuda)

    # -- setup --
    def _init_dist(self) -> None:
        self._owns_process_group = False
        if self.dist.enabled and not torch.distributed.is_initialized():
            if self.on_cuda:
                torch.cuda.set_device(self.device)
                torch.distributed.init_process_group(backend="nccl", device_id=self.device)
            else:
                torch.distributed.init_process_group(backend="gloo")
            self._owns_process_group = True

    def _loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        return make_loader(dataset, self.config, self.dist, self.on_cuda, train=train)

    def steps_per_epoch(self, train_set: Dataset) -> int:
        per_rank = len(train_set) // self.dist.world_size  # type: ignore[arg-type]
        steps = per_rank // self.config.batch_size
        if steps == 0:
            raise ConfigError(
                f"config field 'batch_size' = {self.config.batch_size} exceeds the {per_rank} training samples per process"
            )
        return steps

    # -- checkpoints --
    def _checkpoint(self, state: dict[str, Any], path: Path) -> None:
        save_atomic(state, path)

    def _state(self, *, epoch: int, step: int, index_in_epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.task.name,
            "config": self.config.to_dict(),
            "model": self._bare(self.model).state_dict(),
            "optimizer": optimizer_state_for_checkpoint(self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": epoch,
            "step": step,
            "index_in_epoch": index_in_epoch,
            "rng": rng_state(),
            "best": self.best,
            "elapsed_s": self._elapsed(),
            "torch_threads": torch.get_num_threads(),
        }

    def _check_compatible(self, saved: dict[str, Any], source: str) -> None:
        now = self.config.to_dict()
        for section in _ARCH_SECTIONS:
            if isinstance(now[section], dict):
                keys = sorted(set(now[section]) | set(saved.get(section, {})))
                for key in keys:
                    a, b = saved.get(section, {}).get(key), now[section].get(key)
                    if a != b:
                        raise ConfigError(f"{source}: config field {section}.{key} is {a!r} in the checkpoint but {b!r} now")
            elif saved.get(section) != now[section]:
                raise ConfigError(f"{source}: config field {section} is {saved.get(section)!r} in the checkpoint but {now[section]!r} now")

    def _load_resume(self) -> tuple[int, int, int]:
        obj = load_safe(self.last_path, map_location="cpu")
        source = str(self.last_path)
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"{source}: not a model_tools training checkpoint")
        self._check_compatible(obj["config"], source)
        self._bare(self.model).load_state_dict(obj["model"])
        load_optimizer_state(self.optimizer, obj["optimizer"])
        self.scheduler.load_state_dict(obj["scheduler"])
        self.scaler.load_state_dict(obj["scaler"])
        if self.ema is not None:
            if not obj.get("ema"):
                raise ConfigError(f"{source}: config field ema is on now but the checkpoint has no EMA state")
            self.ema.load_state_dict(obj["ema"])
        self.best = obj.get("best")
        self._elapsed_before = float(obj.get("elapsed_s", 0.0))
        set_rng_state(obj["rng"])
        self._match_threads(int(obj.get("torch_threads", 0)))
        return int(obj["epoch"]), int(obj["step"]), int(obj["index_in_epoch"])

    def _match_threads(self, saved: int) -> None:
        """Compute with the intra-op thread count of the checkpointed run.

        CPU kernels split their reductions by thread, so the sums (and the
        weights, by an ulp here and there) depend on the count
        (docs/training.md, "Kill and resume"). A process started under
        another OMP_NUM_THREADS, CPU affinity or container limit gets
        another count by default.
        """
        now = torch.get_num_threads()
        if saved > 0 and saved != now:
            torch.set_num_threads(saved)
            self._say(f"train: resuming with {saved} intra-op threads as the checkpointed run had (this process started "
                      f"with {now}): CPU sums depend on the thread count")

    @staticmethod
    def _bare(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self._t0)

    def eval_model(self) -> nn.Module:
        """The weights validation and exports use: EMA when on, else the trained model."""
        return self.ema.module if self.ema is not None else self._bare(self.model)

    # -- validation --
    def _validate(self) -> dict[str, float]:
        loader = self._val_loader
        model = self.eval_model()
        was_training = model.training
        model.eval()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            metrics = self.task.validate(model, _MovingLoader(loader, self.device, self.channels_last), self.device)
        model.train(was_training)
        if self.dist.enabled:
            keys = list(metrics)
            values = torch.tensor([float(metrics[k]) for k in keys], device=self.device, dtype=torch.float64)
            torch.distributed.all_reduce(values)
            metrics = {k: float(v) / self.dist.world_size for k, v in zip(keys, values.tolist(), strict=True)}
        return metrics

    def _is_better(self, value: float) -> bool:
        if self.best is None or not math.isfinite(value):
            return self.best is None and math.isfinite(value)
        return value > self.best["value"] if self.task.higher_is_better else value < self.best["value"]

    # -- main loop --
    def fit(self, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train to the configured length (or stop, checkpointed, after ``stop_after_steps``).

        ``stop_after_steps`` ends this process early at a global step, leaving
        a checkpoint to ``resume`` from, e.g. to split a run over time-limited jobs.
        Returns a summary dict (also written to ``summary.json``).

        The run is a sequence of segments: :meth:`_train_segment` steps until an
        epoch ends (or the run stops), then :meth:`_end_segment` validates, keeps
        the best weights and checkpoints; :meth:`_finish` exports and summarises.
        """
        run = self._setup()
        while run.step < run.total and run.stop_reason == "done":
            self._train_segment(run, stop_after_steps)
            self._end_segment(run)
        return self._finish(run)

    def _setup(self) -> _RunState:
        """Process group, run folder checks, model/optimiser/schedule/EMA, data, resume, loaders, log."""
        cfg = self.config
        self._init_dist()
        main = self.dist.is_main
        killed_writes: list[Path] = []
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            killed_writes = self._remove_unfinished_writes()
        if self.resume and not self.last_path.exists():
            if any(path.parent == self.ckpt_dir for path in killed_writes):
                raise ModelFileError(
                    f"--resume: {self.run_dir} holds no finished checkpoint: its run was killed while writing the first "
                    f"one (the partial file is removed); start the run again without --resume, into the same run dir"
                )
            raise ModelFileError(f"--resume: no checkpoint {self.last_path} to resume from; start the run without --resume")
        if not self.resume and self.last_path.exists():
            raise ConfigError(f"{self.run_dir} already holds a run ({self.last_path}); pass --resume or pick a new run dir")
        if main and not self.resume:
            # Weights a run killed before its first checkpoint left behind: not this run's.
            stale = [self.run_dir / name for name in ("model_fp16.pt", "last_fp16.pt") if (self.run_dir / name).exists()]
            for path in stale:
                path.unlink()
            if stale:
                self._say(f"train: removed {', '.join(p.name for p in stale)} of a run that never finished a checkpoint")

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        train_set, val_set, total, steps_per_epoch = self._build()
        epoch, step, index_in_epoch = 0, 0, 0
        if self.resume:
            epoch, step, index_in_epoch = self._load_resume()
        parts = StepParts(self.task, self.model, self.optimizer, self.scaler, self.device, self.amp_dtype,
                          self.use_amp, cfg.grad_clip)
        self._step, self.model = build_train_step(parts, cfg.step_mode, world_size=self.dist.world_size,
                                                  log=self._say)
        self._log = MetricLog(self.run_dir / "metrics.csv", fresh=not self.resume) if main else None
        if main:
            save_config(cfg, self.run_dir / "config.yaml")
            if self.resume and self._log is not None:
                self._log.truncate_after(step)

        self._stream = self._train_stream(train_set, epoch, index_in_epoch)  # runs on through epoch ends
        self._val_loader = self._loader(val_set, train=False)
        self.model.train()
        self._bar = None
        if main and cfg.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=step, desc=f"train {cfg.run_name}", dynamic_ncols=True)
        # The loop never waits for the GPU: a non-finite loss is flagged on the device and checked at
        # log, checkpoint and epoch steps (a per-step sync stops the host from queueing the next step).
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        return _RunState(epoch=epoch, step=step, index_in_epoch=index_in_epoch, total=total,
                         steps_per_epoch=steps_per_epoch, nonfinite=nonfinite, checked_step=step)

    def _train_stream(self, train_set: Dataset, epoch: int, index_in_epoch: int) -> Iterator[dict[str, Any]]:
        return train_batches(train_set, self.config, self.dist, self.device, channels_last=self.channels_last,
                             run_dir=self.run_dir, epoch=epoch, index_in_epoch=index_in_epoch, log=self._say)

    def _remove_unfinished_writes(self) -> list[Path]:
        """Delete the temp files of writes a killed process left in the run folder; name them in one line."""
        from model_tools.io_utils import unfinished_writes

        outputs = [self.last_path, *(self.run_dir / name for name in _RUN_FILES)]
        found = [temp for path in outputs for temp in unfinished_writes(path)]
        if found:
            size = sum(p.stat().st_size for p in found) / 2**20
            for temp in found:
                temp.unlink(missing_ok=True)
            names = ", ".join(str(p.relative_to(self.run_dir)) for p in found)
            self._say(f"train: removed {len(found)} unfinished write(s) ({size:.1f} MB) left by a killed run: {names}")
        return found

    def _build(self) -> tuple[Dataset, Dataset, int, int]:
        """Model, EMA, optimiser, datasets, schedule and scaler; returns (train, val, total steps, steps per epoch)."""
        cfg = self.config
        model = self.task.build_model().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.ema = ModelEma(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema else None
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.betas[0], cfg.betas[1]), self.on_cuda)
        train_set, val_set = self.task.build_datasets()
        steps_per_epoch = self.steps_per_epoch(train_set)
        total = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        warmup = round(cfg.warmup_epochs * steps_per_epoch) if cfg.warmup_epochs > 0 else cfg.warmup_steps
        self.scheduler = WarmupCosine(self.optimizer, warmup, total, cfg.min_lr_ratio)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.best: dict[str, Any] | None = None
        self._elapsed_before = 0.0
        self._t0 = time.monotonic()
        self.model = model
        return train_set, val_set, total, steps_per_epoch

    def _check_finite(self, run: _RunState) -> None:
        """Raise if a loss since the last check was non-finite (reads the device flag: a sync)."""
        if bool(run.nonfinite):
            raise FloatingPointError(
                f"loss became non-finite between step {run.checked_step} and step {run.step} (last parts "
                f"{ {k: float(v) for k, v in run.parts.items()} }); no checkpoint after step {run.checked_step} was written"
            )
        run.checked_step = run.step

    def _train_step(self, batch: dict[str, Any], run: _RunState) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on ``batch`` and the EMA update; returns (loss, grad norm) as device tensors (no sync)."""
        loss, run.parts, grad_norm = self._step(batch)
        run.nonfinite |= ~torch.isfinite(loss)
        if self.ema is not None:
            self.ema.update(self._bare(self.model))
        return loss, grad_norm

    def _say(self, line: str) -> None:
        """One log line from rank 0 (fallbacks, clean-ups)."""
        if self.dist.is_main:
            print(line, flush=True)

    def _train_segment(self, run: _RunState, stop_after_steps: int | None) -> None:
        """Step until the epoch ends, the run is long enough, the time budget is spent, or a stop is asked."""
        cfg = self.config
        budget_s = cfg.time_budget_min * 60.0
        window_t, window_n = time.monotonic(), 0
        while True:
            batch = to_model_batch(next(self._stream), self.device, self.channels_last)
            loss, grad_norm = self._train_step(batch, run)
            run.step += 1
            run.index_in_epoch += 1
            window_n += batch["image"].shape[0] * self.dist.world_size
            time_fraction = self._elapsed() / budget_s if budget_s else 0.0
            self.scheduler.apply(run.step, time_fraction)
            log_step = run.step % cfg.log_every_steps == 0 or run.step == run.total
            if log_step:
                self._check_finite(run)
            if self._bar is not None:
                self._bar.update(1)
                if log_step:
                    self._bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{current_lr(self.optimizer):.2e}")
            if self._log is not None and log_step:
                rate = window_n / max(1e-9, time.monotonic() - window_t)
                window_t, window_n = time.monotonic(), 0
                self._log.add({"phase": "train", "step": run.step, "epoch": run.epoch, "lr": current_lr(self.optimizer),
                               "time_s": self._elapsed(), "loss": float(loss.item()), "grad_norm": float(grad_norm),
                               "img_per_s": rate, **{f"loss_{k}": float(v) for k, v in run.parts.items()}})
            if run.index_in_epoch >= run.steps_per_epoch:
                return
            if budget_s and time_fraction >= 1.0:
                run.stop_reason = "time_budget"
                return
            if stop_after_steps is not None and run.step >= stop_after_steps:
                run.stop_reason = "stopped"
                return
            if run.step >= run.total:
                return
            if cfg.checkpoint_every_steps and run.step % cfg.checkpoint_every_steps == 0 and self.dist.is_main:
                self._check_finite(run)
                self._save_checkpoint(run)

    def _end_segment(self, run: _RunState) -> None:
        """After a segment: advance the epoch, validate when due (tracking the best), checkpoint, plot."""
        self._check_finite(run)
        epoch_done = run.index_in_epoch >= run.steps_per_epoch
        if epoch_done:
            run.epoch, run.index_in_epoch = run.epoch + 1, 0
        finished = run.step >= run.total or run.stop_reason == "time_budget"
        if (epoch_done and run.epoch % self.config.val_every_epochs == 0) or (finished and run.stop_reason != "stopped"):
            run.last_val = self._validate()
            self._track_best(run)
        if self.dist.is_main:
            self._save_checkpoint(run)
            if self._log is not None and self._log.rows:
                self._log.plot(self.run_dir / "curves.png", f"{self.task.name}: {self.config.run_name}")
        if self.dist.enabled:
            torch.distributed.barrier()

    def _track_best(self, run: _RunState) -> None:
        """Log the validation row; keep the weights of the best headline metric as ``model_fp16.pt`` (rank 0)."""
        if not self.dist.is_main or self._log is None:
            return
        self._log.add({"phase": "val", "step": run.step, "epoch": run.epoch, "time_s": self._elapsed(), **run.last_val})
        headline = next(iter(run.last_val))
        if self._is_better(float(run.last_val[headline])):
            self.best = {"metric": headline, "value": float(run.last_val[headline]), "step": run.step, "epoch": run.epoch}
            save_atomic(fp16_state_dict(self.eval_model()), self.run_dir / "model_fp16.pt")

    def _save_checkpoint(self, run: _RunState) -> None:
        self._checkpoint(self._state(epoch=run.epoch, step=run.step, index_in_epoch=run.index_in_epoch), self.last_path)

    def _finish(self, run: _RunState) -> dict[str, Any]:
        """Shut the loaders and process group down; write the exports and ``summary.json`` (rank 0)."""
        cfg = self.config
        if self._bar is not None:
            self._bar.close()
        # Shut the loader workers down here rather than at interpreter exit: on a 2-GPU box a
        # 30-worker persistent loader left mid-epoch once kept the process alive for minutes after
        # training ended. With this (and the process group destroyed) runs there exit at once.
        self._stream = None
        self._val_loader = None
        gc.collect()
        if self._owns_process_group:
            torch.distributed.destroy_process_group()  # NCCL warns (and may hang at exit) when left to atexit
        summary = {"run_name": cfg.run_name, "task": self.task.name, "steps": run.step, "epochs_completed": run.epoch,
                   "total_steps": run.total, "stop_reason": run.stop_reason, "elapsed_s": self._elapsed(),
                   "best": self.best, "last_validation": run.last_val, "world_size": self.dist.world_size,
                   "device": str(self.device)}
        if self.dist.is_main and run.stop_reason != "stopped":
            from model_tools.io_utils import write_json

            save_atomic(fp16_state_dict(self.eval_model()), self.run_dir / "last_fp16.pt")
            if self.best is None:
                save_atomic(fp16_state_dict(self.eval_model()), self.run_dir / "model_fp16.pt")
            write_json(self.run_dir / "summary.json", summary)
        return summary


@dataclass
class _RunState:
    """Where a run stands: position, length, why it stops, the device-side non-finite flag."""

    epoch: int
    step: int
    index_in_epoch: int
    total: int
    steps_per_epoch: int
    nonfinite: torch.Tensor
    checked_step: int
    stop_reason: str = "done"
    last_val: dict[str, float] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)


class _MovingLoader:
    """Iterates a loader, moving each batch to the device (what task.validate receives)."""

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool) -> None:
        self.loader, self.device, self.channels_last = loader, device, channels_last

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield to_model_batch(batch, self.device, self.channels_last)

    def __len__(self) -> int:
        return len(self.loader)
