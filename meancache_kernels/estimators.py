"""Estimators of the velocity on a skipped step: host-side coefficients, one fused op applies them (docs/design.md 2b).

Every estimate is a linear combination ``v_hat = sum_k c_k x_k`` of cached tensors with scalar coefficients
computed here from the sigmas:

- ``jvp`` (param K, the paper): ``v_hat = v_{i-1} - (ds/d) v_{i-K} + (ds/d^2) (z_i - z_{i-K})`` with
  ``d = s_i - s_{i-K}``, ``ds = s_{i+1} - s_i``; reads the last K trajectory entries (computed or estimated) and
  is evaluated by ``ops.mean_velocity_step`` exactly as the public release does.
- ``taylor`` (param p = 1, 2): the Lagrange polynomial in sigma through the velocities of the last p + 1 *computed*
  steps, evaluated at s_i (fewer computed steps so far: lower order). Exact for a velocity that is a polynomial of
  degree <= p in sigma along the trajectory; it is what an N-step Euler sampler would use.
- ``mean`` (param p = 1, 2): the same polynomial averaged over [s_i, s_{i+1}] (the paper's average-velocity idea
  applied to the polynomial): the exact step of such a field.
- ``taylorc`` (param p = 1, 2): ``taylor`` p as predictor, plus a corrector at the next computed step j: once v_j
  is known, the Euler increments of the skipped steps are replaced by those of the polynomial interpolating the last
  three computed velocities, v_j included (two when only two exist), i.e. ``z_j`` gains
  ``sum_t ds_t (P_corr(s_t) - v_hat_t)`` before its own Euler step. No model call is added (UniPC's corrector
  uses the model output at the new point the same way); interpolation replaces extrapolation on the skipped steps.

An estimator is named by family and parameter, ``"jvp"`` (K from the schedule), ``"taylor1"``, ``"mean2"``, ...
:func:`available` lists the names; :func:`get` returns the estimator object for a (family, param) pair. Estimators
are stateless: the sampler keeps the history and passes what each estimator reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "FAMILIES",
    "POLY_FAMILIES",
    "POLY_ORDERS",
    "Estimator",
    "JvpEstimator",
    "PolynomialEstimator",
    "CorrectedEstimator",
    "available",
    "get",
    "parse",
    "lagrange_weights",
    "lagrange_mean_weights",
    "correction_coefficients",
]

FAMILIES = ("jvp", "taylor", "mean", "taylorc")
POLY_FAMILIES = ("taylor", "mean", "taylorc")
POLY_ORDERS = (1, 2)
CORRECTOR_ORDER = 2  # degree of the corrector's interpolating polynomial (through the last three computed steps)


def lagrange_weights(nodes: Sequence[float], x: float) -> list[float]:
    """Weights ``w`` with ``P(x) = sum_k w_k y_k`` for the Lagrange polynomial through ``(nodes[k], y_k)``."""
    out = []
    for a, xa in enumerate(nodes):
        w = 1.0
        for b, xb in enumerate(nodes):
            if a != b:
                w *= (x - xb) / (xa - xb)
        out.append(w)
    return out


def lagrange_mean_weights(nodes: Sequence[float], x0: float, x1: float) -> list[float]:
    """Weights of the average of the Lagrange polynomial over [x0, x1]: ``mean P = sum_k w_k y_k``.

    Three-point Gauss-Legendre quadrature, exact for the basis polynomials of degree <= 5 (here <= 2); x0 == x1
    gives the value at x0.
    """
    if x0 == x1:
        return lagrange_weights(nodes, x0)
    g = (-math.sqrt(0.6), 0.0, math.sqrt(0.6))
    gw = (5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0)
    out = [0.0] * len(nodes)
    mid, half = 0.5 * (x0 + x1), 0.5 * (x1 - x0)
    for t, wt in zip(g, gw):
        for k, w in enumerate(lagrange_weights(nodes, mid + half * t)):
            out[k] += 0.5 * wt * w
    return out


class Estimator:
    """One skipped-step rule. ``family`` and ``param`` name it; subclasses say what history they read.

    Attributes:
        family: ``"jvp"``, ``"taylor"`` or ``"mean"``.
        param: K for ``jvp`` (from the schedule), the polynomial order p otherwise.
        trajectory_depth: trajectory entries (z_j, v_j) read before step i (jvp: K; polynomials: 0).
        computed_depth: velocities of computed steps the estimate reads (polynomials: p + 1; jvp: 0).
        retain: velocities of computed steps the sampler must keep for this estimator (its corrector included).
        corrected: True when the next computed step corrects this step's increment (``taylorc``).
    """

    family: str = ""
    param: int = 0
    trajectory_depth: int = 0
    computed_depth: int = 0
    retain: int = 0
    corrected: bool = False

    @property
    def name(self) -> str:
        return self.family if self.family == "jvp" else f"{self.family}{self.param}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.family!r}, {self.param})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Estimator) and (self.family, self.param) == (other.family, other.param)

    def __hash__(self) -> int:
        return hash((self.family, self.param))

    def estimate_step(self, ops, i: int, z, sigmas: Sequence[float], trajectory, computed, backend: str):
        """The estimate at skipped step ``i`` and the Euler step with it, fused: ``(v_hat, z_next)``.

        The one interface the sampler calls (it never asks which estimator it holds). ``ops``: the op module that
        applies the coefficients (:mod:`meancache_kernels.ops`, passed in so this module stays pure Python);
        ``trajectory``: the last entries ``(j, z_j, v_j)`` of the trajectory, oldest first; ``computed``: the last
        ``(j, v_j)`` of computed steps, oldest first. Each estimator reads only the history it declares
        (``trajectory_depth``, ``computed_depth``).
        """
        raise NotImplementedError


class JvpEstimator(Estimator):
    """The paper's finite-difference JVP estimate with span K (docs/design.md section 2)."""

    family = "jvp"

    def __init__(self, k: int):
        self.param = int(k)
        self.trajectory_depth = self.param
        self.computed_depth = 0

    def estimate_step(self, ops, i, z, sigmas, trajectory, computed, backend):
        # the paper's rule, evaluated as the release does (bit-compatible): K = min(K_i, i)
        anchor = i - min(self.param, i)
        entries = {j: (zj, vj) for j, zj, vj in trajectory}
        if anchor not in entries or (i - 1) not in entries:
            raise RuntimeError(f"history for step {i} (anchor step {anchor}) is missing: steps were not recorded")
        z_a, v_a = entries[anchor]
        v_last = entries[i - 1][1]
        return ops.mean_velocity_step(z, z_a, v_a, v_last, sigmas[anchor], sigmas[i], sigmas[i + 1], backend=backend)


