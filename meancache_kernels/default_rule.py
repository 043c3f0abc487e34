"""A calibration-free MeanCache schedule: which B of the N steps to compute, and each skipped step's estimator.

:func:`default_schedule` needs no model call and no profile: only the N + 1 sigmas of the generation and the
budget B. It is a fixed rule with a few constants (:data:`DEFAULT_RULE`), chosen by measurement in
``bench/zero_config.py`` (analytic flows and the shipped tiny FluxPipeline; held-out results in
``bench/results/zero_config.md``). The rule family (:class:`Rule`):

- **where to compute**: step 0, then ``warmup - 1`` more leading steps, then the remaining computed steps evenly
  spaced in a coordinate that blends the step index and the sigma (``u_i = (1 - alpha) i / N + alpha (s_0 - s_i) /
  s_0``; ``alpha = 0``: evenly in steps, ``alpha = 1``: evenly in sigma), optionally warped, with the last step
  N - 1 computed or not;
- **how to estimate**: every skipped step of a gap uses one polynomial estimator
  (:mod:`meancache_kernels.estimators`), picked from a preference list by the number of skipped steps of its gap;
  the first name of the list that the caller allows is used, so the rule also works inside a restricted set (e.g.
  ``("taylor1", "taylor2")`` for schedulers that forbid the corrector).

The shipped rule, as measured: the B computed steps are ``round(k (N - 1) / (B - 1))``, k = 0..B-1 (exactly
``Schedule.uniform(N, B)``'s; B = 1: step 0 only); every skipped step uses ``taylorc2``; where it is not allowed, a
gap of at most 3 skipped steps takes the first allowed of (taylor2, taylorc1, taylor1, mean2, mean1) and a longer
gap the first allowed of (taylor1, taylorc1, taylor2, mean2, mean1) (measured for ``("taylor1", "taylor2")``; the
rest is the fixed fallback order). Where a solver other than the Euler step takes the estimate
(``sampler="multistep"``), every gap takes taylor1 (:data:`MULTISTEP_RULE`, measured under those solvers).
Sigma-aware spacings win large on the analytic flows at shift 3-6 but lost on the trained pipeline, so the sigmas
are only validated and used by the rule family's other members. :func:`rule_schedule` applies any :class:`Rule` (the
benchmark measures candidates through it).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .checks import as_sigmas, check_budget, check_estimator_names

__all__ = ["Rule", "DEFAULT_RULE", "MULTISTEP_RULE", "SAMPLERS", "default_schedule", "rule_schedule",
           "schedule_from_steps", "POLY_ESTIMATORS"]

POLY_ESTIMATORS = ("taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2")
# Order in which the remaining polynomial estimators are tried when none of a rule's preferred ones is allowed.
_FALLBACK = ("taylorc2", "taylorc1", "taylor1", "taylor2", "mean2", "mean1")


@dataclass(frozen=True)
class Rule:
    """A calibration-free schedule rule.

    Attributes:
        alpha: spacing coordinate, ``u_i = (1 - alpha) i / N + alpha (s_0 - s_i) / (s_0 - s_N)``; 0: evenly spaced
            step indices, 1: evenly spaced sigmas.
        warp: > 0; the computed steps after the warm-up sit at ``u = a + (e - a) (k / m) ** warp`` (1: evenly;
            > 1: denser at the start).
        warmup: leading steps computed back to back (step 0 included), >= 1.
        last: True when the last step N - 1 is computed (when the budget allows it).
        short: estimator preference for gaps of at most ``long_gap`` skipped steps (first allowed name wins).
        long: estimator preference for longer gaps (None: ``short``).
        long_gap: see ``long``.
    """

    alpha: float = 0.0
    warp: float = 1.0
    warmup: int = 1
    last: bool = True
    short: tuple[str, ...] = ("taylorc2",)
    long: tuple[str, ...] | None = None
    long_gap: int = 1

    def __post_init__(self):
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")
        if isinstance(self.warp, bool) or not isinstance(self.warp, (int, float)) or not (
                math.isfinite(self.warp) and self.warp > 0):
            raise ValueError(f"warp must be a finite number > 0, got {self.warp!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 1:
            raise ValueError(f"warmup must be an int >= 1, got {self.warmup!r}")
        if isinstance(self.long_gap, bool) or not isinstance(self.long_gap, int) or self.long_gap < 0:
            raise ValueError(f"long_gap must be an int >= 0, got {self.long_gap!r}")
        for field in ("short", "long"):
            names = getattr(self, field)
            if names is None and field == "long":
                continue
            if isinstance(names, str):
                names = (names,)
                object.__setattr__(self, field, names)
            if not isinstance(names, tuple) or not names or any(n not in POLY_ESTIMATORS for n in names):
                raise ValueError(f"{field} must be a non-empty tuple of names from {POLY_ESTIMATORS}, got {names!r}")

    @property
    def name(self) -> str:
        """Short description, e.g. ``"a0.5-w1-W2-last-taylorc2/taylor2"`` (the ``short`` preference; ``|g>1:taylor1``
        with a long-gap one)."""
        s = f"a{self.alpha:g}-w{self.warp:g}-W{self.warmup}-{'last' if self.last else 'open'}-{'/'.join(self.short)}"
        if self.long is not None and self.long != self.short:
            s += f"|g>{self.long_gap}:{'/'.join(self.long)}"
        return s


# The rule default_schedule uses, chosen by bench/zero_config.py on its selection data (bench/results/zero_config.md
# has the numbers; tests/core/test_default_schedule.py checks it against bench/results/zero_config.json). Every
# departure from evenly spaced steps that the analytic flows favour (spacing in sigma, warp, warm-up, an open last gap)
# lost mean PSNR on the shipped FluxPipeline (bench/RESULTS.md, "Zero-config default"), so the computed steps are
# exactly Schedule.uniform's; the estimator is taylorc2, and where the corrector is not allowed taylor2 on gaps of <= 3
# skipped steps, taylor1 on longer ones.
DEFAULT_RULE = Rule(alpha=0.0, warp=1.0, warmup=1, last=True, short=("taylorc2", "taylor2"),
                    long=("taylorc2", "taylor1"), long_gap=3)

# The rule where the estimate is handed to a solver other than the Euler step (UniPC, DPM-Solver++, FlowMatchAdams,
# FlowMatchHeun: the corrector is not allowed there): the same computed steps, taylor1 on every gap. Chosen by
# bench/studies/multistep_estimator.py on selection prompts (bench/RESULTS.md, "Any scheduler"): against the Euler
# rule's mix (taylor2 on gaps of <= 3 skipped steps) taylor1 was better at B = 25 and 17 of 50 under every solver
# measured, by 1.5-3.4 dB on the shipped model and up to 2.0 dB on the second (two settings of UniPC 2 / 3 at B = 17
# on the second model 0.2-0.4 dB worse); at B = 10 the two are the same schedule.
MULTISTEP_RULE = Rule(alpha=0.0, warp=1.0, warmup=1, last=True, short=("taylor1",))
SAMPLERS = ("euler", "multistep")  # what consumes the estimate: the flow-matching Euler step, or another solver


# ---------------------------------------------------------------------------------------------------- validation
def _check_allowed(estimators) -> tuple[str, ...]:
    if estimators is None:
        return POLY_ESTIMATORS
    estimators = check_estimator_names(estimators)
    allowed = tuple(n for n in POLY_ESTIMATORS if n in estimators)
    if not allowed:
        raise ValueError(f"estimators={tuple(estimators)!r} holds no polynomial estimator; the default schedule needs "
                         f"at least one of {POLY_ESTIMATORS}")
    return allowed


def _pick(preference: tuple[str, ...], allowed: tuple[str, ...]) -> str:
    for name in preference + _FALLBACK:
        if name in allowed:
            return name
    return allowed[0]  # unreachable: _FALLBACK covers every polynomial estimator


# ---------------------------------------------------------------------------------------------------- the rule
def _inverse(u: list[float], t: float, increasing: bool) -> float:
    """The fractional index x with u(x) = t, u piecewise linear through (i, u[i]) (the first crossing when u is not
    increasing, which alpha outside [0, 1] can cause)."""
    if increasing:
        i = min(max(bisect.bisect_left(u, t) - 1, 0), len(u) - 2)
        lo, hi = u[i], u[i + 1]
        return min(max(i + (t - lo) / (hi - lo), 0.0), len(u) - 1.0)
    for i in range(len(u) - 1):
        lo, hi = u[i], u[i + 1]
        if lo <= t <= hi or hi <= t <= lo:
            return i + ((t - lo) / (hi - lo) if hi != lo else 0.0)
    return 0.0 if t < u[0] else float(len(u) - 1)


def _computed_steps(s: list[float], b: int, rule: Rule) -> list[int]:
    n = len(s) - 1
    if b >= n:
        return list(range(n))
    last = rule.last and b >= 2
    w = max(1, min(rule.warmup, b - (1 if last else 0)))
    m = b - w  # computed steps placed after the warm-up (the last one included when `last`)
    if m == 0:
        return list(range(w))
    a, e = w - 1, (n - 1 if last else n)  # the placed steps divide the index range [a, e] (fractional indices)
    parts = m if last else m + 1
    if rule.alpha == 0 and rule.warp == 1:  # exact rational positions: ties round as Schedule.uniform's do
        xs = [(a * parts + (e - a) * k) / parts for k in range(1, m + 1)]
    elif rule.alpha == 0:
        xs = [a + (e - a) * (k / parts) ** rule.warp for k in range(1, m + 1)]
    else:  # evenly in u (a blend of index and sigma), mapped back to a fractional index
        span = s[0] - s[n]
        u = [(1.0 - rule.alpha) * i / n + rule.alpha * (s[0] - s[i]) / span for i in range(n + 1)]
        ua, ue = u[a], u[e]
        inc = all(u[i] < u[i + 1] for i in range(n))
        xs = [_inverse(u, ua + (ue - ua) * (k / parts) ** rule.warp, inc) for k in range(1, m + 1)]
    steps = list(range(w)) + [min(max(round(x), w), n - 1) for x in xs]
    for k in range(w, b):  # strictly increasing, with room left for the steps after
        steps[k] = max(steps[k], steps[k - 1] + 1)
    for k in range(b - 1, w - 1, -1):
        steps[k] = min(steps[k], n - b + k, steps[k + 1] - 1 if k + 1 < b else n - 1)
    if last:
        steps[-1] = n - 1
    return steps


def rule_schedule(sigmas, budget: int, rule: Rule, *, estimators=None):
    """The :class:`~meancache_kernels.Schedule` a :class:`Rule` gives for these sigmas and budget (see
    :func:`default_schedule`)."""
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a meancache_kernels.default_schedule.Rule, got {type(rule).__name__}")
    s = as_sigmas(sigmas)
    n = len(s) - 1
    b = check_budget(budget, n)
    allowed = _check_allowed(estimators)
    meta = {"source": "default", "rule": rule.name}
    if estimators is not None:
        meta["estimators"] = list(allowed)
    return schedule_from_steps(_computed_steps(s, b, rule), n, rule, allowed, meta)


def schedule_from_steps(steps: list[int], n: int, rule: Rule, allowed: tuple[str, ...], meta: dict):
    """The :class:`~meancache_kernels.Schedule` computing ``steps`` (increasing, step 0 first) of ``n``, each gap's
    skipped steps estimated as ``rule`` picks among ``allowed`` (:func:`rule_schedule`'s estimator choice)."""
    from . import Schedule
    from . import estimators as est

    short = _pick(rule.short, allowed)
    long = _pick(rule.long, allowed) if rule.long is not None else short
    mask = [False] * n
    fams, params = [""] * n, [0] * n
    for a, e in zip(steps, steps[1:] + [n]):
        mask[a] = True
        name = short if e - a - 1 <= rule.long_gap else long
        fam, p = est.parse(name)
        for i in range(a + 1, e):
            fams[i], params[i] = fam, p
    return Schedule(mask, params, meta=meta, estimators=fams)


def default_schedule(sigmas, budget: int, *, estimators=None, sampler: str = "euler"):
    """A MeanCache schedule with ``budget`` computed steps for the generation's sigmas, without calibration.

    Args:
        sigmas: the N + 1 strictly decreasing sigmas of the generation, ending at 0 (list, tuple, numpy array or
            tensor): any N, any shift.
        budget: B, the number of computed steps (transformer calls), an int in 1..N. B = N computes every step.
        estimators: None (every polynomial estimator), or the estimator names the skipped steps may use, e.g.
            ``("taylor1", "taylor2")`` where the corrector ``taylorc`` is not allowed; it must hold at least one
            polynomial estimator (``taylor``/``mean``/``taylorc``; ``jvp`` alone is refused).
        sampler: what takes the estimate: ``"euler"`` (the flow-matching Euler step; :data:`DEFAULT_RULE`) or
            ``"multistep"`` (UniPC, DPM-Solver++, FlowMatchAdams, FlowMatchHeun; :data:`MULTISTEP_RULE`).

    Returns:
        A :class:`Schedule` of N steps and exactly B computed ones (step 0 always), ``meta`` =
        ``{"source": "default", "rule": ...}``. Pure host code, deterministic, microseconds.

    The rule is :data:`DEFAULT_RULE` (:data:`MULTISTEP_RULE` for ``sampler="multistep"``); see the module docstring
    and ``bench/results/zero_config.md``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    rule = DEFAULT_RULE if sampler == "euler" else MULTISTEP_RULE
    return rule_schedule(sigmas, budget, rule, estimators=estimators)
