"""Eager torch references for every op (the contract the fused kernels are tested against).

Formulas (docs/design.md section 2), at a skipped step with anchor a = i - K:

    avg    = (z - z_a) / (s - s_a)          realised average velocity on [s_a, s]
    jvp    = (v_a - avg) / (s - s_a)        finite-difference JVP (MeanFlow identity)
    v_hat  = v_last - jvp * (s_next - s)    average-velocity estimate on [s, s_next]
    z_next = z + (s_next - s) * v_hat       Euler step

Arithmetic runs in float32, or float64 when any tensor input is float64; results are stored in the inputs'
native dtypes (v_hat like ``v_last``, z_next like ``z``).

Every estimator as one linear combination (docs/design.md section 2b): :func:`combine_step` evaluates
v_hat = sum_k c_k x_k and z_next = z + ds * v_hat.

Calibration (docs/design.md section 2, edge cost): :func:`calibration_errors` rolls the estimator out from the true
state z_i of a full-step trajectory and records, for every edge end j, mean |(zhat_j - z_j) / (s_j - s_i)|.
:func:`edge_errors` gives, for polynomial estimators, mean |sum_m c_m x_m| of many coefficient rows at once.
"""

from __future__ import annotations

import torch

__all__ = [
    "compute_dtype",
    "mean_velocity_step",
    "combine_step",
    "euler_step",
    "velocity_delta",
    "calibration_errors",
    "edge_errors",
]


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is always upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _store(v_res: torch.Tensor, z_res: torch.Tensor, out_v, out_z) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_hat, z_next), copied into the optional outputs."""
    if out_v is not None:
        v_res = out_v.copy_(v_res)
    if out_z is not None:
        z_res = out_z.copy_(z_res)
    return v_res, z_res


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
    zf = z.to(cd)  # may be z itself: never written
    # The formula above, evaluated in place in one working buffer (two latent-sized allocations instead of six; on
    # CPU fresh allocations dominate the cost). Every in-place step rounds exactly as its out-of-place form:
    # -x + y == y - x in IEEE arithmetic, and the mixed-dtype in-place ops upcast exactly.
    w = zf - z_anchor.to(cd)
    w.div_(span)  # avg
    w.neg_().add_(v_anchor).div_(span)  # jvp = (v_a - avg) / span
    w.mul_(ds).neg_().add_(v_last)  # v_hat = v_last - jvp * ds
    z_next = torch.mul(w, ds).add_(zf)  # z + ds * v_hat
    return _store(w.to(v_last.dtype), z_next.to(z.dtype), out_v, out_z)


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
    """Reference for :func:`meancache_kernels.ops.combine_step`; returns ``(v_hat, z_next)``.

    ``acc = c_0 x_0``, then ``acc = acc + c_k x_k`` for k = 1..M-1 (a rounded product, then a rounded sum: no fused
    multiply-add, as the kernel), ``z_next = z + ds * acc`` from the unrounded acc; v_hat = acc in ``v_dtype``.
    """
    cd = compute_dtype(z, *tensors)
    # In place in one working buffer plus one scratch buffer (the product of each later term, then z_next). torch's
    # ``add_(x, alpha=c)`` may fuse the multiply-add on CPU, so each product is rounded in the scratch buffer first;
    # copy_ and the mixed-dtype in-place add upcast exactly.
    acc = tensors[0].to(cd, copy=True).mul_(coeffs[0])
    scratch = torch.empty_like(acc) if len(tensors) > 1 else None
    for x, c in zip(tensors[1:], coeffs[1:]):
        acc.add_(scratch.copy_(x).mul_(c))
    z_next = torch.mul(acc, ds, out=scratch) if scratch is not None else torch.mul(acc, ds)
    z_next.add_(z)  # z + ds * v_hat
    return _store(acc.to(v_dtype), z_next.to(z.dtype), out_v, out_z)


def euler_step(z: torch.Tensor, v: torch.Tensor, ds: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``z + ds * v`` computed in float32 (float64 kept), stored in ``z``'s dtype."""
    cd = compute_dtype(z, v)
    res = (z.to(cd) + ds * v.to(cd)).to(z.dtype)
    if out is not None:
        out.copy_(res)
        return out
    return res


def velocity_delta(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum |a - b|, sum |b|)`` as 0-d tensors on the inputs' device, accumulated in float32 (float64 kept)."""
    cd = compute_dtype(a, b)
    bf = b.to(cd)
    return (a.to(cd) - bf).abs().sum(), bf.abs().sum()


