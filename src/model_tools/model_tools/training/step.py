"""One optimiser step (forward, loss, backward, gradient clipping, AMP scaler, AdamW), eager or as a CUDA graph.

The engine and the training benchmarks both take their step from
:func:`build_train_step`, so a benchmark times exactly what training runs.

``step_mode: eager`` runs the step op by op. ``step_mode: cuda_graph``
captures the whole step once and replays it: one launch instead of one per
kernel, which at the recipe's batch of 8 is what bounds a DDRNet23-Slim
step, not the GPU. A captured step must have static shapes and no host
synchronisation: the engine keeps the non-finite check on the device, the
GradScaler works with the fused AdamW without syncing (the optimiser skips
a step with inf/NaN gradients itself), the learning rate is a device tensor
that the schedule fills between replays, and the EMA update runs after each
replay. Under DDP the step is two graphs (forward + backward; the update)
with one all-reduce of a flat gradient buffer and a broadcast of rank 0's
buffers (what DistributedDataParallel does) run eagerly around them, so no
collective is captured; the copies into and out of the flat buffers are
inside the graphs (:class:`FlatAllReduce`). Where capture is impossible (no CUDA device, or
capture raises) the step runs eagerly and says so in one line.

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
    """The step op by op (what ``step_mode: eager`` runs, and what a CUDA graph captures).

    Two phases, so that a graph can be captured around each without the
    collectives between them: :meth:`forward_backward` and :meth:`update`.
    """

    def __init__(self, parts: StepParts, *, grad_sync: Callable[[], None] | None = None,
                 before_forward: Callable[[], None] | None = None, autocast_cache: bool = True) -> None:
        self.parts = parts
        self.params = [p for p in parts.model.parameters() if p.requires_grad]
        self.grad_sync = grad_sync  # manual DDP: all-reduce the gradients after backward
        self.before_forward = before_forward  # manual DDP: broadcast rank 0's buffers
        self.autocast_cache = autocast_cache
        self.mode = "eager"

    def __call__(self, batch: dict[str, Any]) -> StepOutput:
        if self.before_forward is not None:
            self.before_forward()
        loss, parts = self.forward_backward(batch)
        if self.grad_sync is not None:
            self.grad_sync()
        return loss, parts, self.update()

    def forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and (scaled) gradients of ``batch``; returns the detached loss and its parts."""
        p = self.parts
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.use_amp, cache_enabled=self.autocast_cache):
            loss, parts = p.task.compute_loss(p.model, batch)
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        return loss.detach(), {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in parts.items()}

    def update(self) -> torch.Tensor:
        """Unscale, clip, step, update the scale; returns the gradient norm before clipping (NaN when off)."""
        p = self.parts
        if p.grad_clip > 0:
            p.scaler.unscale_(p.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.params, p.grad_clip)
        else:
            grad_norm = torch.full((), float("nan"), device=p.device)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        return grad_norm


