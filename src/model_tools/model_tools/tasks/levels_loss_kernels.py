"""Triton kernels for the depth ``levels`` loss on CUDA: cross-entropy and softmax expectation in one pass.

Per pixel of [B, L, h, w] logits (L = 256 levels) the loss needs the
cross-entropy against the ground truth's level and the softmax expectation
of the level index. Done with PyTorch ops (``tasks.depth``'s fallback) that
is a dozen passes over full-resolution fp32 tensors of L channels; here the
forward reads the logits once and writes three floats per pixel (the
cross-entropy, the expectation, the log-sum-exp), and the backward reads
the logits once more and writes their gradient, in the logits' dtype, once:

    d ce / dz_k = p_k - [k == t],   d E / dz_k = p_k (k - E),   p = exp(z - lse).

All arithmetic is fp32, as in the PyTorch path. The logits are read with
the levels laid out last (channels_last, as the training step runs), so
each pixel's L values are contiguous. Training only: the node runtime never
imports this module.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 16


@triton.jit
def _forward_kernel(z_ptr, t_ptr, ce_ptr, e_ptr, lse_ptr, n_rows, n_levels,
                    BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):  # noqa: N803 - Triton constexpr convention
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ks = tl.arange(0, BLOCK_L)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (ks[None, :] < n_levels)
    offsets = rows.to(tl.int64)[:, None] * n_levels + ks[None, :]
    z = tl.load(z_ptr + offsets, mask=mask, other=float("-inf")).to(tl.float32)
    m = tl.max(z, axis=1)
    e = tl.exp(z - m[:, None])
    e = tl.where(mask, e, 0.0)
    s = tl.sum(e, axis=1)
    expectation = tl.sum(e * ks[None, :].to(tl.float32), axis=1) / s
    lse = m + tl.log(s)
    t = tl.load(t_ptr + rows, mask=row_ok, other=0)
    z_t = tl.sum(tl.where(ks[None, :] == t[:, None], z, 0.0), axis=1)
    tl.store(ce_ptr + rows, lse - z_t, mask=row_ok)
    tl.store(e_ptr + rows, expectation, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)


@triton.jit
def _backward_kernel(z_ptr, t_ptr, lse_ptr, e_ptr, g_ce_ptr, g_e_ptr, grad_ptr, n_rows, n_levels,
                     BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):  # noqa: N803 - Triton constexpr convention
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ks = tl.arange(0, BLOCK_L)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (ks[None, :] < n_levels)
    offsets = rows.to(tl.int64)[:, None] * n_levels + ks[None, :]
    z = tl.load(z_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    expectation = tl.load(e_ptr + rows, mask=row_ok, other=0.0)
    g_ce = tl.load(g_ce_ptr + rows, mask=row_ok, other=0.0)
    g_e = tl.load(g_e_ptr + rows, mask=row_ok, other=0.0)
    t = tl.load(t_ptr + rows, mask=row_ok, other=0)
    p = tl.exp(z - lse[:, None])
    k = ks[None, :].to(tl.float32)
    grad = p * (g_ce[:, None] + g_e[:, None] * (k - expectation[:, None]))
    grad = grad - tl.where(ks[None, :] == t[:, None], g_ce[:, None], 0.0)
    tl.store(grad_ptr + offsets, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def _rows(logits: torch.Tensor) -> torch.Tensor:
    """[B, L, h, w] logits as a contiguous [B*h*w, L] view (a copy only when the levels are not laid out last)."""
    return logits.movedim(1, -1).contiguous().view(-1, logits.shape[1])


class LevelsCrossEntropyAndExpectation(torch.autograd.Function):
    """The Triton form of ``tasks.depth``'s cross-entropy + expectation (same inputs, outputs and gradients)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, levels, h, w = logits.shape
        z = _rows(logits)
        t = target.reshape(-1).contiguous()
        n = z.shape[0]
        ce, expectation, lse = (torch.empty(n, device=z.device, dtype=torch.float32) for _ in range(3))
        grid = (triton.cdiv(n, ROWS_PER_PROGRAM),)
        block_l = triton.next_power_of_2(levels)
        _forward_kernel[grid](z, t, ce, expectation, lse, n, levels, BLOCK_R=ROWS_PER_PROGRAM, BLOCK_L=block_l)
        ctx.save_for_backward(z, t, lse, expectation)
        ctx.shape = (b, levels, h, w)
        return ce.view(b, h, w), expectation.view(b, h, w)

    @staticmethod
    def backward(ctx: Any, grad_ce: torch.Tensor | None, grad_e: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        z, t, lse, expectation = ctx.saved_tensors
        b, levels, h, w = ctx.shape
        n = z.shape[0]
        g_ce = torch.zeros_like(lse) if grad_ce is None else grad_ce.reshape(-1).float().contiguous()
        g_e = torch.zeros_like(lse) if grad_e is None else grad_e.reshape(-1).float().contiguous()
        grad = torch.empty_like(z)
        grid = (triton.cdiv(n, ROWS_PER_PROGRAM),)
        _backward_kernel[grid](z, t, lse, expectation, g_ce, g_e, grad, n, levels, BLOCK_R=ROWS_PER_PROGRAM,
                               BLOCK_L=triton.next_power_of_2(levels))
        # [B*h*w, L] -> [B, L, h, w] with the levels laid out last (the channels_last layout of the logits)
        return grad.view(b, h, w, levels).permute(0, 3, 1, 2), None
