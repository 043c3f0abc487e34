"""Relative-change metric of consecutive velocities in one pass: ``(sum |a - b|, sum |b|)``.

Each program reduces one block in float32 and writes its two partial sums; the partials are summed on the device
by torch (deterministic: no atomics), so the result never leaves the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, elementwise_config, flat_input

__all__ = ["velocity_delta"]


@triton.jit
def _velocity_delta_kernel(a_ptr, b_ptr, partial_ptr, numel, num_blocks, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # masked lanes load 0 for both, so they add 0 to both sums
    tl.store(partial_ptr + pid, tl.sum(tl.abs(a - b), axis=0))
    tl.store(partial_ptr + num_blocks + pid, tl.sum(tl.abs(b), axis=0))


def velocity_delta(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher (arguments validated by ``ops.velocity_delta``); returns two 0-d float32 tensors on the device."""
    check_device(a, "velocity_delta")
    numel = a.numel()
    if numel == 0:
        zero = torch.zeros((), dtype=torch.float32, device=a.device)
        return zero, zero.clone()
    block, warps = elementwise_config(numel)
    num_blocks = triton.cdiv(numel, block)
    partial = torch.empty((2, num_blocks), dtype=torch.float32, device=a.device)
    _velocity_delta_kernel[(num_blocks,)](
        flat_input(a), flat_input(b), partial, numel, num_blocks, BLOCK=block, num_warps=warps
    )
    sums = partial.sum(dim=1)
    return sums[0], sums[1]
