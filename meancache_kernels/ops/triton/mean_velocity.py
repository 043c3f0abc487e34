"""Fused average-velocity estimate + Euler step of a skipped MeanCache step (docs/design.md section 2):

avg = (z - z_a) / (s - s_a);  jvp = (v_a - avg) / (s - s_a);  v_hat = v_last - jvp * (s_next - s);
z_next = z + (s_next - s) * v_hat          -- reads z, z_a, v_a, v_last once, writes v_hat and z_next once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, elementwise_config, finish_out, flat_input, out_buffer

__all__ = ["mean_velocity_step"]


@triton.jit
def _mean_velocity_step_kernel(
    z_ptr,
    za_ptr,
    va_ptr,
    vl_ptr,
    out_v_ptr,
    out_z_ptr,
    span,  # s - s_anchor
    ds,  # s_next - s
    numel,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    # load native dtype, compute in float32 (the interpreter hands bf16 over as raw bits: cast first)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    za = tl.load(za_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    va = tl.load(va_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    vl = tl.load(vl_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    avg = (z - za) / span
    jvp = (va - avg) / span
    v_hat = vl - jvp * ds
    z_next = z + ds * v_hat
    tl.store(out_v_ptr + offs, v_hat.to(out_v_ptr.dtype.element_ty), mask=mask)
    tl.store(out_z_ptr + offs, z_next.to(out_z_ptr.dtype.element_ty), mask=mask)


def mean_velocity_step(
    z: torch.Tensor,
    z_anchor: torch.Tensor,
    v_anchor: torch.Tensor,
    v_last: torch.Tensor,
    s_anchor: float,
    s: float,
    s_next: float,
    *,
    out_v: torch.Tensor | None = None,
    out_z: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher (arguments already validated by ``ops.mean_velocity_step``): float16/bfloat16/float32 inputs.

    Strided inputs are copied to contiguous ones first; a strided output is written through a contiguous buffer and
    copied back. ``out_z`` may be ``z`` (each element is read before the same program writes it).
    Returns ``(v_hat, z_next)`` shaped like ``z``.
    """
    check_device(z, "mean_velocity_step")
    buf_v = out_buffer(out_v, z.shape, v_last.dtype, z.device)
    buf_z = out_buffer(out_z, z.shape, z.dtype, z.device)
    numel = z.numel()
    if numel == 0:
        return finish_out(out_v, buf_v), finish_out(out_z, buf_z)
    block, warps = elementwise_config(numel)
    grid = (triton.cdiv(numel, block),)
    _mean_velocity_step_kernel[grid](
        flat_input(z),
        flat_input(z_anchor),
        flat_input(v_anchor),
        flat_input(v_last),
        buf_v.view(-1),
        buf_z.view(-1),
        float(s - s_anchor),
        float(s_next - s),
        numel,
        BLOCK=block,
        num_warps=warps,
    )
    return finish_out(out_v, buf_v), finish_out(out_z, buf_z)


@torch.library.custom_op("meancache_kernels::mean_velocity_step", mutates_args=())
def mean_velocity_step_op(
    z: torch.Tensor,
    z_anchor: torch.Tensor,
    v_anchor: torch.Tensor,
    v_last: torch.Tensor,
    s_anchor: float,
    s: float,
    s_next: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.meancache_kernels.mean_velocity_step``: the functional fused step as one opaque node for
    torch.compile (new contiguous outputs; no validation beyond the launcher's)."""
    return mean_velocity_step(z, z_anchor, v_anchor, v_last, s_anchor, s, s_next)


@mean_velocity_step_op.register_fake
def _(z, z_anchor, v_anchor, v_last, s_anchor, s, s_next):
    return z.new_empty(z.shape, dtype=v_last.dtype), z.new_empty(z.shape)
