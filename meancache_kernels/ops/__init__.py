"""Functional ops of MeanCache's per-step arithmetic.

Each op validates its arguments, then dispatches: ``backend="auto"`` uses the fused Triton kernel for CUDA
tensors when Triton is importable and the eager torch reference (``ops/reference.py``) otherwise;
``backend="torch"`` always uses the reference; ``backend="triton"`` forces the kernel.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from . import reference

__all__ = ["mean_velocity_step", "euler_step", "reference"]

_BACKENDS = ("auto", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, t, like: torch.Tensor | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if like is not None:
        if t.shape != like.shape:
            raise ValueError(f"{name} must have the shape of z {tuple(like.shape)}, got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on z's device {like.device}, got {t.device}")


def _check_scalar(name: str, x) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def _check_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return backend


def _resolve_backend(backend: str, z: torch.Tensor) -> str:
    _check_backend(backend)
    if backend == "auto":
        return "torch"
    if backend == "triton":
        raise RuntimeError("backend='triton' is not available in this build: the Triton kernels are not installed")
    return backend


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
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-velocity estimate and Euler step of a skipped step, in one pass.

    ``avg = (z - z_anchor) / (s - s_anchor)``, ``jvp = (v_anchor - avg) / (s - s_anchor)``,
    ``v_hat = v_last - jvp * (s_next - s)``, ``z_next = z + (s_next - s) * v_hat``.

    Args:
        z, z_anchor: latents at s and at s_anchor, any shape (same for all four tensors).
        v_anchor, v_last: velocities used at the anchor step and at the step before this one.
        s_anchor, s, s_next: sigmas, with ``s_anchor != s``.
        out_v, out_z: optional outputs (``out_z`` may alias ``z``).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``(v_hat, z_next)``: v_hat in ``v_last``'s dtype, z_next in ``z``'s dtype; arithmetic in float32
        (float64 when an input is float64).
    """
    _check_tensor("z", z)
    _check_tensor("z_anchor", z_anchor, z)
    _check_tensor("v_anchor", v_anchor, z)
    _check_tensor("v_last", v_last, z)
    s_anchor = _check_scalar("s_anchor", s_anchor)
    s = _check_scalar("s", s)
    s_next = _check_scalar("s_next", s_next)
    if s == s_anchor:
        raise ValueError(f"s_anchor and s must differ (the JVP divides by s - s_anchor), both are {s}")
    if out_v is not None:
        _check_tensor("out_v", out_v, z)
        if out_v.dtype != v_last.dtype:
            raise TypeError(f"out_v must have v_last's dtype {v_last.dtype}, got {out_v.dtype}")
    if out_z is not None:
        _check_tensor("out_z", out_z, z)
        if out_z.dtype != z.dtype:
            raise TypeError(f"out_z must have z's dtype {z.dtype}, got {out_z.dtype}")
    _resolve_backend(backend, z)
    return reference.mean_velocity_step(
        z, z_anchor, v_anchor, v_last, s_anchor, s, s_next, out_v=out_v, out_z=out_z
    )


def euler_step(
    z: torch.Tensor, v: torch.Tensor, ds: float, *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """``z + ds * v`` in float32 (float64 kept), stored in z's dtype; ``out`` may alias ``z``."""
    _check_tensor("z", z)
    _check_tensor("v", v, z)
    ds = _check_scalar("ds", ds)
    if out is not None:
        _check_tensor("out", out, z)
        if out.dtype != z.dtype:
            raise TypeError(f"out must have z's dtype {z.dtype}, got {out.dtype}")
    _resolve_backend(backend, z)
    return reference.euler_step(z, v, ds, out=out)
