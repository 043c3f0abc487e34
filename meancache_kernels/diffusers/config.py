"""MeanCacheConfig: where the schedule of a generation comes from, validated at construction.

Exactly one source: a :class:`~meancache_kernels.Schedule`, a published preset (model name + budget), or a
calibration :class:`~meancache_kernels.calibrate.Profile` + budget solved with PSSP (DESIGN.md section 2). The
schedule is fitted to the actual number of steps of each generation by :func:`resolve_schedule`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from .. import presets
from ..calibrate import Profile
from ..schedule import Schedule, fit_schedule

__all__ = ["MeanCacheConfig", "resolve_schedule"]

_BACKENDS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class MeanCacheConfig:
    """Configuration of :func:`~meancache_kernels.diffusers.apply_mean_cache`.

    Args:
        schedule: a :class:`Schedule`; used as is when its N equals the generation's number of steps.
        preset: a published preset model name (``meancache_kernels.presets.available()``), with ``budget``.
        profile: a calibration ``Profile`` (``meancache_kernels.calibrate``), with ``budget``: the schedule is
            solved with PSSP for that budget.
        budget: B, the number of computed steps (with ``preset`` or ``profile`` only).
        gamma: peak-suppression exponent of PSSP (> 0; with ``profile``).
        backend: op backend of the fused estimate: ``"auto"``, ``"torch"`` or ``"triton"``.
        estimators: with ``profile``: the estimators PSSP may use on skipped steps; None (default): every one the
            profile has (:mod:`meancache_kernels.estimators`); ``("jvp",)``: the paper's method exactly.
    """

    schedule: Schedule | None = None
    preset: str | None = None
    profile: Any = None
    budget: int | None = None
    gamma: float = 2.0
    backend: str = "auto"
    estimators: tuple[str, ...] | None = None
    _solved: Schedule | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        given = [name for name in ("schedule", "preset", "profile") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "MeanCacheConfig needs exactly one schedule source: schedule=Schedule(...), preset='<model>' with "
                f"budget=B, or profile=Profile with budget=B; got {given or 'none'}"
            )
        if self.schedule is not None:
            if not isinstance(self.schedule, Schedule):
                raise TypeError(f"schedule must be a meancache_kernels.Schedule, got {type(self.schedule).__name__}")
            if self.budget is not None:
                raise ValueError(
                    f"budget={self.budget!r} is only used with preset= or profile=; a Schedule carries its own budget "
                    f"(B={self.schedule.budget})"
                )
        else:
            if self.budget is None:
                raise ValueError(f"budget is required with {given[0]}= (the number of computed steps B)")
            if isinstance(self.budget, bool) or not isinstance(self.budget, int):
                raise TypeError(f"budget must be an int, got {self.budget!r} ({type(self.budget).__name__})")
            if self.budget < 1:
                raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.preset is not None:
            if not isinstance(self.preset, str):
                raise TypeError(f"preset must be a model name string, got {type(self.preset).__name__}")
            presets.get(self.preset, self.budget)  # raises ValueError naming the available models / budgets
        if self.profile is not None:
            if not isinstance(self.profile, Profile):
                raise TypeError(
                    f"profile must be a meancache_kernels.calibrate.Profile, got {type(self.profile).__name__}"
                )
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, Real):
            raise TypeError(f"gamma must be a real number, got {self.gamma!r}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {self.gamma}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.estimators is not None:
            if self.profile is None:
                raise ValueError("estimators= is only used with profile= (a schedule or preset fixes its estimators)")
            if isinstance(self.estimators, str) or not isinstance(self.estimators, (list, tuple)):
                raise TypeError(f"estimators must be a tuple of estimator names or None, got {self.estimators!r}")
            object.__setattr__(self, "estimators", tuple(self.estimators))
        if self.profile is not None:
            if self.budget > self.profile.num_steps:
                raise ValueError(
                    f"budget={self.budget} exceeds the profile's num_steps={self.profile.num_steps} (B must be 1..N)"
                )
            from ..schedule import solve

            # Solved once here: an infeasible budget is reported at construction, not at the first generation.
            object.__setattr__(self, "_solved", solve(self.profile, self.budget, gamma=float(self.gamma),
                                                      estimators=self.estimators))

    @property
    def source(self) -> str:
        """Human-readable name of the schedule source."""
        if self.schedule is not None:
            return f"schedule (N={self.schedule.num_steps}, B={self.schedule.budget})"
        if self.preset is not None:
            return f"preset {self.preset!r} B={self.budget}"
        est = "" if self.estimators is None else f" estimators={list(self.estimators)}"
        return f"profile B={self.budget} gamma={self.gamma}{est}"


def _base_schedule(config: MeanCacheConfig) -> Schedule:
    if config.schedule is not None:
        return config.schedule
    if config.preset is not None:
        return presets.get(config.preset, config.budget)
    return config._solved


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
    config: MeanCacheConfig, sigmas: list[float], source_grid: Callable[[list[float], int], list[float]] | None = None
) -> Schedule:
    """The schedule of a generation whose N + 1 sigmas are ``sigmas``.

    A schedule (given, preset, or solved from the profile) whose N equals the generation's N is used as is. For
    another N it is carried over by sigma with ``meancache_kernels.schedule.fit_schedule`` (with a warning). The
    grid it was made for is the profile's calibration sigmas; for a schedule or a preset it is
    ``source_grid(sigmas, N_schedule)`` (the pipeline's own grid at the schedule's N, from the scheduler adapter), or
    the generation's sigma curve sampled at the schedule's N when no ``source_grid`` is given.
    """
    num_steps = len(sigmas) - 1
    base = _base_schedule(config)
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