class PolynomialEstimator(Estimator):
    """Lagrange extrapolation in sigma through the last p + 1 computed velocities: at s_i (``taylor``) or averaged
    over [s_i, s_{i+1}] (``mean``)."""

    def __init__(self, family: str, p: int):
        if family not in POLY_FAMILIES:
            raise ValueError(f"polynomial estimator family must be one of {POLY_FAMILIES}, got {family!r}")
        if p not in POLY_ORDERS:
            raise ValueError(f"polynomial order p must be one of {POLY_ORDERS}, got {p!r}")
        self.family = family
        self.param = int(p)
        self.trajectory_depth = 0
        self.computed_depth = self.param + 1
        self.retain = self.computed_depth

    def weights(self, nodes: Sequence[float], s_i: float, s_next: float) -> list[float]:
        """Coefficients on the velocities at ``nodes`` (the sigmas of the last computed steps, oldest first; at
        most p + 1 are used, the newest ones)."""
        nodes = list(nodes)[-(self.param + 1):]
        if self.family == "mean":
            return lagrange_mean_weights(nodes, s_i, s_next)
        return lagrange_weights(nodes, s_i)

    def estimate_step(self, ops, i, z, sigmas, trajectory, computed, backend):
        if not computed:
            raise RuntimeError(f"history for step {i} is missing: no computed step was recorded before it")
        used = list(computed)[-self.computed_depth:]
        coeffs = self.weights([sigmas[j] for j, _ in used], sigmas[i], sigmas[i + 1])
        tensors = [v for _, v in used]
        return ops.combine_step(z, tensors, coeffs, sigmas[i + 1] - sigmas[i], v_dtype=tensors[-1].dtype,
                                backend=backend)


