"""Typed wrappers of MeanCache's per-step ops: validate, then dispatch to the Triton kernel or the torch reference.

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

from ..checks import as_sigmas, check_ops_backend
from . import reference

__all__ = [
    "mean_velocity_step",
    "combine_step",
    "euler_step",
    "velocity_delta",
    "calibration_errors",
    "edge_errors",
]

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
    check_ops_backend(backend)
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


_MAX_TERMS = 4  # tensors of one combine_step (the fused kernel's unrolled loads)


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) bytes ``t`` can touch (an over-estimate for strided views that interleave)."""
    last = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    start = t.data_ptr()
    return start, start + (last + 1) * t.element_size()


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()


def _check_no_overlap(name: str, out: torch.Tensor, inputs: list[tuple[str, torch.Tensor]]) -> None:
    """``out`` may be one of the inputs exactly (an elementwise op reads each element before writing it) but must
    not partly overlap any of them."""
    if out.numel() == 0:
        return
    lo, hi = _byte_range(out)
    for in_name, t in inputs:
        if t.numel() == 0 or _same_view(out, t):
            continue
        t_lo, t_hi = _byte_range(t)
        if lo < t_hi and t_lo < hi:
            raise ValueError(
                f"{name} overlaps {in_name} without being the same view of it (same data pointer, dtype and strides); "
                "an output may be an input exactly or share no memory with it"
            )


def _check_terms(tensors, coeffs, z: torch.Tensor) -> tuple[list[torch.Tensor], list[float]]:
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"tensors must be a list or tuple of 1 to {_MAX_TERMS} tensors, got {type(tensors).__name__}")
    if not 1 <= len(tensors) <= _MAX_TERMS:
        raise ValueError(f"tensors must hold 1 to {_MAX_TERMS} tensors (the fused kernel's limit), got {len(tensors)}")
    for k, t in enumerate(tensors):
        _check_tensor(f"tensors[{k}]", t, z)
    if isinstance(coeffs, (str, bytes, torch.Tensor)) or not hasattr(coeffs, "__len__"):
        raise TypeError(f"coeffs must be a list or tuple of Python floats (host scalars), got {type(coeffs).__name__}")
    if len(coeffs) != len(tensors):
        raise ValueError(f"coeffs must hold one number per tensor ({len(tensors)}), got {len(coeffs)}")
    return list(tensors), [_check_scalar(f"coeffs[{k}]", c) for k, c in enumerate(coeffs)]


def combine_step(
    z: torch.Tensor,
    tensors,
    coeffs,
    ds: float,
    *,
    v_dtype: torch.dtype | None = None,
    out_v: torch.Tensor | None = None,
    out_z: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate of a skipped step as a linear combination of cached tensors, and the Euler step, in one pass.

    ``v_hat = sum_k coeffs[k] * tensors[k]`` (k < M, 1 <= M <= 4), ``z_next = z + ds * v_hat``. Every estimator of
    docs/design.md section 2b is such a combination with host-side coefficients; for example the paper's jvp rule is
    M = 4 over ``(v_last, v_anchor, z, z_anchor)`` with coefficients ``(1, -ds/d, ds/d**2, -ds/d**2)``,
    d = s - s_anchor (``mean_velocity_step`` evaluates it as written, for bit-compatibility with the release).

    Args:
        z: latents at the current step, any shape.
        tensors: list or tuple of 1 to 4 tensors of z's shape and device, any float dtype each (they may differ);
            the same tensor may appear more than once, and z itself may be a term.
        coeffs: one finite Python float per tensor (host scalars: no device synchronisation).
        ds: step size ``s_next - s``.
        v_dtype: dtype of v_hat; None = ``tensors[0].dtype``.
        out_v, out_z: optional outputs of z's shape (v_dtype and z's dtype). Each may be an input exactly (the same
            view, e.g. ``out_z=z`` for an in-place update) but must not otherwise share memory with an input or with
            the other output.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``(v_hat, z_next)``: v_hat in v_dtype, z_next in z's dtype. Arithmetic in float32: ``acc = c_0 x_0``, then
        ``acc = acc + c_k x_k`` in order (no fused multiply-add), ``z_next = z + ds * acc`` from acc before it is
        rounded to v_dtype; float64 when z or a term is float64 (the torch reference). The kernel reads each
        distinct input once per element and writes the two outputs once; strided inputs are first copied to
        contiguous ones.
    """
    _check_tensor("z", z)
    tensors, coeffs = _check_terms(tensors, coeffs, z)
    ds = _check_scalar("ds", ds)
    if v_dtype is None:
        v_dtype = tensors[0].dtype
    elif v_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"v_dtype must be None or float16, bfloat16, float32 or float64, got {v_dtype!r}")
    inputs = [("z", z)] + [(f"tensors[{k}]", t) for k, t in enumerate(tensors)]
    if out_v is not None:
        _check_tensor("out_v", out_v, z)
        if out_v.dtype != v_dtype:
            raise TypeError(f"out_v must have v_dtype {v_dtype}, got {out_v.dtype}")
        _check_no_overlap("out_v", out_v, inputs)
    if out_z is not None:
        _check_tensor("out_z", out_z, z)
        if out_z.dtype != z.dtype:
            raise TypeError(f"out_z must have z's dtype {z.dtype}, got {out_z.dtype}")
        _check_no_overlap("out_z", out_z, inputs)
    if out_v is not None and out_z is not None and out_v.numel():
        (lo, hi), (z_lo, z_hi) = _byte_range(out_v), _byte_range(out_z)
        if lo < z_hi and z_lo < hi:
            raise ValueError("out_v and out_z must not share memory")
    impl = _kernels() if _resolve_backend(backend, z, *tensors, op="combine_step") == "triton" else reference
    return impl.combine_step(z, tensors, coeffs, ds, v_dtype=v_dtype, out_v=out_v, out_z=out_z)


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
    """Edge errors of the estimator rolled out from full-step trajectories (docs/design.md section 2, edge cost).

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


