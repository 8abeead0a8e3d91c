"""The train step's parts that run without a GPU: manual DDP averaging, checkpointable optimiser state, the CPU fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from model_tools.training.step import (
    EagerStep,
    FlatAllReduce,
    StepParts,
    build_train_step,
    load_optimizer_state,
    make_optimizer,
    optimizer_state_for_checkpoint,
    set_lr,
)


class _Task:
    """Smallest task: mean squared error of a conv + BN net's output against a target."""

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = ((model(batch["image"]) - batch["target"]) ** 2).mean()
        return loss, {"mse": loss.detach()}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def _batch(rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return {"image": torch.rand(2, 3, 8, 8, generator=g), "target": torch.rand(2, 1, 8, 8, generator=g)}


def _parts(model: nn.Module) -> StepParts:
    optimizer = make_optimizer(model, 1e-2, 0.01, (0.9, 0.999), on_cuda=False)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return StepParts(_Task(), model, optimizer, scaler, torch.device("cpu"), torch.bfloat16, False, 1.0)


def _rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        # Manual: what the CUDA-graph step does between its two graphs.
        manual_model = _net()
        if rank == 1:
            with torch.no_grad():  # a different start on rank 1: the broadcast must replace it
                for p in manual_model.parameters():
                    p.add_(1.0)
        sync = FlatAllReduce(manual_model, 2)
        sync.broadcast_parameters()
        manual = EagerStep(_parts(manual_model), grad_sync=sync.average_gradients, before_forward=sync.broadcast_buffers)
        # Split: the same pieces in the order the CUDA-graph step runs them, the copies in and out of the flat
        # buffers inside its graphs and only the collectives between them.
        split_model = _net()
        if rank == 1:
            with torch.no_grad():
                for p in split_model.parameters():
                    p.add_(1.0)
        split_sync = FlatAllReduce(split_model, 2)
        split_sync.broadcast_parameters()
        split = EagerStep(_parts(split_model))
        split_sync.pack_buffers()
        # Reference: DistributedDataParallel around the same eager step.
        ddp_step, ddp_model = build_train_step(_parts(_net()), "eager", world_size=2)
        for _ in range(3):
            manual(_batch(rank))
            ddp_step(_batch(rank))
            split_sync.broadcast_packed_buffers()
            split_sync.unpack_buffers()  # first graph: buffers in, forward + backward, gradients out
            split.forward_backward(_batch(rank))
            split_sync.pack_grads()
            split_sync.all_reduce_gradients()
            split_sync.unpack_grads()  # second graph: averaged gradients in, update, buffers out
            split.update()
            split_sync.pack_buffers()
        torch.save({"manual": manual_model.state_dict(), "ddp": ddp_model.module.state_dict(),
                    "split": split_model.state_dict()}, f"{out}.{rank}.pt")
        # Let go of DDP's reducer and wait for the other rank before tearing gloo down: a rank that destroyed
        # its group while gloo's threads still held work aborted at exit now and then ("terminate called
        # without an active exception"; the mechanism: pytorch/pytorch#179291, mosaicml/streaming#186).
        del ddp_step, ddp_model
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_flat_all_reduce_trains_as_distributed_data_parallel(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_rank, args=(init, str(tmp_path / "state")), nprocs=2, start_method="spawn")
    states = [torch.load(tmp_path / f"state.{r}.pt", weights_only=True) for r in range(2)]
    for rank, state in enumerate(states):
        for key, value in state["ddp"].items():
            torch.testing.assert_close(state["manual"][key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {key}")
            torch.testing.assert_close(state["split"][key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {key}")
    # Both ranks hold the same weights (BatchNorm statistics differ after the last forward, as under DDP),
    # and they trained (differ from the initial ones).
    for key in (name for name, _ in _net().named_parameters()):
        torch.testing.assert_close(states[1]["manual"][key], states[0]["manual"][key])
    assert not torch.equal(states[0]["manual"]["0.weight"], _net().state_dict()["0.weight"])


def test_checkpointed_optimiser_state_has_float_learning_rates_and_keeps_this_runs_flags() -> None:
    model = _net()
    optimizer = make_optimizer(model, 1e-2, 0.01, (0.9, 0.999), on_cuda=False)
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(0.005)  # as the CUDA-graph step holds it
        group["capturable"] = True
    set_lr(optimizer.param_groups[0], 0.004)
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(0.004)
    saved = optimizer_state_for_checkpoint(optimizer)
    assert [type(g["lr"]) for g in saved["param_groups"]] == [float, float]
    fresh = make_optimizer(_net(), 1e-2, 0.01, (0.9, 0.999), on_cuda=False)
    load_optimizer_state(fresh, saved)
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([0.004, 0.005])
    assert all(g["capturable"] is False for g in fresh.param_groups)  # this run's flags, not the checkpoint's


def test_cuda_graph_mode_on_the_cpu_says_so_and_steps_eagerly() -> None:
    lines: list[str] = []
    model = _net()
    step, module = build_train_step(_parts(model), "cuda_graph", log=lines.append)
    assert isinstance(step, EagerStep) and module is model
    assert lines == ["train: step_mode=cuda_graph needs a CUDA device, this run is on cpu; running the step eagerly"]
    before = model[0].weight.detach().clone()
    loss, parts, grad_norm = step(_batch(0))
    assert loss.item() > 0 and parts["mse"] == loss and grad_norm.item() > 0
    assert not torch.equal(before, model[0].weight)
    with pytest.raises(ValueError, match="not one of"):
        build_train_step(_parts(_net()), "compiled")
