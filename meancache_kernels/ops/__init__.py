"""Functional ops of MeanCache's per-step arithmetic.

Each op validates its arguments, then dispatches: ``backend="auto"`` uses the fused Triton kernel for CUDA
tensors when Triton is importable and the eager torch reference (``ops/reference.py``) otherwise;
``backend="torch"`` always uses the reference; ``backend="triton"`` forces the kernel (CUDA tensors, or CPU
tensors through the Triton interpreter when ``TRITON_INTERPRET=1``; a clear error otherwise). The kernels compute
in float32: float64 inputs always take the reference, whatever the backend. Triton is imported lazily, on the
first kernel call, never at package import.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import torch

from .._utils import as_sigmas
from . import reference

__all__ = ["mean_velocity_step", "euler_step", "velocity_delta", "calibration_errors", "reference"]

_BACKENDS = ("auto", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, t, like: torch.Tensor | None = None, like_name: str = "z") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if like is not None:
        if t.shape != like.shape:
            raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on {like_name}'s device {like.device}, got {t.device}")


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


def _triton_importable() -> bool:
    """Whether ``import triton`` works (checked once, lazily: never at package import)."""
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401
        except Exception:
            _TRITON_OK = False
        else:
            _TRITON_OK = True
    return _TRITON_OK


_TRITON_OK: bool | None = None


def _resolve_backend(backend: str, z: torch.Tensor, *others: torch.Tensor, op: str = "op") -> str:
    """``"torch"`` or ``"triton"`` for tensors like ``z``.

    float64 inputs always take the torch reference (the kernels compute in float32). ``"auto"`` picks Triton for
    CUDA tensors when Triton imports. ``"triton"`` runs on CUDA tensors, or on CPU tensors through the Triton
    interpreter when ``TRITON_INTERPRET=1``; anything else is a clear error.
    """
    _check_backend(backend)
    if backend == "torch" or any(t.dtype == torch.float64 for t in (z, *others)):
        return "torch"
    if backend == "auto":
        return "triton" if z.device.type == "cuda" and _triton_importable() else "torch"
    if z.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError(
            f"{op}: backend='triton' got CPU tensors; the Triton kernels run on CUDA tensors, or on CPU only through "
            "the Triton interpreter (export TRITON_INTERPRET=1 before triton is imported). Use backend='auto' or "
            "'torch' for the eager reference."
        )
    if z.device.type not in ("cpu", "cuda"):
        raise RuntimeError(
            f"{op}: backend='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), got {z.device}"
        )
    if not _triton_importable():
        raise ImportError(f"{op}: backend='triton' needs Triton, which is not importable here: pip install triton")
    return "triton"


def _kernels():
    from . import triton as kernels  # imports triton itself; only reached after _resolve_backend said "triton"

    return kernels


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
        (float64 when an input is float64: the torch reference). float16, bfloat16 and float32 inputs may be
        mixed (e.g. float32 latents with bfloat16 velocities). The kernel reads the four inputs once and writes
        the two outputs once; strided inputs are first copied to contiguous ones.
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
    impl = reference
    if _resolve_backend(backend, z, z_anchor, v_anchor, v_last, op="mean_velocity_step") == "triton":
        impl = _kernels()
    return impl.mean_velocity_step(z, z_anchor, v_anchor, v_last, s_anchor, s, s_next, out_v=out_v, out_z=out_z)


def euler_step(
    z: torch.Tensor, v: torch.Tensor, ds: float, *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Euler step ``z + ds * v`` in float32 (float64 inputs: the torch reference), stored in z's dtype.

    ``v`` may have another dtype than ``z``; ``out`` (z's dtype and shape) may alias ``z``.
    """
    _check_tensor("z", z)
    _check_tensor("v", v, z)
    ds = _check_scalar("ds", ds)
    if out is not None:
        _check_tensor("out", out, z)
        if out.dtype != z.dtype:
            raise TypeError(f"out must have z's dtype {z.dtype}, got {out.dtype}")
    impl = _kernels() if _resolve_backend(backend, z, v, op="euler_step") == "triton" else reference
    return impl.euler_step(z, v, ds, out=out)