_MAX_SLOTS = 8  # terms of one edge_errors row (the kernel's unrolled gathers)


def edge_errors(
    sources: torch.Tensor, index: torch.Tensor, coef: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Mean absolute value of many linear combinations of trajectory tensors, per sample (polynomial calibration).

    ``err[e, s] = mean_d | sum_m coef[e, m] * sources[index[e, m], s, d] |`` over the trailing elements d of one
    sample. For polynomial estimators the rolled-out state of a skipped edge is such a combination of true states
    and velocities, so one call measures every edge (rows e) on every calibration sample (s).

    Args:
        sources: [T, S, ...] tensors of S samples each (e.g. ``torch.cat([z, v])``: N + 1 states, N velocities);
            float16, bfloat16, float32 or float64, at least one element per sample.
        index: int64 (or int32) [E, M], 1 <= M <= 8: rows of ``sources`` (dim 0), or -1 for an unused slot.
        coef: float64 (or float32) [E, M]: the weights; unused slots' values are ignored (NaN included), the others
            must be finite. index and coef may be on the CPU or on sources' device.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        err, float64 [E, S] on sources' device. Arithmetic in float32 (coefficients rounded to float32; float64
        when sources is float64: the torch reference). The kernel gathers each row block once per edge and adds
        per-block sums atomically, so the last bits may vary from run to run on a GPU.
    """
    _check_tensor("sources", sources)
    if sources.dim() < 2:
        raise ValueError(f"sources must have shape [T, S, ...] (at least 2 dims), got {tuple(sources.shape)}")
    num_rows, num_samples = sources.shape[0], sources.shape[1]
    if num_rows < 1 or num_samples < 1 or sources[0, 0].numel() < 1:
        raise ValueError(
            f"sources must have T >= 1 rows, S >= 1 samples and >= 1 element per sample, got {tuple(sources.shape)}"
        )
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"index must be an int64 torch.Tensor of shape [E, M], got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"index must be int64 (or int32), got {index.dtype}")
    if index.dim() != 2 or not 1 <= index.shape[1] <= _MAX_SLOTS:
        raise ValueError(f"index must have shape [E, M] with 1 <= M <= {_MAX_SLOTS}, got {tuple(index.shape)}")
    if not isinstance(coef, torch.Tensor):
        raise TypeError(f"coef must be a float64 torch.Tensor of shape [E, M], got {type(coef).__name__}")
    if coef.dtype not in (torch.float64, torch.float32):
        raise TypeError(f"coef must be float64 (or float32), got {coef.dtype}")
    if coef.shape != index.shape:
        raise ValueError(f"coef must have index's shape {tuple(index.shape)}, got {tuple(coef.shape)}")
    for name, t in (("index", index), ("coef", coef)):
        if t.device != sources.device and t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU or on sources' device {sources.device}, got {t.device}")
    index = index.to(device=sources.device, dtype=torch.int64).contiguous()
    coef = coef.to(device=sources.device, dtype=torch.float64).contiguous()
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < -1 or hi >= num_rows:
            bad = lo if lo < -1 else hi
            raise ValueError(f"index must hold rows 0..{num_rows - 1} of sources or -1 (unused), got {bad}")
        if not bool(torch.isfinite(coef[index >= 0]).all()):
            raise ValueError("coef must be finite in every used slot (index >= 0)")
    impl = _kernels() if _resolve_backend(backend, sources, op="edge_errors") == "triton" else reference
    return impl.edge_errors(sources, index, coef)
