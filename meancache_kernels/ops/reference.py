"""Eager torch references for every op (the contract the fused kernels are tested against).

Formulas (DESIGN.md section 2), at a skipped step with anchor a = i - K:

    avg    = (z - z_a) / (s - s_a)          realised average velocity on [s_a, s]
    jvp    = (v_a - avg) / (s - s_a)        finite-difference JVP (MeanFlow identity)
    v_hat  = v_last - jvp * (s_next - s)    average-velocity estimate on [s, s_next]
    z_next = z + (s_next - s) * v_hat       Euler step

Arithmetic runs in float32, or float64 when any tensor input is float64; results are stored in the inputs'
native dtypes (v_hat like ``v_last``, z_next like ``z``).
"""

from __future__ import annotations

import torch

__all__ = ["compute_dtype", "mean_velocity_step", "euler_step"]


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is always upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


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
    """Reference for :func:`meancache_kernels.ops.mean_velocity_step`; returns ``(v_hat, z_next)``."""
    cd = compute_dtype(z, z_anchor, v_anchor, v_last)
    span = s - s_anchor
    ds = s_next - s
    zf = z.to(cd)
    avg = (zf - z_anchor.to(cd)) / span
    jvp = (v_anchor.to(cd) - avg) / span
    v_hat = v_last.to(cd) - jvp * ds
    z_next = zf + ds * v_hat
    v_res = v_hat.to(v_last.dtype)
    z_res = z_next.to(z.dtype)
    if out_v is not None:
        out_v.copy_(v_res)
        v_res = out_v
    if out_z is not None:
        out_z.copy_(z_res)
        z_res = out_z
    return v_res, z_res


def euler_step(z: torch.Tensor, v: torch.Tensor, ds: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``z + ds * v`` computed in float32 (float64 kept), stored in ``z``'s dtype."""
    cd = compute_dtype(z, v)
    res = (z.to(cd) + ds * v.to(cd)).to(z.dtype)
    if out is not None:
        out.copy_(res)
        return out
    return res