def velocity_delta(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Relative-change metric of consecutive velocities: ``(sum |a - b|, sum |b|)`` in one pass.

    Args:
        a, b: tensors of the same shape and device, any float dtype (they may differ).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        Two 0-d tensors on the inputs' device (no host synchronisation), accumulated in float32 (float64 when an
        input is float64: the torch reference). The relative change is ``delta / norm``. The kernel reduces each
        block and sums the per-block partials on the device (deterministic, no atomics).
    """
    _check_tensor("a", a)
    _check_tensor("b", b, a, "a")
    impl = _kernels() if _resolve_backend(backend, a, b, op="velocity_delta") == "triton" else reference
    return impl.velocity_delta(a, b)


def _check_count(name: str, x) -> int:
    if isinstance(x, bool) or not hasattr(x, "__index__"):
        raise TypeError(f"{name} must be an integer, got {x!r} ({type(x).__name__})")
    x = int(x.__index__())
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return x


def calibration_errors(
    z: torch.Tensor, v: torch.Tensor, sigmas, max_span: int, max_skip: int, *, backend: str = "auto"
) -> torch.Tensor:
    """Edge errors of the estimator rolled out from full-step trajectories (DESIGN.md section 2, edge cost).

    For span K (1..max_span), start i and end j (i + 2 <= j <= min(N, i + 1 + max_skip)): step i is computed from
    the true state (zhat_{i+1} = z_{i+1}), steps i+1..j-1 are skipped with the official estimator (K' = min(K, m),
    anchor a = m - K', true history for a <= i, the rolled-out one after i), and

        E[s, K, i, j] = mean over the elements of sample s of |(zhat_j - z_j) / (s_j - s_i)|.

    Chain edges ``E[:, K, i, i+1]`` are 0 for every K (K = 0 included); every other entry (K = 0, j <= i,
    j > i + 1 + max_skip) is +inf.

    Args:
        z: [N+1, S, ...] true full-step trajectories (z[0] the initial latents, z[N] the final ones) of S samples;
            trailing dims are the elements of one sample.
        v: [N, S, ...] the velocity used at every step (z[m+1] = z[m] + (s[m+1] - s[m]) v[m] up to rounding).
        sigmas: N + 1 strictly decreasing sigmas ending at 0.
        max_span: largest JVP span K (>= 1).
        max_skip: largest number of consecutive skipped steps (>= 1).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        E of shape [S, max_span + 1, N + 1, N + 1] on z's device: float32, computed in float32 from float16,
        bfloat16 or float32 inputs; float64 (arithmetic and result) when z or v is float64, which always takes the
        torch reference. The kernel runs every (i, K) in one launch; its per-j sums are accumulated atomically,
        so the last bits may vary from run to run on a GPU.
    """
    _check_tensor("z", z)
    _check_tensor("v", v)
    if z.dim() < 2:
        raise ValueError(f"z must have shape [N+1, S, ...] (at least 2 dims), got {tuple(z.shape)}")
    n = z.shape[0] - 1
    if n < 1 or z.shape[1] < 1 or z[0, 0].numel() < 1:
        raise ValueError(f"z must have N + 1 >= 2 states, S >= 1 samples and >= 1 element, got {tuple(z.shape)}")
    if tuple(v.shape) != (n,) + tuple(z.shape[1:]):
        raise ValueError(
            f"v must have shape [N, S, ...] = {(n,) + tuple(z.shape[1:])} for z of shape "
            f"{tuple(z.shape)}, got {tuple(v.shape)}"
        )
    if v.device != z.device:
        raise ValueError(f"v must be on z's device {z.device}, got {v.device}")
    s = as_sigmas(sigmas, n)
    max_span = _check_count("max_span", max_span)
    max_skip = _check_count("max_skip", max_skip)
    impl = _kernels() if _resolve_backend(backend, z, v, op="calibration_errors") == "triton" else reference
    return impl.calibration_errors(z, v, s, max_span, max_skip)
