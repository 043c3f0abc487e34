"""Calibration: edge costs L_K(i, j) of the MeanCache estimator from full-step trajectories, as a :class:`Profile`.

For a full-step trajectory (every step computed) the cost of edge i -> j with span K is (docs/design.md section 2)

    L_K(i, j) = mean | (zhat_j - z_j) / (s_j - s_i) |    averaged over calibration samples,

zhat being the estimator rolled out from the true state z_i with the true history before i over the skipped steps
i+1..j-1 (``ops.calibration_errors``). Chain edges (j = i + 1) cost 0; edges that skip more than ``max_skip`` steps
are +inf (not allowed). The profile also measures how stable the costs are across samples (the paper assumes it):
the per-edge coefficient of variation and the mean pairwise Spearman rank correlation of the per-sample cost
tensors over the allowed edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from . import ops
from .checks import as_count, as_sigmas
from .profile import _FORMAT_VERSION, Profile

__all__ = ["calibrate", "profile_from_trajectories"]


# ---------------------------------------------------------------------------------------------------- statistics
def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (0-based) along dim 1, ties given the average of their positions (as Spearman's rho needs)."""
    s, m = x.shape
    vals, order = x.sort(dim=1, stable=True)
    starts = torch.ones_like(vals, dtype=torch.bool)
    starts[:, 1:] = vals[:, 1:] != vals[:, :-1]
    gid = starts.long().cumsum(1) - 1
    pos = torch.arange(m, dtype=torch.float64, device=x.device).expand(s, m)
    sums = torch.zeros(s, m, dtype=torch.float64, device=x.device).scatter_add_(1, gid, pos)
    cnt = torch.zeros(s, m, dtype=torch.float64, device=x.device).scatter_add_(1, gid, torch.ones_like(pos))
    avg = sums.gather(1, gid) / cnt.gather(1, gid)
    return torch.empty_like(avg).scatter_(1, order, avg)


class _Accumulator:
    """Running per-edge mean / variance (Chan's parallel update, float64) and the sum of standardised rank vectors,
    so memory stays one batch of costs whatever the number of samples."""

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None
        self.allowed = None
        self.chain = None
        self.rank_sum = None
        self.rank_count = 0

    def add(self, err: torch.Tensor) -> None:
        err = err.detach().to(torch.float64)
        m = err.shape[0]
        n = err.shape[2] - 1
        allowed = torch.isfinite(err[0])
        idx = torch.arange(n, device=err.device)
        chain = torch.zeros_like(allowed)
        chain[:, idx, idx + 1] = True
        if self.allowed is None:
            self.allowed = allowed
            self.chain = chain
            self.mean = torch.zeros_like(err[0])
            self.m2 = torch.zeros_like(err[0])
        elif self.allowed.shape != allowed.shape:
            raise ValueError(
                f"every trajectory batch must give costs of shape {tuple(self.allowed.shape)}, "
                f"got {tuple(allowed.shape)}"
            )
        if not bool((torch.isfinite(err) == allowed).all()):
            raise ValueError("calibration errors are non-finite on edges that are allowed (overflow in the rollout?)")
        x = torch.where(allowed, err, torch.zeros((), dtype=err.dtype, device=err.device))
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        tot = self.count + m
        delta = mb - self.mean
        self.mean = self.mean + delta * (m / tot)
        self.m2 = self.m2 + m2b + delta**2 * (self.count * m / tot)
        self.count = tot
        # Spearman: standardised ranks u_s of each sample's allowed non-chain costs; mean pairwise correlation is
        # (|sum_s u_s|^2 - #s) / (#s (#s - 1)) because every u_s has unit norm.
        edges = allowed & ~chain
        if int(edges.sum()) >= 2:
            r = _average_ranks(x[:, edges])
            u = r - r.mean(dim=1, keepdim=True)
            norm = u.norm(dim=1, keepdim=True)
            ok = norm.squeeze(1) > 0  # a sample whose costs are all equal has no ranking
            u = u[ok] / norm[ok]
            if self.rank_sum is None:
                self.rank_sum = torch.zeros(u.shape[1], dtype=torch.float64, device=u.device)
            self.rank_sum += u.sum(0)
            self.rank_count += int(ok.sum())

    def result(self) -> tuple[np.ndarray, np.ndarray, dict]:
        allowed = self.allowed.cpu().numpy()
        chain = self.chain.cpu().numpy()
        mean = self.mean.cpu().numpy()
        costs = np.where(allowed, mean, np.inf)
        costs[np.broadcast_to(chain, costs.shape)] = 0.0
        edges = allowed & ~chain
        if self.count >= 2:
            std = np.sqrt(np.maximum(self.m2.cpu().numpy(), 0.0) / (self.count - 1))
            with np.errstate(divide="ignore", invalid="ignore"):
                cv = np.where(mean > 0, std / mean, np.where(std > 0, np.inf, 0.0))
        else:
            cv = np.full(costs.shape, np.nan)
        cv = np.where(edges, cv, np.nan)
        vals = cv[edges]
        vals = vals[np.isfinite(vals)]
        if self.rank_count >= 2:
            k = self.rank_count
            rho = float((self.rank_sum.dot(self.rank_sum).item() - k) / (k * (k - 1)))
        else:
            rho = float("nan")
        stats = {
            "cv_mean": float(vals.mean()) if vals.size else float("nan"),
            "cv_median": float(np.median(vals)) if vals.size else float("nan"),
            "cv_max": float(vals.max()) if vals.size else float("nan"),
            "rank_correlation": rho,
            "rank_correlation_samples": self.rank_count,
        }
        return costs, cv, stats