class CorrectedEstimator(PolynomialEstimator):
    """``taylor`` p predictor; at the next computed step the skipped increments are corrected by interpolation."""

    def __init__(self, p: int):
        super().__init__("taylorc", p)
        self.corrected = True
        # at the correction the predictor's nodes (p + 1 before j) and the corrector's (CORRECTOR_ORDER + 1, j
        # included) must both be held
        self.retain = max(self.param + 1, CORRECTOR_ORDER) + 1

    @staticmethod
    def corrector_weights(nodes: Sequence[float], s_t: float) -> list[float]:
        """Coefficients of the corrector at s_t on the velocities at ``nodes`` (the newest CORRECTOR_ORDER + 1)."""
        return lagrange_weights(list(nodes)[-(CORRECTOR_ORDER + 1):], s_t)


def correction_coefficients(steps, nodes: Sequence[int], sigmas: Sequence[float]) -> dict[int, float]:
    """The correction ``sum_t ds_t (P_corr(s_t) - v_hat_t)`` at computed step ``j = nodes[-1]`` as coefficients on the
    velocities of the computed steps ``nodes`` (increasing, j last): ``{node: coefficient}``.

    ``steps``: ``[(t, estimator), ...]``, the corrected skipped steps since the previous computed step (each one's
    predictor read the newest ``estimator.computed_depth`` nodes before j).
    """
    out: dict[int, float] = {}
    nodes = list(nodes)
    before = nodes[:-1]
    for t, est in steps:
        ds = sigmas[t + 1] - sigmas[t]
        corr_nodes = nodes[-(CORRECTOR_ORDER + 1):]
        for n, w in zip(corr_nodes, est.corrector_weights([sigmas[k] for k in corr_nodes], sigmas[t])):
            out[n] = out.get(n, 0.0) + ds * w
        pred_nodes = before[-est.computed_depth:]
        for n, w in zip(pred_nodes, est.weights([sigmas[k] for k in pred_nodes], sigmas[t], sigmas[t + 1])):
            out[n] = out.get(n, 0.0) - ds * w
    return out


def parse(name: str) -> tuple[str, int | None]:
    """``"jvp"`` -> ("jvp", None); ``"taylor1"`` -> ("taylor", 1); ``"mean2"`` -> ("mean", 2). ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a str, got {type(name).__name__}")
    if name == "jvp":
        return "jvp", None
    for fam in POLY_FAMILIES:
        rest = name[len(fam):]
        if name.startswith(fam) and rest.isdigit() and int(rest) in POLY_ORDERS:
            return fam, int(rest)
    raise ValueError(f"unknown estimator {name!r}; available: {available()}")


def get(family: str, param: int) -> Estimator:
    """The estimator for a (family, param) pair, as a :class:`Schedule` stores it per skipped step."""
    if family == "jvp":
        if isinstance(param, bool) or not isinstance(param, int) or param < 1:
            raise ValueError(f"jvp needs a span K >= 1, got {param!r}")
        return JvpEstimator(param)
    if family == "taylorc":
        return CorrectedEstimator(param)
    if family in POLY_FAMILIES:
        return PolynomialEstimator(family, param)
    raise ValueError(f"unknown estimator family {family!r}; allowed: {FAMILIES}")


def available() -> list[str]:
    """Every estimator name the library offers (``"jvp"`` takes its span K from the profile or schedule)."""
    return ["jvp"] + [f"{fam}{p}" for fam in POLY_FAMILIES for p in POLY_ORDERS]
