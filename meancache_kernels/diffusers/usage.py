"""The diffusers conventions around :func:`~meancache_kernels.diffusers.apply_mean_cache`: a context manager that
applies and removes, :func:`is_mean_cache_enabled`, and :func:`preview_schedule`, the schedule a configuration
resolves to for a given N on a pipeline's scheduler, shown without running the model.

    from meancache_kernels.diffusers import MeanCacheConfig, mean_cache, preview_schedule

    print(preview_schedule(pipe, MeanCacheConfig(budget=17), num_inference_steps=50))   # no model call
    with mean_cache(pipe, MeanCacheConfig(budget=17)) as mc:
        image = pipe(prompt, num_inference_steps=50).images[0]
    print(mc.stats)                                     # what the last call inside the block did
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from dataclasses import dataclass

from ..schedule import Schedule
from .config import MeanCacheConfig, adaptive_state, resolve_schedule
from .hooks import _CONTEXT_ATTR, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from .scheduler import (
    _flow_grid,
    _grid_for,
    _kind,
    allowed_estimators,
    as_host_sigmas,
    check_scheduler,
    sampler_kind,
)
from .stats import MeanCacheStats

__all__ = ["MeanCacheHandle", "SchedulePreview", "is_mean_cache_enabled", "mean_cache", "preview_schedule"]


def is_mean_cache_enabled(pipe) -> bool:
    """True when :func:`apply_mean_cache` is in effect on ``pipe`` (and :func:`remove_mean_cache` not called since)."""
    return getattr(pipe, _CONTEXT_ATTR, None) is not None


class MeanCacheHandle:
    """What ``with mean_cache(pipe, config) as mc`` gives: the pipeline, the configuration, and ``mc.stats``, the
    statistics of the last pipeline call (read live inside the block, kept after it)."""

    def __init__(self, pipe, config: MeanCacheConfig):
        self.pipe = pipe
        self.config = config
        self._last: MeanCacheStats | None = None

    @property
    def stats(self) -> MeanCacheStats:
        if is_mean_cache_enabled(self.pipe):
            return get_mean_cache_stats(self.pipe)
        return (self._last or MeanCacheStats()).copy()

    def _close(self) -> None:
        if is_mean_cache_enabled(self.pipe):
            self._last = get_mean_cache_stats(self.pipe)
            remove_mean_cache(self.pipe)

    def __repr__(self) -> str:
        state = "applied" if is_mean_cache_enabled(self.pipe) else "removed"
        return f"MeanCacheHandle({type(self.pipe).__name__}, {self.config.source}, {state})"


@contextlib.contextmanager
def mean_cache(pipe, config: MeanCacheConfig):
    """Apply MeanCache to ``pipe`` for the duration of a ``with`` block and remove it on leaving (also after an
    error), so that the pipeline then generates bit-identically to one never accelerated.

    Yields a :class:`MeanCacheHandle` (``mc.stats``: the statistics of the last call). The same errors as
    :func:`apply_mean_cache` are raised on entering (e.g. ValueError when MeanCache is already applied).
    """
    apply_mean_cache(pipe, config)
    handle = MeanCacheHandle(pipe, config)
    try:
        yield handle
    finally:
        handle._close()


@dataclass(frozen=True)
class SchedulePreview:
    """The schedule a configuration resolves to for one N on one scheduler (:func:`preview_schedule`).

    Attributes:
        schedule: the static schedule of a generation (which steps run the transformer, each skipped step's
            estimator); ``None`` under tolerance control, whose steps are decided while generating.
        sigmas: the N + 1 sigmas it was resolved on.
        scheduler: the scheduler's class name.
        source: the configuration's schedule source (``MeanCacheConfig.source``).
        evaluations_per_step: model evaluations per computed step of the scheduler (FlowMatchHeun: 2, the last
            step 1; else 1). True CFG doubles the transformer calls of each evaluation (Qwen-Image, Wan): it is a
            property of the pipeline call, not of the schedule.
        note: what the schedule does not show (tolerance control, a schedule fitted from another N, ...).
        learns: the configuration learns its schedule from its first generation (``MeanCacheConfig(budget=B)``
            with learning): that generation computes every step, and ``schedule`` is the calibration-free rule the
            learnt schedule replaces.
    """

    schedule: Schedule | None
    sigmas: tuple[float, ...]
    scheduler: str
    source: str
    evaluations_per_step: int = 1
    note: str = ""
    learns: bool = False

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def model_evaluations(self) -> int | None:
        """Model evaluations of one generation with this schedule (None under tolerance control); multiply by 2
        for true CFG."""
        if self.schedule is None:
            return None
        steps = self.schedule.compute_steps
        if self.evaluations_per_step == 1:
            return len(steps)
        return sum(1 if i == self.num_steps - 1 else self.evaluations_per_step for i in steps)

    def __str__(self) -> str:
        n = self.num_steps
        head = f"MeanCache preview: {self.source}, N={n}, scheduler {self.scheduler}"
        lines = [head]
        if self.schedule is not None:
            full = n if self.evaluations_per_step == 1 else self.evaluations_per_step * (n - 1) + 1
            if self.learns:
                lines.append(f"model evaluations: {full} in the first generation (it learns the schedule), then "
                             f"{self.model_evaluations} of {full} per generation (x2 with true CFG: Qwen-Image, Wan)")
                lines.append(f"computed steps (the calibration-free rule; the learnt schedule replaces it): "
                             f"{self.schedule.compute_steps}")
            else:
                lines.append(f"model evaluations per generation: {self.model_evaluations} of {full} "
                             "(x2 with true CFG: Qwen-Image, Wan)")
                lines.append(f"computed steps: {self.schedule.compute_steps}")
            names = self.schedule.estimator_names()
            gaps = []
            steps = self.schedule.compute_steps + [n]
            for a, b in zip(steps, steps[1:]):
                if b - a > 1:
                    used = sorted({names[k] for k in range(a + 1, b)})
                    where = f"{a + 1}" if b - a == 2 else f"{a + 1}-{b - 1}"
                    gaps.append(f"{where}: {'/'.join(used)}")
            lines.append("skipped steps: " + (", ".join(gaps) if gaps else "none"))
            lines.append("step  sigma     ")
            for i in range(n):
                what = "computed" if self.schedule.compute[i] else f"skipped, {names[i]}"
                lines.append(f"{i:>4}  {self.sigmas[i]:.5f}  {what}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _scheduler_of(pipe_or_scheduler):
    sched = getattr(pipe_or_scheduler, "scheduler", None)
    if sched is not None and hasattr(pipe_or_scheduler, "components"):
        return sched
    if hasattr(pipe_or_scheduler, "set_timesteps") and hasattr(pipe_or_scheduler, "config"):
        return pipe_or_scheduler
    raise TypeError(f"pipe_or_scheduler must be a diffusers pipeline or scheduler, got "
                    f"{type(pipe_or_scheduler).__name__}")


def _shift_mu(config, image_seq_len: int) -> float:
    """The resolution-dependent shift ``mu`` diffusers' flow-matching pipelines compute (linear in the sequence
    length between the scheduler's base and max lengths)."""
    lo, hi = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    b0, b1 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (b1 - b0) / (hi - lo)
    return image_seq_len * m + (b0 - m * lo)


