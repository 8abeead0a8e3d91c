"""One optimiser step (forward, loss, backward, gradient clipping, AMP scaler, AdamW), eager or as a CUDA graph.

The engine and the training benchmarks both take their step from
:func:`build_train_step`, so a benchmark times exactly what training runs.

``step_mode: eager`` runs the step op by op. ``step_mode: cuda_graph``
captures the whole step once and replays it: one launch instead of the
~2,000 kernel launches of a DDRNet23-Slim step, which at the recipe's batch
of 8 are what bounds the rate, not the GPU. A captured step must have
static shapes and no host synchronisation: the engine keeps the non-finite
check on the device, the GradScaler works with the fused AdamW without
syncing (the optimiser skips a step with inf/NaN gradients itself), the
learning rate is a device tensor that the schedule fills between replays,
and the EMA update runs after each replay. Under DDP the captured step
all-reduces one flat gradient buffer and broadcasts rank 0's buffers (what
DistributedDataParallel does) inside the graph. Where capture is impossible
(no CUDA device, or capture raises) the step runs eagerly and says so in
one line.

The first few steps of a run (``GRAPH_WARMUP_STEPS``) run eagerly on a side
stream, as CUDA graph capture needs (lazy initialisation, cuDNN/cuBLAS
handles, NCCL communicators), and they are real training steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

STEP_MODES = ("eager", "cuda_graph")
GRAPH_WARMUP_STEPS = 3

StepOutput = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]  # loss, loss parts, gradient norm


@dataclass
class StepParts:
    """What one step touches; ``model`` is the module the loss runs through (DDP-wrapped when eager DDP)."""

    task: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype
    use_amp: bool
    grad_clip: float


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], on_cuda: bool) -> torch.optim.AdamW:
    """AdamW (fused on CUDA), no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=on_cuda or None)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first group's learning rate as a float (it is a device tensor under CUDA graphs: a sync)."""
    return float(optimizer.param_groups[0]["lr"])


