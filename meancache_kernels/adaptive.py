"""Adaptive MeanCache: the computed steps are chosen online from a free local error estimate (issue 15, item 2).

**Error estimate.** At a computed step i the estimator's polynomial prediction of v_i from the previous computed
velocities (the velocity the cache would have used had step i been skipped) is compared with the computed v_i:

    err_i = || v_i - P_prev(s_i) || / || v_i ||      (one scalar over the whole batch, both CFG branches)

like the embedded pair of an adaptive ODE solver. ``P_prev`` is the Lagrange polynomial in sigma through the last
q + 1 computed velocities before i, q = min(p, number of computed steps before i - 1), p the estimator's order.

**Error model.** The extrapolation error of such a polynomial at sigma s is modelled as ``C * omega(s)`` with
``omega(s) = |prod_k (s - s_k)|`` over its q + 1 nodes (the Lagrange remainder with a locally constant derivative
factor C). err_i gives ``C = err_i / omega_prev(s_i)``; the same C predicts the error of extrapolating from the nodes
that end at i: ``e_i(s) = C * omega_i(s)`` (the newest q + 1 computed steps, i included). The error of a segment
i -> j (compute at i, skip i+1..j-1, compute at j) is taken where the next estimate measures it, ``e_i(s_j)``
(``s_N = 0`` for the last segment).

**Controller.**

- ``tol`` mode (per prompt): the next computed step is the farthest j with ``e_i(s_j) <= tol`` (i + 1 at least);
  tol = 0 computes every step. One host read per computed step (the error scalar), none on skipped steps.
- ``budget`` mode (exactly B computed steps): with R calls left after computed step i, the rest of the trajectory is
  planned by the tol rule, and the level tau is the smallest one (bisection in log tau) whose plan needs at most R
  calls (the same predicted error on every segment: equidistribution). The next computed step is the plan's first
  one, clamped so that the budget stays feasible and is spent (never fewer remaining steps than remaining calls;
  when R calls are left for R steps, all are computed). The plan is redone at every computed step. With the model's
  C frozen over the plan, the plan does not depend on C at all (scaling C scales tau): **the budget mode's decisions
  depend on the sigmas, B, p and first_gap only**, the same for every prompt, and need no host read. They are
  computed once at construction (:func:`budget_schedule` returns them as a :class:`Schedule`). Variants that let C
  vary over the plan (a trend fitted to the measured C) were measured and lost on average (bench/results/adaptive.md).
- Before the first estimate (step 0 has no history) the next computed step is ``first_gap`` steps later.

The decision for the steps after i is taken when computed step i is recorded (``step`` / ``record``), so
``should_compute`` reads host state only; it is a deterministic function of the sigmas, the arguments and the error
scalars (tol mode), hence identical on every rank that computes the same scalars.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import estimators as _est
from . import ops
from .cache import SteppedState
from .checks import as_sigmas, check_budget, check_ops_backend, check_tol
from .schedule import Schedule

__all__ = ["AdaptiveState", "sample_adaptive", "budget_schedule"]

_TAU_LO, _TAU_HI = 1e-30, 1e3  # bisection range of the budget plan's per-segment error level (model units)
_BISECT_ITERS = 64


def _omega(s: float, nodes: list[float]) -> float:
    """|prod_k (s - s_k)|: the nodal polynomial of the extrapolation through ``nodes``."""
    out = 1.0
    for sk in nodes:
        out *= s - sk
    return abs(out)


def _farthest(sigmas: list[float], t: int, nodes: list[float], c: float, tau: float) -> int:
    """The farthest next computed step j > t with predicted error ``c * omega(s_j) <= tau`` (t + 1 at least; N
    means none: the last segment is measured at s_N = 0)."""
    n = len(sigmas) - 1
    j = t + 1
    while j < n and c * _omega(sigmas[j + 1], nodes) <= tau:
        j += 1
    return j


def _plan_calls(sigmas: list[float], t: int, nodes: list[float], q: int, tau: float) -> tuple[int, int]:
    """Calls after step t of the plan with error level tau (model scale 1), and its first computed step."""
    n = len(sigmas) - 1
    count, first = 0, None
    while True:
        j = _farthest(sigmas, t, nodes, 1.0, tau)
        if first is None:
            first = j
        if j >= n:
            return count, first
        count += 1
        nodes = (nodes + [sigmas[j]])[-(q + 1):]
        t = j


def _budget_plan(sigmas: list[float], budget: int, order: int, first_gap: int) -> list[bool]:
    """The budget mode's compute flags (module docstring): they depend on the sigmas, B, p and first_gap only."""
    n = len(sigmas) - 1
    comp = [False] * n
    comp[0] = True
    nodes, i, calls = [0], 0, 1
    while True:
        calls_left, left = budget - calls, n - 1 - i
        if calls_left <= 0:
            return comp
        if calls_left >= left:
            j = i + 1
        elif len(nodes) == 1:
            j = i + first_gap
        else:
            q = min(order, len(nodes) - 2)  # the order of the estimate that would be read at i
            ns = [sigmas[k] for k in nodes[-(q + 1):]]
            lo, hi = math.log(_TAU_LO), math.log(_TAU_HI)
            for _ in range(_BISECT_ITERS):  # the smallest level whose plan needs at most calls_left calls
                mid = 0.5 * (lo + hi)
                if _plan_calls(sigmas, i, ns, q, math.exp(mid))[0] <= calls_left:
                    hi = mid
                else:
                    lo = mid
            j = _plan_calls(sigmas, i, ns, q, math.exp(hi))[1]
        j = max(i + 1, min(j, n - calls_left))  # room for every remaining call
        if j >= n:
            return comp
        comp[j] = True
        nodes.append(j)
        i, calls = j, calls + 1


