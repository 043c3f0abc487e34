"""Fused Euler step of flow-matching sampling: ``z_next = z + ds * v`` with ds = s_next - s (one read of z and v,
one write; v may be in another dtype than z, e.g. float32 latents with bfloat16 velocities)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, elementwise_config, finish_out, flat_input, out_buffer

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
    """Launcher (arguments validated by ``ops.euler_step``); returns z_next shaped like z.

    ``out`` may be ``z``; a strided ``out`` is written through a contiguous buffer and copied back.
    """
    check_device(z, "euler_step")
    buf = out_buffer(out, z.shape, z.dtype, z.device)
    numel = z.numel()
    if numel == 0:
        return finish_out(out, buf)
    block, warps = elementwise_config(numel)
    _euler_step_kernel[(triton.cdiv(numel, block),)](
        flat_input(z), flat_input(v), buf.view(-1), float(ds), numel, BLOCK=block, num_warps=warps
    )
    return finish_out(out, buf)