class GraphStep:
    """The same step captured once as CUDA graphs, then replayed on static copies of each batch.

    One process: one graph of the whole step. Under DDP: one graph of
    forward + backward and one of the update, with the gradient all-reduce
    and the buffer broadcast run eagerly around them (a handful of launches),
    so that no collective has to be captured.
    """

    def __init__(self, eager: EagerStep, *, sync: FlatAllReduce | None = None, log: Callable[[str], None] = print) -> None:
        self.eager = eager
        self.sync = sync
        self.log = log
        self.mode = "cuda_graph"
        self.graphs: list[torch.cuda.CUDAGraph] = []
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
        if not self.graphs:
            if self.eager_steps < GRAPH_WARMUP_STEPS:
                self.eager_steps += 1
                return self._on_side_stream(batch)
            return self._capture(batch)
        for key, value in self.static_batch.items():
            value.copy_(batch[key], non_blocking=True)
        if self.sync is None:
            self.graphs[0].replay()
        else:
            self.sync.broadcast_packed_buffers()
            self.graphs[0].replay()
            self.sync.all_reduce_gradients()
            self.graphs[1].replay()
        assert self.static_out is not None
        return self.static_out

    def _on_side_stream(self, batch: dict[str, Any]) -> StepOutput:
        current = torch.cuda.current_stream(self.eager.parts.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            out = self.eager(batch)
        current.wait_stream(self.side_stream)
        return out

    def _try_capture(self, graph: torch.cuda.CUDAGraph, work: Callable[[], Any], pool: Any = None) -> tuple[Any, str]:
        """Capture ``work`` into ``graph``: (its outputs, "") or (None, why it failed), the same on every rank."""
        error = ""
        out = None
        try:
            self.eager.autocast_cache = False  # autocast's weight-cast cache does not survive into replays
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                out = work()
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager step
            error = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        finally:
            self.eager.autocast_cache = True
        if self.sync is not None:  # every rank takes the same path, or the collectives would not pair up
            failed = torch.tensor(float(bool(error)), device=self.eager.parts.device)
            torch.distributed.all_reduce(failed)
            if float(failed) > 0 and not error:
                error = "capture failed on another rank"
        if error:
            self.mode = "eager"
            self._reset_after_failed_capture()
            self.log(f"train: step_mode=cuda_graph: capture failed ({error}); running the step eagerly")
        return out, error

    def _capture(self, batch: dict[str, Any]) -> StepOutput:
        """Capture the step on this batch and replay it (capture itself runs nothing); eager if capture fails."""
        p = self.eager.parts
        self.static_batch = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        static = {**batch, **self.static_batch}
        torch.cuda.synchronize(p.device)
        first = torch.cuda.CUDAGraph()
        if self.sync is None:
            out, error = self._try_capture(first, lambda: self.eager(static))
            if error:
                return self.eager(batch)
            self.graphs, self.static_out = [first], out
            first.replay()
            return out
        sync = self.sync
        assert sync is not None
        sync.pack_buffers()  # from here on the update graph packs them, for the broadcast before each forward
        sync.broadcast_packed_buffers()

        def forward_backward() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            sync.unpack_buffers()
            out = self.eager.forward_backward(static)
            sync.pack_grads()
            return out

        def update() -> torch.Tensor:
            sync.unpack_grads()
            grad_norm = self.eager.update()
            sync.pack_buffers()
            return grad_norm

        forward, error = self._try_capture(first, forward_backward)
        if error:
            return self.eager(batch)
        first.replay()
        sync.all_reduce_gradients()
        second = torch.cuda.CUDAGraph()
        grad_norm, error = self._try_capture(second, update, pool=first.pool())
        if error:
            sync.unpack_grads()  # this step's gradients, averaged
            return (*forward, self.eager.update())
        second.replay()
        self.graphs, self.static_out = [first, second], (*forward, grad_norm)
        return self.static_out

    def _reset_after_failed_capture(self) -> None:
        p = self.eager.parts
        torch.cuda.synchronize(p.device)
        states = getattr(p.scaler, "_per_optimizer_states", None)
        if states is not None:
            states.clear()  # the capture attempt left this step's unscale/step bookkeeping half done


class FlatAllReduce:
    """DDP's gradient averaging and buffer broadcast as plain collectives, with the copies in CUDA graphs.

    All gradients go through one flat buffer per dtype (instead of DDP's
    autograd hooks and buckets) with one all-reduce, then division by the
    world size; rank 0's buffers (BatchNorm statistics) are broadcast
    through another before each forward, as DistributedDataParallel does by
    default. The flat buffers and their per-tensor views are made once, so
    the copies in and out are a few ``_foreach_copy_`` launches that a CUDA
    graph captures: the CUDA-graph step runs only the collectives between
    its graphs. Flattening and unflattening the ~300 tensors of DDRNet23-Slim
    eagerly on every step instead took 5.6 ms of host time per step on a
    2 x H200 box (docs/measurements/ddp_seg_step_profile_before_h200x2.txt),
    which with the batch preparation left the host slower than the GPUs.

    The eager step calls :meth:`broadcast_buffers` and :meth:`average_gradients`;
    the CUDA-graph step splits them: ``unpack_buffers`` at the start and
    ``pack_grads`` at the end of its forward + backward graph,
    :meth:`all_reduce_gradients` between the graphs, ``unpack_grads`` at the
    start and ``pack_buffers`` at the end of its update graph, and
    :meth:`broadcast_packed_buffers` before the next forward.
    """

    def __init__(self, model: nn.Module, world_size: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers()]
        self.world_size = world_size
        # Grouped by dtype once: the flat buffers, their views and every copy follow this one order.
        self._param_groups = _by_dtype(self.params)
        self._buffer_groups = _by_dtype(self.buffers)
        self._grad_flat, self._grad_views = _flat_with_views(self._param_groups)
        self._buffer_flat, self._buffer_views = _flat_with_views(self._buffer_groups)

    def broadcast_parameters(self) -> None:
        """Make every rank start from rank 0's weights and buffers (eager, once)."""
        with torch.no_grad():
            for group in (*self._param_groups, *self._buffer_groups):
                flat = torch._utils._flatten_dense_tensors(group)
                torch.distributed.broadcast(flat, 0)
                torch._foreach_copy_(group, torch._utils._unflatten_dense_tensors(flat, group))

    def broadcast_buffers(self) -> None:
        """Every rank's buffers become rank 0's."""
        self.pack_buffers()
        self.broadcast_packed_buffers()
        self.unpack_buffers()

    def average_gradients(self) -> None:
        """Every rank's gradients become the mean over the ranks."""
        self.pack_grads()
        self.all_reduce_gradients()
        self.unpack_grads()

    def pack_buffers(self) -> None:
        with torch.no_grad():
            for views, buffers in zip(self._buffer_views, self._buffer_groups, strict=True):
                torch._foreach_copy_(views, buffers)

    def broadcast_packed_buffers(self) -> None:
        for flat in self._buffer_flat:
            torch.distributed.broadcast(flat, 0)

    def unpack_buffers(self) -> None:
        with torch.no_grad():
            for buffers, views in zip(self._buffer_groups, self._buffer_views, strict=True):
                torch._foreach_copy_(buffers, views)

    def pack_grads(self) -> None:
        """The gradients into the flat buffers (a parameter without a gradient counts as zeros)."""
        with torch.no_grad():
            for views, params in zip(self._grad_views, self._param_groups, strict=True):
                pairs = [(v, p.grad) for v, p in zip(views, params, strict=True) if p.grad is not None]
                missing = [v for v, p in zip(views, params, strict=True) if p.grad is None]
                if pairs:
                    torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
                if missing:
                    torch._foreach_zero_(missing)

    def all_reduce_gradients(self) -> None:
        for flat in self._grad_flat:
            torch.distributed.all_reduce(flat)

    def unpack_grads(self) -> None:
        """The averaged flat buffers back into the gradients (those that exist)."""
        with torch.no_grad():
            for flat, views, params in zip(self._grad_flat, self._grad_views, self._param_groups, strict=True):
                flat.div_(self.world_size)
                pairs = [(p.grad, v) for v, p in zip(views, params, strict=True) if p.grad is not None]
                if pairs:
                    torch._foreach_copy_([g for g, _ in pairs], [v for _, v in pairs])


def _flat_with_views(groups: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """One flat buffer per group (``_by_dtype``) and, per group, a view of it shaped like each tensor."""
    flats, views = [], []
    for group in groups:
        flat = torch.zeros(sum(t.numel() for t in group), dtype=group[0].dtype, device=group[0].device)
        flats.append(flat)
        views.append([v.view(t.shape) for v, t in zip(flat.split([t.numel() for t in group]), group, strict=True)])
    return flats, views


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
    if parts.device.type == "cuda":
        # Training shapes are fixed (whole batches, fixed crops), so cuDNN's per-shape algorithm search pays
        # once; the algorithms it picks from differ only in summation order, not in what is computed.
        torch.backends.cudnn.benchmark = True
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
    return GraphStep(eager, sync=sync, log=log), parts.model