def budget_schedule(sigmas, budget: int, estimator: str = "taylor2", *, first_gap: int = 1) -> Schedule:
    """The :class:`Schedule` that :class:`AdaptiveState` realises in budget mode on these sigmas (it is the same for
    every prompt: the plan is invariant to the error scale). Run it with :func:`meancache_kernels.sample` or
    :class:`meancache_kernels.MeanCacheState` for the same result without an adaptive state."""
    state = AdaptiveState(sigmas, budget=budget, estimator=estimator, first_gap=first_gap)
    comp = state._plan
    meta = {"source": "adaptive-budget", "estimator": estimator, "first_gap": first_gap}
    return Schedule(comp, [0 if c else state.order for c in comp], meta=meta,
                    estimators=["" if c else state.estimator.family for c in comp])


class AdaptiveState(SteppedState):
    """Per-generation adaptive MeanCache state, with the interface of :class:`meancache_kernels.MeanCacheState`.

    Usage, for i in 0..N-1::

        if state.should_compute(i):
            z = state.step(i, z, model(z, sigmas[i]))   # records v_i, measures the error, decides the next steps
        else:
            v_hat, z = state.skip(i, z)

    Args:
        sigmas: N + 1 strictly decreasing sigmas ending at 0.
        budget: exactly this many computed steps per generation (1..N). Exclusive with ``tol``.
        tol: keep the relative velocity-prediction error of every segment under ``tol`` (>= 0; 0 computes every
            step). Exclusive with ``budget``.
        estimator: polynomial estimator of the skipped steps: ``"taylor1"``, ``"taylor2"``, ``"mean1"``,
            ``"mean2"``, ``"taylorc1"``, ``"taylorc2"`` (``"jvp"`` needs a span per step and is not supported).
        backend: op backend (``"auto"``, ``"torch"``, ``"triton"``).
        first_gap: the next computed step after step 0, before any error estimate exists (>= 1).
        record_errors: also read the error estimate where the decision does not need it (budget mode, tol = 0): one
            host read per computed step, for diagnostics (``errors``); decisions are unchanged.

    Attributes:
        calls: computed steps so far in this generation.
        decisions: ``compute`` flag of every step taken so far.
        errors: ``{i: err_i}``, the error estimates read at computed steps.
    """

    def __init__(self, sigmas, *, budget=None, tol=None, estimator: str = "taylor2", backend: str = "auto",
                 first_gap: int = 1, record_errors: bool = False):
        if (budget is None) == (tol is None):
            raise ValueError("give exactly one of budget= (computed steps per generation) and tol= (error "
                             f"tolerance), got budget={budget!r}, tol={tol!r}")
        self.sigmas = as_sigmas(sigmas)
        n = len(self.sigmas) - 1
        self.budget = check_budget(budget, n) if budget is not None else None
        self.tol = None if tol is None else check_tol(tol)
        if isinstance(first_gap, bool) or not isinstance(first_gap, int) or first_gap < 1:
            raise ValueError(f"first_gap must be an int >= 1, got {first_gap!r}")
        self.first_gap = first_gap
        self.record_errors = bool(record_errors)
        family, p = _est.parse(estimator)
        if family not in _est.POLY_FAMILIES:
            raise ValueError(f"estimator must be a polynomial estimator {[e for e in _est.available() if e != 'jvp']}"
                             f", got {estimator!r} (jvp needs a span per skipped step, which an online schedule "
                             "does not have)")
        self.estimator_name = estimator
        self.estimator = _est.get(family, p)
        self.order = p
        self.backend = check_ops_backend(backend)
        # computed velocities held: the estimator's (corrector included) and p + 1 before the newest for the error
        self._depth = max(self.estimator.retain, p + 2)
        self._plan = None if self.budget is None else _budget_plan(self.sigmas, self.budget, p, first_gap)
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def reset(self) -> None:
        """Forget the trajectory and the decisions (start of a new generation)."""
        self.next_step = 0
        self.calls = 0
        self.decisions: list[bool] = []
        self.errors: dict[int, float] = {}
        self._nodes: list[tuple[int, torch.Tensor]] = []  # (i, v_i) of the last computed steps, oldest first
        self._next_compute = 0  # the next step that runs the model (num_steps: none)
        self._scale: tuple[float, int] | None = None  # (C, q) of the error model
        self._to_correct: list[tuple[int, object]] = []
        self._pending: tuple | None = None

    def schedule_so_far(self) -> Schedule:
        """The realised :class:`Schedule` of the steps taken so far (after a generation: all N steps)."""
        if not self.decisions:
            raise RuntimeError("no step has been taken yet: the realised schedule is empty")
        comp = list(self.decisions)
        meta = {"source": "adaptive", "estimator": self.estimator_name, "budget": self.budget, "tol": self.tol,
                "errors": {str(k): v for k, v in self.errors.items()}}
        return Schedule(comp, [0 if c else self.order for c in comp], meta=meta,
                        estimators=["" if c else self.estimator.family for c in comp])

    # ------------------------------------------------------------------ decisions (host state only)
    def should_compute(self, i: int) -> bool:
        """True when step ``i`` runs the model. Decided for the steps up to the next computed one."""
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"step index i must be an int, got {i!r}")
        if not 0 <= i < self.num_steps:
            raise IndexError(f"step index i={i} is out of range for {self.num_steps} steps")
        if i < self.next_step:
            return self.decisions[i]
        if i > self._next_compute:
            raise RuntimeError(f"step {i} is not decided yet: the next computed step is {self._next_compute}")
        return i == self._next_compute

    @property
    def next_compute(self) -> int:
        """The next step that will run the model (``num_steps`` when none will)."""
        return self._next_compute

    def _decide(self, i: int) -> None:
        """The next computed step after computed step ``i`` (host state only)."""
        n = self.num_steps
        if self._plan is not None:  # budget mode: the precomputed plan (it does not depend on the error scale)
            self._next_compute = next((j for j in range(i + 1, n) if self._plan[j]), n)
            return
        if self.tol == 0.0 or self._scale is None:
            self._next_compute = min(n, i + (1 if self.tol == 0.0 else self.first_gap))
            return
        c, q = self._scale
        nodes = [self.sigmas[k] for k, _ in self._nodes[-(q + 1):]]
        self._next_compute = _farthest(self.sigmas, i, nodes, c, self.tol)

    def _needs_error(self, i: int) -> bool:
        """Whether an error estimate is read after computed step i (else no host read)."""
        if not self._nodes:
            return False
        if self.record_errors:
            return True
        return self.tol is not None and self.tol > 0.0 and i < self.num_steps - 1

    def _measure(self, i: int, v: torch.Tensor) -> float:
        """err_i: relative error of the polynomial prediction of v_i from the previous computed velocities."""
        q = min(self.order, len(self._nodes) - 1)
        prev = self._nodes[-(q + 1):]
        s = self.sigmas
        nodes = [s[k] for k, _ in prev]
        w = _est.lagrange_weights(nodes, s[i])
        # fused: diff = v_i - sum_k w_k v_k (combine_step with z = v_i and ds = -1)
        _, diff = ops.combine_step(v, [vk for _, vk in prev], w, -1.0, backend=self.backend)
        acc = torch.float64 if v.dtype == torch.float64 else torch.float32
        num = torch.linalg.vector_norm(diff, dtype=acc)
        den = torch.linalg.vector_norm(v, dtype=acc)
        err = float((num / den.clamp_min(torch.finfo(acc).tiny)).item())  # the one host read of this step
        omega = _omega(s[i], nodes)
        # a non-finite error (non-finite velocity) makes C infinite: every following step is computed
        self._scale = (err / omega if math.isfinite(err) and omega > 0 else math.inf, q)
        return err

    # ------------------------------------------------------------------ SteppedState hooks
    def _is_computed(self, i: int) -> bool:
        return i == self._next_compute

    def _estimator_at(self, i: int):
        return self.estimator

    def _trajectory(self):
        return ()

    def _velocities(self):
        return self._nodes

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        """Book-keeping of step i (z already corrected); on a computed step: measure the error and decide."""
        if i == self._next_compute:
            err = self._measure(i, v) if self._needs_error(i) else None
            if err is not None:
                self.errors[i] = err
            self._nodes.append((i, v.detach()))
            del self._nodes[:-self._depth]
            self.calls += 1
            self.decisions.append(True)
            self.next_step = i + 1
            if i + 1 < self.num_steps:
                self._decide(i)
            return
        if self.estimator.corrected:
            self._to_correct.append((i, self.estimator))
        self.decisions.append(False)
        self.next_step = i + 1


def sample_adaptive(
    model_fn: Callable[[torch.Tensor, float], torch.Tensor],
    z: torch.Tensor,
    sigmas,
    *,
    budget=None,
    tol=None,
    estimator: str = "taylor2",
    backend: str = "auto",
    first_gap: int = 1,
    record_errors: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Euler flow-matching sampling with adaptive MeanCache (:class:`AdaptiveState`).

    Returns ``(z_final, info)`` with ``info = {"calls", "schedule", "errors"}``: the model calls made, the realised
    :class:`Schedule` and the error estimate read at each computed step.
    """
    state = AdaptiveState(sigmas, budget=budget, tol=tol, estimator=estimator, backend=backend, first_gap=first_gap,
                          record_errors=record_errors)
    z = state.run(model_fn, z)
    return z, {"calls": state.calls, "schedule": state.schedule_so_far(), "errors": dict(state.errors)}
