"""MeanCacheConfig: what a generation computes and how, as plain data validated at construction.

Where the schedule comes from (one of):

- ``budget`` alone: the one line that sees the model (:class:`meancache_kernels.MeanCache`): the first generation
  at each (N, sigmas, latent shape, scheduler) computes every step (the exact image) and learns the schedule from
  its trajectory; every later one makes B calls per CFG branch. ``learn=False``: the calibration-free default rule
  (:func:`meancache_kernels.default_rule`), fitted to the sigmas of every generation: no model calls, no files;
- ``budget`` with ``adaptive=True``, or ``tol`` alone: online error control per generation
  (:mod:`meancache_kernels.adaptive`): which steps run is decided while generating, from the error of the estimate
  at each computed step;
- ``schedule``: a :class:`~meancache_kernels.Schedule`;
- ``preset`` with ``budget``: a published schedule;
- ``profile`` with ``budget``: PSSP on a calibration :class:`~meancache_kernels.Profile` (docs/design.md 2), with
  every option ``meancache solve`` has (``estimators``, ``gamma``, ``edge_cost``, ``max_skip``, ``always_compute``,
  ``k_range``).

:func:`resolve_schedule` gives the static schedule of a generation from its sigmas.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np

from .. import presets
from ..checks import (
    as_int,
    check_budget,
    check_estimator_names,
    check_gamma,
    check_ops_backend,
    check_solver_backend,
    check_tol,
    int_list,
)
from ..profile import Profile
from ..schedule import Schedule, fit_schedule

__all__ = ["MeanCacheConfig", "adaptive_state", "resolve_schedule"]

EDGE_COSTS = ("velocity", "state")


class _ConfigMeta(type):
    """Names the entry point where diffusers prints the class: ``transformer.enable_cache(MeanCacheConfig(...))``
    raises diffusers' "Cache config <class> is not supported", which then says what to call instead."""

    def __str__(cls):
        return (f"{cls.__module__}.{cls.__qualname__} (MeanCache adapts the scheduler too: apply_mean_cache(pipe, "
                "config) or `with mean_cache(pipe, config):`, not enable_cache)")