def preview_schedule(pipe_or_scheduler, config: MeanCacheConfig, num_inference_steps: int, *, sigmas=None,
                     mu: float | None = None, image_seq_len: int | None = None) -> SchedulePreview:
    """The schedule ``config`` resolves to for ``num_inference_steps`` steps on a pipeline's scheduler, without
    running the model (print it for a table of the steps).

    The sigmas are the scheduler's own for N (a fresh copy of the scheduler, ``set_timesteps(N)``; the pipeline's
    scheduler is not touched). Some pipelines pass their own sigmas (FLUX.1 and Qwen-Image pass
    ``linspace(1, 1/N, N)`` before the shift): pass ``sigmas`` for exactly those. ``budget=B`` alone (the default
    rule) picks its steps from N and B only, so its preview is exact either way. It previews a generation of all N
    steps made by one model: a start mid-schedule (image-to-image, ``strength < 1``) fits the schedule to the steps
    run, and a pipeline with two transformers in turn (Wan 2.2) shares the budget between them, at generation time
    (the INFO log line of each generation gives the schedule it resolved).

    Args:
        pipe_or_scheduler: a diffusers pipeline or its scheduler.
        config: a :class:`MeanCacheConfig`.
        num_inference_steps: N.
        sigmas: N values passed to ``set_timesteps(sigmas=...)`` as a pipeline would (optional).
        mu: the resolution-dependent shift, for schedulers with ``use_dynamic_shifting=True`` (FLUX.1, Qwen-Image).
        image_seq_len: instead of ``mu``: the latent sequence length it is computed from (FLUX.1 / Qwen-Image at
            1024x1024: 4096).

    Raises:
        TypeError: ``config`` is not a MeanCacheConfig, or the scheduler is not one MeanCache supports (or not
            with this configuration's estimators).
        ValueError: bad ``num_inference_steps``, a budget above it, or a dynamic-shifting scheduler without ``mu``
            or ``image_seq_len``.
    """
    if not isinstance(config, MeanCacheConfig):
        raise TypeError(f"config must be a MeanCacheConfig, got {type(config).__name__}")
    scheduler = _scheduler_of(pipe_or_scheduler)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
    check_scheduler(scheduler, config)
    kind = _kind(scheduler)
    kwargs = {}
    params = inspect.signature(scheduler.set_timesteps).parameters
    if mu is not None and image_seq_len is not None:
        raise ValueError("give mu= or image_seq_len=, not both")
    if image_seq_len is not None:
        if isinstance(image_seq_len, bool) or not isinstance(image_seq_len, int) or image_seq_len < 1:
            raise ValueError(f"image_seq_len must be an int >= 1, got {image_seq_len!r}")
        mu = _shift_mu(scheduler.config, image_seq_len)
    if mu is not None:
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu):
            raise ValueError(f"mu must be a finite number, got {mu!r}")
        if "mu" in params:
            kwargs["mu"] = float(mu)
    elif scheduler.config.get("use_dynamic_shifting", False) and "mu" in params:
        raise ValueError(
            f"{type(scheduler).__name__} shifts its sigmas by resolution (use_dynamic_shifting=True): pass mu= or "
            "image_seq_len= (FLUX.1 / Qwen-Image at 1024x1024: image_seq_len=4096)")
    if sigmas is not None:
        if "sigmas" not in params:
            raise ValueError(f"sigmas=: {type(scheduler).__name__}.set_timesteps takes no sigmas")
        sigmas = [float(s) for s in sigmas]
        if len(sigmas) != num_inference_steps:
            raise ValueError(f"sigmas must hold num_inference_steps={num_inference_steps} values (as a pipeline "
                             f"passes them to set_timesteps), got {len(sigmas)}")
        kwargs["sigmas"] = sigmas
    fresh = type(scheduler).from_config(scheduler.config)
    if hasattr(scheduler, "_shift"):
        fresh._shift = scheduler._shift
    fresh.set_timesteps(num_inference_steps, **kwargs)
    host = as_host_sigmas(_flow_grid(fresh, kind))
    allowed = allowed_estimators(scheduler)
    evals = 2 if kind == "heun" else 1
    rule_only = config.schedule is None and config.preset is None and config.profile is None and not config.adaptive
    notes = []
    learns = rule_only and bool(getattr(config, "learn", False))
    if learns:
        notes.append("learn=True: the first generation at a given N, sigmas, latent shape and scheduler computes every "
                     "step and learns the schedule from its trajectory; later ones make B calls. Shown: the "
                     "calibration-free rule (learn=False), which the learned schedule replaces")
    if config.adaptive:
        state = adaptive_state(config, host, allowed)
        if config.tol is not None:
            schedule = None
            notes.append(f"tolerance control (tol={config.tol:g}): which steps run is decided while generating, per "
                         "prompt; get_mean_cache_stats(pipe) tells after the call")
        else:
            from ..adaptive import budget_schedule

            schedule = budget_schedule(host, config.budget, state.estimator_name)
    else:
        base_n = _base_num_steps(config)
        with warnings.catch_warnings():  # the fit's warning is the note below
            warnings.simplefilter("ignore", UserWarning)
            schedule = resolve_schedule(config, host, functools.partial(_grid_for, fresh, kwargs, kind=kind),
                                        allowed=allowed, sampler=sampler_kind(scheduler))
        if base_n is not None and base_n != len(host) - 1:
            notes.append(f"fitted by sigma from the schedule's N={base_n} (a warning at generation time); calibrate "
                         f"and solve at N={len(host) - 1} for the best schedule")
    if sigmas is None and "sigmas" in params:
        notes.append("sigmas: the scheduler's own for N; pipelines that pass their own (FLUX.1, Qwen-Image) run "
                     "slightly different values (sigmas= gives them)"
                     + ("; the default rule's steps depend on N and B only" if rule_only else ""))
    return SchedulePreview(schedule, tuple(host), type(scheduler).__name__, config.source, evals, "\n".join(notes),
                           learns)


def _base_num_steps(config: MeanCacheConfig) -> int | None:
    if config.schedule is not None:
        return config.schedule.num_steps
    if config.profile is not None:
        return config.profile.num_steps
    if config.preset is not None:
        from .. import presets

        return presets.get(config.preset, config.budget).num_steps
    return None