def calibration_errors(
    z: torch.Tensor, v: torch.Tensor, sigmas: list[float], max_span: int, max_skip: int
) -> torch.Tensor:
    """Edge errors E[s, K, i, j] of the estimator rolled out from a full-step trajectory (no validation here).

    ``z``: [N+1, S, ...] true states, ``v``: [N, S, ...] the velocities of every step, ``sigmas``: N + 1 floats.
    For each span K in 1..max_span and start i, step i is computed (zhat_{i+1} = z_{i+1}); every later step m is
    skipped with K' = min(K, m), anchor a = m - K' (true values for a <= i, rolled-out ones after i) and
    v_last = v_i when m - 1 == i else vhat_{m-1}. Each (i, K) is rolled once up to min(N, i + 1 + max_skip) and
    every end j on the way is recorded. Chain edges E[:, K, i, i+1] are 0; entries that are no edge are +inf.

    Returns:
        E of shape [S, max_span + 1, N + 1, N + 1], in the arithmetic dtype: float32, or float64 when z or v is
        float64.
    """
    cd = compute_dtype(z, v)
    n = z.shape[0] - 1
    num_samples = z.shape[1]
    zf = z.reshape(n + 1, num_samples, -1).to(cd)
    vf = v.reshape(n, num_samples, -1).to(cd)
    s = [float(x) for x in sigmas]
    err = torch.full((num_samples, max_span + 1, n + 1, n + 1), float("inf"), dtype=cd, device=z.device)
    for i in range(n):
        err[:, :, i, i + 1] = 0.0
    for k in range(1, max_span + 1):
        for i in range(n - 1):
            j_end = min(n, i + 1 + max_skip)
            # rolled-out (zhat_m, vhat_m) for m > i; entries <= i are read from the true trajectory
            z_hat = {i + 1: zf[i + 1]}
            v_hat: dict[int, torch.Tensor] = {}
            for m in range(i + 1, j_end):
                kk = min(k, m)
                a = m - kk
                z_a, v_a = (zf[a], vf[a]) if a <= i else (z_hat[a], v_hat[a])
                v_last = vf[i] if m - 1 == i else v_hat[m - 1]
                span = s[m] - s[a]
                ds = s[m + 1] - s[m]
                avg = (z_hat[m] - z_a) / span
                jvp = (v_a - avg) / span
                v_hat[m] = v_last - jvp * ds
                z_hat[m + 1] = z_hat[m] + ds * v_hat[m]
                err[:, k, i, m + 1] = ((z_hat[m + 1] - zf[m + 1]) / (s[m + 1] - s[i])).abs().mean(dim=1)
    return err


_EDGE_CHUNK_ELEMENTS = 1 << 22  # elements of one [edges, S, D] working tensor of edge_errors (16 MB in float32)


def edge_errors(sources: torch.Tensor, index: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``err[e, s] = mean_d | sum_m coef[e, m] * sources[index[e, m], s, d] |`` (no validation here).

    ``sources``: [T, S, ...]; ``index``: int64 [E, M] on sources' device, -1 = unused slot (its coefficient is
    ignored, NaN included); ``coef``: float64 [E, M] on sources' device. Arithmetic in float32 (coefficients rounded
    to float32), or float64 when sources is float64; the result is float64 [E, S]. Edges are processed in chunks so
    that no working tensor exceeds about 4M elements (never [E, S, D] at once). Each chunk is one matrix product of
    its coefficients (summed per distinct source, a few dozen for consecutive edges) with the sources it reads.
    """
    cd = compute_dtype(sources)
    num_rows, num_samples = sources.shape[0], sources.shape[1]
    flat = sources.reshape(num_rows, -1)
    numel = flat.shape[1] // num_samples if num_samples else 0
    num_edges = index.shape[0]
    err = torch.empty((num_edges, num_samples), dtype=torch.float64, device=sources.device)
    chunk = max(1, _EDGE_CHUNK_ELEMENTS // max(1, num_samples * numel))
    for e0 in range(0, num_edges, chunk):
        idx = index[e0 : e0 + chunk]
        used = idx >= 0
        rows = idx.shape[0]
        if not bool(used.any()):
            err[e0 : e0 + chunk] = 0.0
            continue
        uniq = torch.unique(idx[used])  # only the sources used slots read (an unused slot reads nothing, not 0 * x)
        inv = torch.searchsorted(uniq, idx.clamp(min=0)).clamp_(max=uniq.numel() - 1)
        c = torch.where(used, coef[e0 : e0 + chunk], 0.0).to(cd)  # unused slots add 0 to some column
        mat = torch.zeros((rows, uniq.numel()), dtype=cd, device=sources.device).scatter_add_(1, inv, c)
        prod = torch.mm(mat, flat.index_select(0, uniq).to(cd))
        err[e0 : e0 + chunk] = prod.abs_().view(rows, num_samples, numel).sum(dim=2).double().div_(numel)
    return err