@dataclass(frozen=True)
class MeanCacheConfig(metaclass=_ConfigMeta):
    """Configuration of :func:`~meancache_kernels.diffusers.apply_mean_cache`.

    ``MeanCacheConfig(budget=B)`` is all most users need: the first generation runs every step and learns where
    this model changes (its image is the exact one); every later generation makes B transformer calls (per CFG
    branch). ``learn=False``: B calls from the first generation, by the calibration-free even rule.

    Args:
        budget: B, the number of computed steps per generation (1..N; checked against each generation's N).
        schedule: a :class:`Schedule`; used as is when its N equals the generation's number of steps.
        preset: a published preset model name (``meancache_kernels.presets.available()``), with ``budget``.
        profile: a calibration :class:`~meancache_kernels.Profile`, with ``budget``: the schedule is solved with
            PSSP for that budget (:func:`meancache_kernels.solve`, whose arguments the next six fields are).
        adaptive: with ``budget``: decide which steps run while generating, spending exactly B calls
            (:mod:`meancache_kernels.adaptive`).
        tol: error tolerance of the adaptive mode without a budget: a step is computed when the estimated error of
            skipping on exceeds it (0: every step computed); the calls made are in the stats.
        estimators: the estimator names skipped steps may use. With ``profile``: PSSP's candidates (None: the
            polynomial ones the profile has; ``("jvp",)``: the paper's method exactly). With ``budget`` alone or
            adaptive: restricts the default rule (None: the rule's choice).
        gamma: PSSP's peak-suppression exponent (> 0; with ``profile``).
        edge_cost: PSSP's edge cost, ``"velocity"`` or ``"state"`` (None: solve's default; with ``profile``).
        max_skip: longest run of skipped steps (None: as calibrated; with ``profile``).
        always_compute: steps that must be computed (with ``profile``).
        k_range: ``(k_lo, k_hi)``, the JVP spans allowed (with ``profile``).
        learn: with ``budget`` alone: True (default) learns the schedule from the first generation at each key
            (:class:`meancache_kernels.MeanCache`); False uses the calibration-free default rule from the start.
        cache_dir: with learning: a directory where the learnt schedules are written and read back, so the learning
            happens once per model, resolution and N, not once per process (None: in memory only).
        backend: op backend of the fused estimate: ``"auto"``, ``"torch"`` or ``"triton"``.
        solver_backend: PSSP solver backend: ``"auto"``, ``"cpp"`` or ``"python"``.

    It is not a diffusers cache config: apply it with ``apply_mean_cache(pipe, config)``, not
    ``pipe.transformer.enable_cache(config)`` (MeanCache adapts the scheduler too, which ``enable_cache`` cannot).
    """

    budget: int | None = None
    _: KW_ONLY
    schedule: Schedule | None = None
    preset: str | None = None
    profile: Any = None
    adaptive: bool = False
    tol: float | None = None
    estimators: tuple[str, ...] | None = None
    gamma: float = 2.0
    edge_cost: str | None = None
    max_skip: int | None = None
    always_compute: tuple[int, ...] = (0,)
    k_range: tuple[int, int] | None = None
    learn: bool | None = None
    cache_dir: Any = None
    backend: str = "auto"
    solver_backend: str = "auto"
    _solved: Schedule | None = field(default=None, init=False, repr=False, compare=False)
    # profile_schedule's re-solves, by the usable estimators (solved once per scheduler kind, not at every check)
    _resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # learner(namespace)'s MeanCache objects: applying this configuration again to the same model keeps what it learnt
    _learners: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        given = [name for name in ("schedule", "preset", "profile") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"MeanCacheConfig takes exactly one schedule source or none (budget= alone: the "
                             f"default rule); got {given}")
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"adaptive must be a bool, got {self.adaptive!r}")
        if self.tol is not None:
            check_tol(self.tol)
            if self.budget is not None:
                raise ValueError("give budget= (exactly B calls) or tol= (as many calls as the tolerance needs), "
                                 "not both")
            object.__setattr__(self, "adaptive", True)
        if self.adaptive and given:
            raise ValueError(f"adaptive control decides the steps itself: it takes budget= or tol=, not {given[0]}=")
        if self.schedule is not None:
            if not isinstance(self.schedule, Schedule):
                raise TypeError(f"schedule must be a meancache_kernels.Schedule, got {type(self.schedule).__name__}")
            if self.budget is not None:
                raise ValueError(
                    f"budget={self.budget!r} is not used with schedule=; a Schedule carries its own budget "
                    f"(B={self.schedule.budget})"
                )
        elif self.budget is None and self.tol is None:
            what = f" with {given[0]}=" if given else ""
            raise ValueError(
                f"MeanCacheConfig needs budget=B{what}: MeanCacheConfig(budget=B) alone uses the calibration-free "
                "default; otherwise give exactly one schedule source: schedule=Schedule(...), preset='<model>' with "
                "budget=B, or profile=Profile with budget=B (budget is required with preset= and profile=)"
            )
        if self.budget is not None:
            check_budget(self.budget)
        if self.preset is not None:
            if not isinstance(self.preset, str):
                raise TypeError(f"preset must be a model name string, got {type(self.preset).__name__}")
            presets.get(self.preset, self.budget)  # raises ValueError naming the available models / budgets
        if self.profile is not None and not isinstance(self.profile, Profile):
            raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(self.profile).__name__}")
        check_gamma(self.gamma)
        check_ops_backend(self.backend)
        check_solver_backend(self.solver_backend, "solver_backend")
        if self.estimators is not None:
            if self.schedule is not None or self.preset is not None:
                raise ValueError("estimators= is only used with profile=, budget= alone or adaptive control (a "
                                 "schedule or preset fixes its estimators)")
            object.__setattr__(self, "estimators", check_estimator_names(self.estimators))
            if self.profile is None and all(e == "jvp" for e in self.estimators):
                raise ValueError(f"estimators={list(self.estimators)}: the default rule and adaptive control need a "
                                 "polynomial estimator (taylor1, taylor2, mean1, mean2, taylorc1, taylorc2); the "
                                 "paper's jvp needs a profile (profile=..., estimators=('jvp',)) or a preset")
        self._check_solver_options()
        self._check_learning(given)
        if self.profile is not None:
            check_budget(self.budget, self.profile.num_steps)
            from ..solver import solve

            # Solved once here: an infeasible budget is reported at construction, not at the first generation.
            object.__setattr__(self, "_solved", solve(self.profile, self.budget, **self.solve_kwargs()))

    def _check_learning(self, given: list[str]) -> None:
        if self.learn is not None and not isinstance(self.learn, bool):
            raise TypeError(f"learn must be a bool or None, got {self.learn!r}")
        alone = not given and not self.adaptive
        if self.learn and not alone:
            what = "adaptive control" if self.adaptive else f"{given[0]}="
            raise ValueError(f"learn=True is the budget-alone one line; {what} does not learn (drop learn=)")
        object.__setattr__(self, "learn", alone if self.learn is None else self.learn)
        if self.cache_dir is not None:
            import os

            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise TypeError(f"cache_dir must be a path or None, got {type(self.cache_dir).__name__}")
            if not self.learn:
                raise ValueError("cache_dir= holds learnt schedules: it needs MeanCacheConfig(budget=B) with learning "
                                 "(learn=True, the default)")

    def learner(self, namespace: str = ""):
        """The :class:`meancache_kernels.MeanCache` of this configuration for the model ``namespace`` names (made at
        the first request; the same object for the same model afterwards, so a configuration applied again keeps
        what it learnt)."""
        from ..learning import MeanCache

        if not self.learn:
            raise ValueError("this configuration does not learn (learn=False, or a schedule source other than budget=)")
        if namespace not in self._learners:
            self._learners[namespace] = MeanCache(self.budget, estimators=self.estimators, cache_dir=self.cache_dir,
                                                  backend=self.backend, solver_backend=self.solver_backend,
                                                  namespace=namespace)
        return self._learners[namespace]

    def _check_solver_options(self) -> None:
        pssp_only = {"gamma": self.gamma != 2.0, "edge_cost": self.edge_cost is not None,
                     "max_skip": self.max_skip is not None, "always_compute": tuple(self.always_compute or ()) != (0,),
                     "k_range": self.k_range is not None}
        used = [k for k, v in pssp_only.items() if v]
        if used and self.profile is None:
            raise ValueError(f"{', '.join(used)} {'is a PSSP option' if len(used) == 1 else 'are PSSP options'}: "
                             "only used with profile=")
        if self.edge_cost is not None and self.edge_cost not in EDGE_COSTS:
            raise ValueError(f"edge_cost must be one of {EDGE_COSTS} or None, got {self.edge_cost!r}")
        if self.max_skip is not None and as_int(self.max_skip, "max_skip") < 0:
            raise ValueError(f"max_skip must be >= 0 or None, got {self.max_skip}")
        ac = () if self.always_compute is None else self.always_compute
        object.__setattr__(self, "always_compute", tuple(int_list(list(ac), "always_compute")))
        if self.k_range is not None:
            k = int_list(self.k_range, "k_range")
            if len(k) != 2:
                raise ValueError(f"k_range must be a pair (k_lo, k_hi), got {self.k_range!r}")
            object.__setattr__(self, "k_range", tuple(k))

    def profile_schedule(self, allowed: tuple[str, ...] | None = None) -> Schedule:
        """The schedule solved from ``profile``. Under a scheduler that takes only some estimators (``allowed``, e.g.
        UniPC: taylor1 / taylor2) and with ``estimators`` not given, the profile is solved again over the estimators
        of the profile that the scheduler allows (an ``estimators`` given by the user is kept, and refused by the
        scheduler check where it does not apply)."""
        if self.profile is None:
            raise ValueError("profile_schedule needs a configuration with profile=")
        solved = self._solved
        if allowed is None or self.estimators is not None or {e for e in solved.estimator_names() if e} <= set(allowed):
            return solved
        usable = tuple(e for e in self.profile.estimators if e in allowed)
        if not usable:
            raise ValueError(f"the profile has costs for {list(self.profile.estimators)}; none of them works with this "
                             f"pipeline's scheduler, which allows {list(allowed)}: calibrate a profile with them")
        if usable not in self._resolved:
            from ..solver import solve

            self._resolved[usable] = solve(self.profile, self.budget, **dict(self.solve_kwargs(), estimators=usable))
        return self._resolved[usable]

    def solve_kwargs(self) -> dict:
        """The keyword arguments of :func:`meancache_kernels.solve` this configuration stands for."""
        return {"gamma": float(self.gamma), "always_compute": self.always_compute, "max_skip": self.max_skip,
                "k_range": self.k_range, "backend": self.solver_backend, "estimators": self.estimators,
                "edge_cost": self.edge_cost}

    @property
    def source(self) -> str:
        """Human-readable name of the schedule source."""
        est = "" if self.estimators is None else f" estimators={list(self.estimators)}"
        if self.schedule is not None:
            return f"schedule (N={self.schedule.num_steps}, B={self.schedule.budget})"
        if self.preset is not None:
            return f"preset {self.preset!r} B={self.budget}"
        if self.profile is not None:
            return f"profile B={self.budget} gamma={self.gamma}{est}"
        if self.adaptive:
            return (f"adaptive B={self.budget}" if self.tol is None else f"adaptive tol={self.tol:g}") + est
        if self.learn:
            return f"learnt from the first generation B={self.budget}{est}"
        return f"default rule B={self.budget}{est}"


