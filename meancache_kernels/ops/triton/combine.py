"""Fused estimate + Euler step of any estimator (docs/design.md section 2b): a weighted sum of up to four cached tensors

v_hat = sum_k c_k x_k;  z_next = z + ds * v_hat       -- reads z and each x_k once, writes v_hat and z_next once.

The coefficients come from the host (``meancache_kernels.estimators``); the number of terms M is a constexpr.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, elementwise_config, finish_out, flat_input, out_buffer

__all__ = ["combine_step", "combine_step_op"]

MAX_TERMS = 4


@triton.jit
def _combine_step_kernel(
    z_ptr,
    x0_ptr,
    x1_ptr,
    x2_ptr,
    x3_ptr,
    out_v_ptr,
    out_z_ptr,
    c0,
    c1,
    c2,
    c3,
    ds,
    numel,
    M: tl.constexpr,  # terms used (1..4); the unused pointers are never read
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    # native dtype in, float32 math (bf16 arrives as raw bits in the interpreter: cast first). The launcher turns fp
    # fusion off, so acc + c * x rounds the product, then the sum, exactly as the torch reference does.
    acc = c0 * tl.load(x0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if M > 1:
        acc = acc + c1 * tl.load(x1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if M > 2:
        acc = acc + c2 * tl.load(x2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if M > 3:
        acc = acc + c3 * tl.load(x3_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z_next = z + ds * acc  # from v_hat before it is rounded to its storage dtype
    tl.store(out_v_ptr + offs, acc.to(out_v_ptr.dtype.element_ty), mask=mask)
    tl.store(out_z_ptr + offs, z_next.to(out_z_ptr.dtype.element_ty), mask=mask)


def combine_step(
    z: torch.Tensor,
    tensors: list[torch.Tensor],
    coeffs: list[float],
    ds: float,
    *,
    v_dtype: torch.dtype,
    out_v: torch.Tensor | None = None,
    out_z: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher (arguments validated by ``ops.combine_step``): float16/bfloat16/float32 inputs, 1 to 4 terms.

    Strided inputs are copied to contiguous ones first (a tensor given twice is copied once); a strided output is
    written through a contiguous buffer and copied back. An output may be an input exactly (each element is read
    before the same program writes it). Returns ``(v_hat, z_next)`` shaped like ``z``.
    """
    check_device(z, "combine_step")
    buf_v = out_buffer(out_v, z.shape, v_dtype, z.device)
    buf_z = out_buffer(out_z, z.shape, z.dtype, z.device)
    numel = z.numel()
    if numel == 0:
        return finish_out(out_v, buf_v), finish_out(out_z, buf_z)
    m = len(tensors)
    flat: dict[int, torch.Tensor] = {}  # a tensor given twice (z as a term, say) is made contiguous once

    def flat_once(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in flat:
            flat[id(t)] = flat_input(t)
        return flat[id(t)]

    zf = flat_once(z)
    xs = [flat_once(t) for t in tensors]
    xs += [xs[0]] * (MAX_TERMS - m)
    cs = [float(c) for c in coeffs] + [0.0] * (MAX_TERMS - m)
    block, warps = elementwise_config(numel)
    _combine_step_kernel[(triton.cdiv(numel, block),)](
        zf, *xs, buf_v.view(-1), buf_z.view(-1), *cs, float(ds), numel,
        M=m, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
    )  # fmt: skip
    return finish_out(out_v, buf_v), finish_out(out_z, buf_z)


@torch.library.custom_op("meancache_kernels::combine_step", mutates_args=())
def combine_step_op(
    z: torch.Tensor, tensors: list[torch.Tensor], coeffs: list[float], ds: float, v_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.meancache_kernels.combine_step``: the functional fused step as one opaque node for torch.compile
    (new contiguous outputs; no validation beyond the launcher's)."""
    return combine_step(z, list(tensors), list(coeffs), ds, v_dtype=v_dtype)


@combine_step_op.register_fake
def _(z, tensors, coeffs, ds, v_dtype):
    return z.new_empty(z.shape, dtype=v_dtype), z.new_empty(z.shape)
