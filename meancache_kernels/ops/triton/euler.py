"""Fused Euler step of flow-matching sampling: ``z_next = z + ds * v`` with ds = s_next - s (one read of z and v,
one write; v may be in another dtype than z, e.g. float32 latents with bfloat16 velocities)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, check_out, elementwise_config, flat_input

__all__ = ["euler_step"]


@triton.jit
def _euler_step_kernel(z_ptr, v_ptr, out_ptr, ds, numel, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (z + ds * v).to(out_ptr.dtype.element_ty), mask=mask)


def euler_step(z: torch.Tensor, v: torch.Tensor, ds: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launcher (arguments validated by ``ops.euler_step``); ``out`` may be ``z``; returns z_next shaped like z."""
    check_device(z, "euler_step")
    if out is None:
        out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    o = check_out("out", out)
    numel = z.numel()
    if numel == 0:
        return out
    block, warps = elementwise_config(numel)
    _euler_step_kernel[(triton.cdiv(numel, block),)](
        flat_input(z), flat_input(v), o, float(ds), numel, BLOCK=block, num_warps=warps
    )
    return out