def same_curve_sigmas(sigmas: list[float], num_steps: int) -> list[float]:
    """Sigmas of ``num_steps`` steps on the sigma curve of ``sigmas`` (N + 1 values from a diffusers flow-matching
    grid: sigma_k = f(1 - k / N), shifted or not), by linear interpolation in t."""
    n = len(sigmas) - 1
    t_grid = np.linspace(0.0, 1.0, n + 1)  # t of sigmas[::-1]: sigma_N = f(0) = 0, ..., sigma_0 = f(1)
    t_new = 1.0 - np.arange(num_steps + 1) / num_steps
    out = np.interp(t_new, t_grid, np.asarray(sigmas[::-1], dtype=np.float64))
    out[-1] = 0.0
    return out.tolist()


def resolve_schedule(
    config: MeanCacheConfig, sigmas: list[float], source_grid: Callable[[list[float], int], list[float]] | None = None,
    *, allowed: tuple[str, ...] | None = None, sampler: str = "euler",
) -> Schedule:
    """The static schedule of a generation whose N + 1 sigmas are ``sigmas``.

    ``budget`` alone: the default rule on these very sigmas (``allowed``: the estimators the pipeline's scheduler
    can use; ``sampler``: ``"euler"`` or ``"multistep"``, what takes the estimate, which picks the rule). A schedule
    (given, preset, or solved from the profile) whose N equals the generation's N is used as is. For another N it is
    carried over by sigma with :func:`meancache_kernels.schedule.fit_schedule` (with a warning). The grid it was
    made for is the profile's calibration sigmas; for a schedule or a preset it is ``source_grid(sigmas,
    N_schedule)`` (the pipeline's own grid at the schedule's N, from the scheduler adapter), or the generation's
    sigma curve sampled at the schedule's N when no ``source_grid`` is given.
    """
    num_steps = len(sigmas) - 1
    if config.schedule is None and config.preset is None and config.profile is None:
        from ..default_rule import default_schedule

        check_budget(config.budget, num_steps, name="budget (num_inference_steps is N)")
        est = config.estimators
        if allowed is not None:
            est = tuple(e for e in (est or allowed) if e in allowed)
            if not est:
                raise ValueError(f"estimators={list(config.estimators)}: none of them works with this pipeline's "
                                 f"scheduler; allowed: {list(allowed)}")
        return default_schedule(sigmas, config.budget, estimators=est, sampler=sampler)
    base = config.schedule if config.schedule is not None else (
        presets.get(config.preset, config.budget) if config.preset is not None else config.profile_schedule(allowed))
    if base.num_steps == num_steps:
        return base
    warnings.warn(
        f"MeanCache: fitting the {config.source} (N={base.num_steps}) to num_inference_steps={num_steps} by sigma; "
        f"it was not optimised for N={num_steps} (calibrate and solve at that N for the best schedule)",
        UserWarning,
        stacklevel=2,
    )
    if config.profile is not None:
        source_sigmas = config.profile.sigmas.tolist()  # the calibration grid
    elif source_grid is not None:
        source_sigmas = source_grid(sigmas, base.num_steps)
    else:
        source_sigmas = same_curve_sigmas(sigmas, base.num_steps)
    return fit_schedule(base, source_sigmas, sigmas, warn=False)



def adaptive_state(config: MeanCacheConfig, sigmas: list[float], allowed: tuple[str, ...] | None = None):
    """The :class:`meancache_kernels.adaptive.AdaptiveState` of a generation under adaptive control: its estimator
    is the first of ``config.estimators`` the scheduler allows (``allowed``), else ``taylorc2`` where allowed, else
    ``taylor2``."""
    from ..adaptive import AdaptiveState

    if config.budget is not None:
        check_budget(config.budget, len(sigmas) - 1, name="budget (num_inference_steps is N)")
    prefer = tuple(config.estimators or ()) + ("taylorc2", "taylor2")
    usable = [e for e in prefer if (allowed is None or e in allowed) and e != "jvp"]
    if not usable:
        raise ValueError(f"estimators={list(config.estimators)}: adaptive control needs a polynomial estimator the "
                         f"pipeline's scheduler allows: {list(allowed or ())}")
    return AdaptiveState(sigmas, budget=config.budget, tol=config.tol, estimator=usable[0], backend=config.backend)