# ---------------------------------------------------------------------------------------------------- polynomial costs
def _poly_states(i: int, d_max: int, order: int):
    """The (a, b) states of computed node i that an estimator of this order can tell apart (docs/design.md 2b):
    a = i - h (0 at i = 0), b = h - h2 (0 when h = 0); b is 0 (broadcast later) for order 1."""
    if i == 0:
        return [(0, 0)]
    out = []
    for a in range(1, min(d_max, i) + 1):
        h = i - a
        if order < 2 or h == 0:
            out.append((a, 0))
        else:
            out.extend((a, b) for b in range(1, min(d_max, h) + 1))
    return out


def poly_edge_rows(sigmas, d_max: int, names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linear combinations whose mean absolute value is each polynomial edge cost.

    A polynomial estimator reads only computed velocities, so rolled out from the true z_i over the skipped steps
    i+1..j-1 its state at j is ``zhat_j = z_i + ds_i v_i + sum_t ds_t sum_m w_m(t) v_{n_m}`` (n_m: the last p + 1
    computed nodes h2, h, i). With a corrector (``taylorc``) and j < N the increments are the corrector's, whose
    nodes are h, i and j (v_j the true velocity at z_j: the calibration does not see that at run time v_j is
    evaluated at the uncorrected state). The cost ``L_e(h, i, j) = mean |(zhat_j - z_j) / (s_j - s_i)|`` is thus
    ``mean |sum_m coef_m x_m|`` over rows of ``sources = cat(z [N+1], v [N])`` (z_t at row t, v_t at row N+1+t).

    Returns:
        ``(keys [R, 5] int64: (e, i, a, b, d), index [R, 5] int64 with -1 for unused slots, coef [R, 5] float64)``.
    """
    from . import estimators as est

    sig = [float(x) for x in sigmas]
    n = len(sig) - 1
    keys, index, coef = [], [], []
    for e, name in enumerate(names):
        estimator = est.get(*est.parse(name))
        for i in range(n):
            for a, b in _poly_states(i, d_max, estimator.param):
                nodes = [i] if a == 0 else [i - a, i] if b == 0 else [i - a - b, i - a, i]
                nodes = nodes[-(estimator.param + 1):]
                xs = [sig[t] for t in nodes]
                acc = [0.0] * len(nodes)
                acc[-1] = sig[i + 1] - sig[i]  # the computed step i itself
                for d in range(2, min(d_max, n - i) + 1):
                    t = i + d - 1  # the skipped step added to the edge i -> i + d - 1
                    ds = sig[t + 1] - sig[t]
                    for m, w in enumerate(estimator.weights(xs, sig[t], sig[t + 1])):
                        acc[m] += ds * w
                    j = i + d
                    inv = 1.0 / (sig[j] - sig[i])
                    if estimator.corrected and j < n:
                        # corrected at j: the skipped increments are the corrector's, interpolating through j
                        cn = ([i - a] if a else []) + [i, j]
                        cx = [sig[k] for k in cn]
                        cc = [0.0] * len(cn)
                        cc[-2] = sig[i + 1] - sig[i]
                        for u in range(i + 1, j):
                            for m, w in enumerate(estimator.corrector_weights(cx, sig[u])):
                                cc[m] += (sig[u + 1] - sig[u]) * w
                        row_i = [i, j] + [n + 1 + k for k in cn]
                        row_c = [inv, -inv] + [c * inv for c in cc]
                    else:
                        row_i = [i, j] + [n + 1 + t for t in nodes]
                        row_c = [inv, -inv] + [c * inv for c in acc]
                    pad = 5 - len(row_i)
                    keys.append((e, i, a, b, d))
                    index.append(row_i + [-1] * pad)
                    coef.append(row_c + [0.0] * pad)
    if not keys:
        return (np.zeros((0, 5), np.int64), np.zeros((0, 5), np.int64), np.zeros((0, 5), np.float64))
    return np.array(keys, np.int64), np.array(index, np.int64), np.array(coef, np.float64)


def _poly_table(keys: np.ndarray, values: np.ndarray, names, n: int, d_max: int) -> np.ndarray:
    """Row values scattered into [E, N, D+1, D+1, D+1] (+inf elsewhere); an order-1 estimator's rows (measured at
    b = 0) are copied to every state (a, b) the solver may visit, and chain edges of those states cost 0."""
    from . import estimators as est

    table = np.full((len(names), n, d_max + 1, d_max + 1, d_max + 1), np.inf)
    e, i, a, b, d = keys.T
    table[e, i, a, b, d] = values
    for e, name in enumerate(names):
        order = est.get(*est.parse(name)).param
        for i in range(n):
            for a, b in _poly_states(i, d_max, 2):  # every state the solver may visit
                if order < 2 and b > 0:
                    table[e, i, a, b] = table[e, i, a, 0]
                table[e, i, a, b, 1] = 0.0  # chain edge
    return table


# ---------------------------------------------------------------------------------------------------- calibration
def profile_from_trajectories(
    trajectories: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sigmas,
    max_span: int = 6,
    max_skip: int | None = None,
    meta: dict | None = None,
    *,
    backend: str = "auto",
    estimators=None,
    poly_max_skip: int | None = None,
) -> Profile:
    """Build a :class:`Profile` from recorded full-step trajectories.

    Args:
        trajectories: an iterable of batches ``(z, v)``: z [N+1, S, ...] the states of S full-step trajectories
            (z[0] the initial latents), v [N, S, ...] the velocity used at every step (after guidance). Consumed one
            batch at a time: memory is one batch's trajectory and costs, whatever the number of batches.
        sigmas: the N + 1 sigmas of the trajectories.
        max_span: largest JVP span K calibrated (>= 1).
        max_skip: longest run of skipped steps calibrated (>= 1); None: every edge (N - 1).
        meta: extra metadata (model name, resolution, ...) merged into the profile's.
        backend: backend of ``ops.calibration_errors`` and ``ops.edge_errors``.
        estimators: the estimators to calibrate: None = every one the library has
            (:func:`meancache_kernels.estimators.available`); ``("jvp",)`` = the paper's costs only, as before
            estimators existed. ``"jvp"`` is always calibrated (it is the profile's ``costs``).
        poly_max_skip: longest run of skipped steps calibrated for the polynomial estimators; None:
            ``min(max_skip, 12)`` (their cost table grows as the fourth power of it).

    Returns:
        The :class:`Profile`: costs averaged over every sample, per-edge CV across samples, and in ``meta``:
        num_samples, max_span, max_skip, estimator, dtype, and ``stability`` (cv_mean, cv_median, cv_max over the
        allowed non-chain edges, and the mean pairwise Spearman correlation of the per-sample cost tensors).
    """
    sig = as_sigmas(sigmas)
    n = len(sig) - 1
    max_span = as_count("max_span", max_span, 1)
    max_skip = max(1, n - 1) if max_skip is None else as_count("max_skip", max_skip, 1)
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
    if not hasattr(trajectories, "__iter__"):
        raise TypeError(f"trajectories must be an iterable of (z, v) batches, got {type(trajectories).__name__}")
    if isinstance(trajectories, tuple) and len(trajectories) == 2 and isinstance(trajectories[0], torch.Tensor):
        raise TypeError("trajectories must be an iterable of (z, v) batches; wrap a single batch as [(z, v)]")
    poly_names = _poly_names(estimators)
    if poly_max_skip is None:
        poly_max_skip = min(max_skip, 12)
    else:
        poly_max_skip = as_count("poly_max_skip", poly_max_skip, 1)
    d_max = min(poly_max_skip, max(n - 1, 1)) + 1
    if poly_names:
        keys, index, coef = poly_edge_rows(sig, d_max, poly_names)
        index_t, coef_t = torch.from_numpy(index), torch.from_numpy(coef)
        poly_sum = np.zeros(len(keys))
    acc = _Accumulator()
    dtype = None
    shape = None
    for b, item in enumerate(trajectories):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"trajectories[{b}] must be a pair (z, v), got {type(item).__name__}")
        z, v = item
        if not isinstance(z, torch.Tensor) or not isinstance(v, torch.Tensor):
            raise TypeError(f"trajectories[{b}] must hold torch tensors (z, v)")
        if z.dim() < 2 or z.shape[0] != n + 1:
            raise ValueError(f"trajectories[{b}]: z must have shape [N+1={n + 1}, S, ...], got {tuple(z.shape)}")
        if shape is not None and tuple(z.shape[2:]) != shape:
            raise ValueError(f"trajectories[{b}]: per-sample shape {tuple(z.shape[2:])} differs from {shape}")
        shape = tuple(z.shape[2:])
        dtype = dtype or str(z.dtype).replace("torch.", "")
        err = ops.calibration_errors(z, v, sig, max_span, max_skip, backend=backend)
        acc.add(err)
        if poly_names and len(keys):
            sources = torch.cat([z, v.to(z.dtype)])
            dev = sources.device
            pe = ops.edge_errors(sources, index_t.to(dev), coef_t.to(dev), backend=backend)
            if not bool(torch.isfinite(pe).all()):
                raise ValueError("polynomial calibration errors are non-finite (overflow in the trajectories?)")
            poly_sum += pe.double().sum(1).cpu().numpy()
            del sources, pe
        del item, z, v, err  # release this batch before the iterable produces the next one
    if acc.count == 0:
        raise ValueError("trajectories is empty: at least one batch (z, v) is needed")
    costs, cv, stats = acc.result()
    full_meta: dict[str, Any] = {
        "num_steps": n,
        "num_samples": acc.count,
        "max_span": max_span,
        "max_skip": min(max_skip, max(n - 1, 0)),
        "estimator": "official",
        "dtype": dtype,
        "sample_shape": list(shape),
        "format_version": _FORMAT_VERSION,
        "stability": stats,
    }
    full_meta.update(meta or {})
    poly = None
    if poly_names:
        poly = _poly_table(keys, poly_sum / acc.count, poly_names, n, d_max)
        full_meta["estimators"] = ["jvp", *poly_names]
    return Profile(costs, sig, meta=full_meta, cv=cv, poly_costs=poly, poly_estimators=poly_names or None)


def _poly_names(estimators) -> tuple[str, ...]:
    from . import estimators as est

    if estimators is None:
        names = est.available()
    else:
        if isinstance(estimators, (str, bytes)) or not isinstance(estimators, (list, tuple)):
            raise TypeError(f"estimators must be a list/tuple of estimator names or None, got {estimators!r}")
        names = list(estimators)
        for name in names:
            est.parse(name)  # ValueError naming the unknown estimator
    return tuple(n for n in dict.fromkeys(names) if n != "jvp")


def calibrate(
    model_fn: Callable[[torch.Tensor, float], torch.Tensor],
    latents: torch.Tensor,
    sigmas,
    max_span: int = 6,
    max_skip: int | None = None,
    progress: bool = True,
    batch_size: int | None = None,
    *,
    meta: dict | None = None,
    backend: str = "auto",
    estimators=None,
) -> Profile:
    """Calibrate MeanCache edge costs on full-step trajectories of ``model_fn``.

    Args:
        model_fn: ``model_fn(z, sigma) -> v``, the (guided) velocity, as for :func:`meancache_kernels.sample`.
        latents: [S, ...] initial latents (one per calibration sample).
        sigmas: N + 1 strictly decreasing sigmas ending at 0.
        max_span: largest JVP span K calibrated.
        max_skip: longest run of skipped steps calibrated; None: every edge.
        progress: show a tqdm progress bar over the model calls.
        batch_size: samples integrated together (memory is one batch's trajectory, [N+1, batch_size, ...] states
            and [N, batch_size, ...] velocities); None: 8.
        meta: extra metadata (e.g. ``{"model": "Qwen/Qwen-Image", "resolution": [1328, 1328]}``).
        backend: backend of the Euler steps and of ``ops.calibration_errors``.
        estimators: estimators to calibrate (None: all; ``("jvp",)``: the paper's only), see
            :func:`profile_from_trajectories`.

    Returns:
        The :class:`Profile` (see :func:`profile_from_trajectories`).
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor [S, ...], got {type(latents).__name__}")
    if latents.dim() < 1 or latents.shape[0] < 1:
        raise ValueError(f"latents must have shape [S, ...] with S >= 1, got {tuple(latents.shape)}")
    sig = as_sigmas(sigmas)
    n = len(sig) - 1
    num = latents.shape[0]
    bs = 8 if batch_size is None else as_count("batch_size", batch_size, 1)
    bs = min(bs, num)
    from tqdm.auto import tqdm

    bar = tqdm(total=math.ceil(num / bs) * n, desc="meancache calibrate", unit="step", disable=not progress)

    def batches():
        try:
            for start in range(0, num, bs):
                z = latents[start : start + bs]
                zs, vs = [z], []
                for i in range(n):
                    v = model_fn(z, sig[i])
                    if not isinstance(v, torch.Tensor) or v.shape != z.shape:
                        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                        raise ValueError(f"model_fn must return a tensor of z's shape {tuple(z.shape)}, got {got}")
                    z = ops.euler_step(z, v, sig[i + 1] - sig[i], backend=backend)
                    zs.append(z)
                    vs.append(v)
                    bar.update(1)
                yield torch.stack(zs), torch.stack(vs)
        finally:
            bar.close()

    full_meta = {"model": getattr(model_fn, "__name__", type(model_fn).__name__),
                 "resolution": list(latents.shape[1:])}
    full_meta.update(meta or {})
    return profile_from_trajectories(batches(), sig, max_span, max_skip, meta=full_meta, backend=backend,
                                     estimators=estimators)