def set_lr(group: dict[str, Any], value: float) -> None:
    """Set a param group's LR in place (a device tensor is filled, so a captured step sees the new value)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def optimizer_state_for_checkpoint(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with plain-float learning rates, so a checkpoint loads into either step mode."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimiser state, keeping this run's implementation flags (fused, capturable, foreach)."""
    own = [{key: group.get(key) for key in ("fused", "capturable", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, own, strict=True):
        group.update(flags)


class EagerStep:
    """The step op by op (what ``step_mode: eager`` runs, and what a CUDA graph captures)."""

    def __init__(self, parts: StepParts, *, grad_sync: Callable[[], None] | None = None,
                 before_forward: Callable[[], None] | None = None, autocast_cache: bool = True) -> None:
        self.parts = parts
        self.params = [p for p in parts.model.parameters() if p.requires_grad]
        self.grad_sync = grad_sync  # manual DDP: all-reduce the gradients after backward
        self.before_forward = before_forward  # manual DDP: broadcast rank 0's buffers
        self.autocast_cache = autocast_cache
        self.mode = "eager"

    def __call__(self, batch: dict[str, Any]) -> StepOutput:
        p = self.parts
        if self.before_forward is not None:
            self.before_forward()
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.use_amp, cache_enabled=self.autocast_cache):
            loss, parts = p.task.compute_loss(p.model, batch)
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        if self.grad_sync is not None:
            self.grad_sync()
        if p.grad_clip > 0:
            p.scaler.unscale_(p.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.params, p.grad_clip)
        else:
            grad_norm = torch.full((), float("nan"), device=p.device)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        return loss.detach(), {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in parts.items()}, grad_norm


class GraphStep:
    """The same step captured once as a CUDA graph, then replayed on static copies of each batch."""

    def __init__(self, eager: EagerStep, *, world_size: int = 1, log: Callable[[str], None] = print) -> None:
        self.eager = eager
        self.world_size = world_size
        self.log = log
        self.mode = "cuda_graph"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batch: dict[str, Any] = {}
        self.static_out: StepOutput | None = None
        self.eager_steps = 0
        self.side_stream = torch.cuda.Stream(device=eager.parts.device)
        for group in eager.parts.optimizer.param_groups:
            group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=eager.parts.device)

    def __call__(self, batch: dict[str, Any]) -> StepOutput:
        if self.mode == "eager":
            return self.eager(batch)
        if self.graph is None:
            if self.eager_steps < GRAPH_WARMUP_STEPS:
                self.eager_steps += 1
                return self._on_side_stream(batch)
            return self._capture(batch)
        for key, value in self.static_batch.items():
            value.copy_(batch[key], non_blocking=True)
        self.graph.replay()
        assert self.static_out is not None
        return self.static_out

    def _on_side_stream(self, batch: dict[str, Any]) -> StepOutput:
        current = torch.cuda.current_stream(self.eager.parts.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            out = self.eager(batch)
        current.wait_stream(self.side_stream)
        return out

    def _capture(self, batch: dict[str, Any]) -> StepOutput:
        """Capture the step on this batch and replay it (capture itself runs nothing); eager if it fails."""
        p = self.eager.parts
        self.static_batch = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        torch.cuda.synchronize(p.device)
        graph = torch.cuda.CUDAGraph()
        error: BaseException | None = None
        try:
            # Autocast's weight-cast cache does not survive into replays; casts are captured instead.
            self.eager.autocast_cache = False
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self.eager({**batch, **self.static_batch})
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager step
            error = err
        finally:
            self.eager.autocast_cache = True
        if self.world_size > 1:  # every rank takes the same path, or the collectives would not pair up
            failed = torch.tensor(float(error is not None), device=p.device)
            torch.distributed.all_reduce(failed)
            if float(failed) > 0 and error is None:
                error = RuntimeError("CUDA graph capture failed on another rank")
        if error is not None:
            self.mode = "eager"
            self._reset_after_failed_capture()
            self.log(f"train: step_mode=cuda_graph: capture failed ({type(error).__name__}: {str(error).splitlines()[0][:160]}); "
                     "running the step eagerly")
            return self.eager(batch)
        self.graph, self.static_out = graph, out
        graph.replay()
        return out

    def _reset_after_failed_capture(self) -> None:
        p = self.eager.parts
        torch.cuda.synchronize(p.device)
        p.optimizer.zero_grad(set_to_none=True)
        states = getattr(p.scaler, "_per_optimizer_states", None)
        if states is not None:
            states.clear()  # the capture attempt left this step's unscale/step bookkeeping half done
        self.eager.autocast_cache = True


class FlatAllReduce:
    """DDP's gradient averaging and buffer broadcast as plain collectives that a CUDA graph can capture.

    One all-reduce of all gradients flattened into one buffer (instead of
    DDP's autograd hooks and buckets), then division by the world size;
    rank 0's buffers (BatchNorm statistics) are broadcast before each
    forward, as DistributedDataParallel does by default.
    """

    def __init__(self, model: nn.Module, world_size: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers()]
        self.world_size = world_size

    def broadcast_parameters(self) -> None:
        """Make every rank start from rank 0's weights and buffers (eager, once)."""
        with torch.no_grad():
            for tensors in (self.params, self.buffers):
                for group in _by_dtype(tensors):
                    flat = torch._utils._flatten_dense_tensors(group)
                    torch.distributed.broadcast(flat, 0)
                    torch._foreach_copy_(group, torch._utils._unflatten_dense_tensors(flat, group))

    def broadcast_buffers(self) -> None:
        with torch.no_grad():
            for group in _by_dtype(self.buffers):
                flat = torch._utils._flatten_dense_tensors(group)
                torch.distributed.broadcast(flat, 0)
                torch._foreach_copy_(group, torch._utils._unflatten_dense_tensors(flat, group))

    def average_gradients(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        for group in _by_dtype(grads):
            flat = torch._utils._flatten_dense_tensors(group)
            torch.distributed.all_reduce(flat)
            flat.div_(self.world_size)
            torch._foreach_copy_(group, torch._utils._unflatten_dense_tensors(flat, group))


def _by_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    return list(groups.values())


def build_train_step(parts: StepParts, mode: str, *, world_size: int = 1,
                     log: Callable[[str], None] = print) -> tuple[EagerStep | GraphStep, nn.Module]:
    """The step for ``mode`` (``eager`` | ``cuda_graph``) and the module the loss runs through.

    Eager under DDP wraps the model in DistributedDataParallel. ``cuda_graph``
    on a CPU device says so in one line and runs eagerly.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"step mode {mode!r} is not one of {STEP_MODES}")
    if mode == "cuda_graph" and parts.device.type != "cuda":
        log(f"train: step_mode=cuda_graph needs a CUDA device, this run is on {parts.device}; running the step eagerly")
        mode = "eager"
    if mode == "eager":
        if world_size > 1:
            parts.model = nn.parallel.DistributedDataParallel(
                parts.model, device_ids=[parts.device.index] if parts.device.type == "cuda" else None)
        return EagerStep(parts), parts.model
    sync = None
    if world_size > 1:
        sync = FlatAllReduce(parts.model, world_size)
        sync.broadcast_parameters()
    eager = EagerStep(parts, grad_sync=sync.average_gradients if sync else None,
                      before_forward=sync.broadcast_buffers if sync else None)
    return GraphStep(eager, world_size=world_size, log=log), parts.model
