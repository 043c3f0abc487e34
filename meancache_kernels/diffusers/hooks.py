"""MeanCache on a diffusers pipeline: a transformer hook and a scheduler adapter sharing one context.

MeanCache works on the guided velocity (after classifier-free guidance), so a skipped step skips every transformer
call of that step, both CFG branches included:

- :class:`MeanCacheHook` (a diffusers ``ModelHook`` with ``new_forward``) sits on each transformer of the pipeline.
  On a computed step it runs the model; on a skipped step it returns the last real output of the same call slot
  (the call's index within the step: true CFG makes two calls per step) without running the model. That output
  only keeps the pipeline's guidance arithmetic well-formed: the scheduler adapter discards it.
- the scheduler adapter (``scheduler.py``) records (z_i, v_i, s_i) at every ``step`` and, on skipped steps,
  replaces the model output with the MeanCache estimate.

Which step the loop is in is a host-side counter advanced by ``scheduler.step`` and reset by ``set_timesteps``:
deciding whether to run the transformer reads no device value.

A generation (:class:`_Generation`) covers the steps the loop actually runs: from the scheduler's begin index
(``set_begin_index``: image-to-image, inpainting) or the first step it takes, to the end. Its steps are split into
segments by the transformer that makes them (Wan 2.2's two experts); each segment has its own schedule and estimator
state, so no estimate uses another model's velocities. ``start_generation`` (at ``set_timesteps``) builds it,
``start_at`` (at ``set_begin_index``) rebuilds it for a later start, ``begin_step`` / ``end_step`` (at every
``scheduler.step``) and ``transformer_call`` (at every transformer forward) run it.

``MeanCacheConfig(budget=B)`` learns (:class:`meancache_kernels.MeanCache`, one per accelerated pipeline): a
generation of one segment whose key (the sigmas run, the latent shape the transformer sees, the scheduler) has no
learnt schedule yet computes every step, records its trajectory (:class:`_RecordingState`) and learns at its last
step; the key is read at the first step (every schedule computes it), so a later generation at that key switches to
the learnt schedule before anything is recorded. Generations made by several models use the calibration-free rule.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
import weakref

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.utils import logging

from ..cache import MeanCacheState
from ..checks import check_budget
from ..schedule import Schedule
from .compat import check_pipeline
from .config import MeanCacheConfig, adaptive_state, resolve_schedule
from .scheduler import (
    allowed_estimators,
    as_host_sigmas,
    check_scheduler,
    sampler_kind,
    unwrap_scheduler,
    wrap_scheduler,
)
from .stats import MeanCacheStats

__all__ = ["MeanCacheHook", "apply_mean_cache", "remove_mean_cache", "get_mean_cache_stats"]

logger = logging.get_logger(__name__)

_MEANCACHE_HOOK = "meancache_hook"
_CONTEXT_ATTR = "_meancache_context"
_TRANSFORMER_NAMES = ("transformer", "transformer_2")
# No flow-matching pipeline makes more transformer calls per step (true CFG: 2). More calls before the first
# scheduler.step mean the loop advances without calling it.
MAX_CALLS_BEFORE_FIRST_STEP = 4
# Hook names of diffusers' step caches (FirstBlockCache, MagCache, FasterCache, PAB, TaylorSeer, SeaCache): a
# transformer carrying one of them already skips work between steps.
_OTHER_CACHE_HOOKS = ("fbc_", "mag_cache_", "faster_cache_", "pyramid_attention_broadcast", "taylorseer_cache",
                      "sea_cache_")


class _Decisions:
    """``compute[i]`` of a generation whose steps are decided while it runs (adaptive control): host state only."""

    __slots__ = ("_state",)

    def __init__(self, state):
        self._state = state

    def __getitem__(self, i: int) -> bool:
        return self._state.should_compute(i)


class _RecordingState(MeanCacheState):
    """Every step computed, the trajectory recorded for learning: z_0..z_{N-1} and v_0..v_{N-1} (detached copies,
    on the latents' device)."""

    def __init__(self, sigmas: list[float], backend: str):
        super().__init__(Schedule.full(len(sigmas) - 1), sigmas, backend=backend)
        self.zs: list[torch.Tensor] = []
        self.vs: list[torch.Tensor] = []

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        super()._record(i, z, v)
        self.zs.append(z.detach().clone())
        self.vs.append(v.detach().clone())

    def trajectory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [N+1, S, ...], v [N, S, ...]); z_N is the Euler step from z_{N-1} with v_{N-1}."""
        z_last = self.zs[-1] + (self.sigmas[-1] - self.sigmas[-2]) * self.vs[-1].to(self.zs[-1].dtype)
        return torch.stack(self.zs + [z_last]), torch.stack(self.vs)


def _model_namespace(pipe, names: tuple[str, ...]) -> str:
    """The model's identity in learnt-schedule keys: the transformer classes, a hash of their configs and a few of
    their weights (two fine-tunes of one architecture learn apart)."""
    import hashlib
    import json

    parts = []
    for name in names:
        module = getattr(pipe, name, None)
        cfg = dict(getattr(module, "config", None) or {})
        weights = [float(p.detach().reshape(-1)[:8].double().sum()) for _, p in zip(range(4), module.parameters())]
        parts.append(f"{type(module).__name__}:" + json.dumps(cfg, sort_keys=True, default=str) + repr(weights))
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]
    return f"{type(getattr(pipe, names[0], None)).__name__}-{digest}"


class _Segment:
    """Steps ``start .. stop - 1`` of a generation (indices among the steps run) made by one model.

    Its schedule and estimator state cover these steps only, on the segment's sigmas shifted to end at 0 (the
    Euler update and every estimator read only differences of sigmas): estimates never use another model's
    velocities, and the first step of the segment is computed.
    """

    __slots__ = ("start", "stop", "model", "schedule", "state")

    def __init__(self, start: int, stop: int, model: str | None, schedule, state):
        self.start, self.stop, self.model, self.schedule, self.state = start, stop, model, schedule, state


class _SegmentedState:
    """The estimator state of a generation with several segments: step i goes to its segment's state."""

    def __init__(self, segments: list[_Segment], sigmas: list[float]):
        self.segments = segments
        self.sigmas = sigmas  # the generation's (unshifted) sigmas: Heun's second stage reads differences only
        self.num_steps = segments[-1].stop

    def segment(self, i: int) -> _Segment:
        for seg in self.segments:
            if i < seg.stop:
                return seg
        raise IndexError(f"step index i={i} is out of range for {self.num_steps} steps")

    def should_compute(self, i: int) -> bool:
        seg = self.segment(i)
        return seg.state.should_compute(i - seg.start)

    def record(self, i: int, z, v):
        seg = self.segment(i)
        return seg.state.record(i - seg.start, z, v)

    def skip(self, i: int, z):
        seg = self.segment(i)
        return seg.state.skip(i - seg.start, z)

    def estimate(self, i: int, z):
        seg = self.segment(i)
        return seg.state.estimate(i - seg.start, z)

    @property
    def estimator(self):  # adaptive control: one estimator per generation (Heun's second stage reads it)
        return self.segments[0].state.estimator

    def schedule_so_far(self):
        return _concat([seg.state.schedule_so_far() for seg in self.segments if seg.state.next_step > 0])


def _concat(schedules: list[Schedule]) -> Schedule:
    """One schedule running ``schedules`` one after the other (for the stats of a segmented generation)."""
    if len(schedules) == 1:
        return schedules[0]
    meta = dict(schedules[0].meta or {}, segments=[s.num_steps for s in schedules])
    return Schedule([c for s in schedules for c in s.compute], [k for s in schedules for k in s.spans], meta=meta,
                    estimators=[e for s in schedules for e in s.estimators])


def _restrict(schedule: Schedule, start: int, stop: int) -> Schedule:
    """Steps ``start .. stop - 1`` of ``schedule`` as a schedule of their own; its first step is computed."""
    if start == 0 and stop == schedule.num_steps:
        return schedule
    comp = list(schedule.compute[start:stop])
    spans = list(schedule.spans[start:stop])
    est = list(schedule.estimators[start:stop])
    comp[0], spans[0], est[0] = True, 0, ""
    return Schedule(comp, spans, meta=schedule.meta, estimators=est)


def _computed_at_starts(schedule: Schedule, parts: list[tuple[int, int]]) -> tuple[Schedule, int]:
    """``schedule`` with the first step of every part ``(start, stop)`` computed, at the same number of computed
    steps in the parts where it can: a part whose first step is skipped gets its own first computed step moved there,
    or, having none, the last computed step of the part before it (not that part's first). Returns the schedule and
    the number of computed steps it had to add (parts left with nothing to move)."""
    comp, spans, est = list(schedule.compute), list(schedule.spans), list(schedule.estimators)
    added = 0
    for k, (start, stop) in enumerate(parts):
        if comp[start]:
            continue
        like = (spans[start], est[start])  # the skipped first step's estimator: the moved step takes it
        mine = [c for c in range(start + 1, stop) if comp[c]]
        before = [c for c in range(parts[k - 1][0] + 1, start) if comp[c]] if k > 0 else []
        moved = mine[0] if mine else (before[-1] if before else None)
        if moved is None:
            added += 1
        else:
            comp[moved], (spans[moved], est[moved]) = False, like
        comp[start], spans[start], est[start] = True, 0, ""
    if added == 0 and comp == list(schedule.compute):
        return schedule, 0
    return Schedule(comp, spans, meta=schedule.meta, estimators=est), added


def _split_budget(budget: int, lengths: list[int]) -> list[int]:
    """B shared between segments of ``lengths`` steps in proportion to their steps, each at least 1 and at most its
    length (needs len(lengths) <= budget <= sum(lengths))."""
    n = sum(lengths)
    ideal = [budget * length / n for length in lengths]
    shares = [max(1, min(length, round(x))) for length, x in zip(lengths, ideal)]
    while sum(shares) > budget:
        k = max((k for k in range(len(shares)) if shares[k] > 1), key=lambda k: shares[k] - ideal[k])
        shares[k] -= 1
    while sum(shares) < budget:
        k = max((k for k in range(len(shares)) if shares[k] < lengths[k]), key=lambda k: ideal[k] - shares[k])
        shares[k] += 1
    return shares


class _Generation:
    """Bookkeeping of one generation (one ``set_timesteps`` .. last ``step``).

    ``offset`` is the scheduler's index of the first step run (> 0 for image-to-image and inpainting, which start
    mid-schedule); the generation's own step indices i = 0 .. num_steps - 1 count the steps run. ``segments`` split
    those steps by the model that makes them (one segment unless the pipeline changes transformer). ``schedule`` is
    the static schedule of all steps run (None under adaptive control, whose ``state`` decides as it goes);
    ``compute[i]`` says whether step i runs the transformer either way.
    """

    __slots__ = ("offset", "sigmas", "segments", "schedule", "compute", "state", "num_steps", "step", "call_in_step",
                 "outputs")

    def __init__(self, offset: int, sigmas: list[float], segments: list[_Segment]):
        self.offset = offset
        self.sigmas = sigmas
        self.num_steps = len(sigmas) - 1
        self.step = 0
        self.call_in_step = 0
        self.outputs: dict[int, object] = {}
        self.set_segments(segments)

    def set_segments(self, segments: list[_Segment]) -> None:
        self.segments = segments
        if len(segments) == 1:
            self.state = segments[0].state
            self.schedule = segments[0].schedule
        else:
            self.state = _SegmentedState(segments, self.sigmas)
            static = all(seg.schedule is not None for seg in segments)
            self.schedule = _concat([seg.schedule for seg in segments]) if static else None
        self.compute = self.schedule.compute if self.schedule is not None else _Decisions(self.state)

    def segment(self, i: int) -> _Segment:
        for seg in self.segments:
            if i < seg.stop:
                return seg
        return self.segments[-1]


class MeanCacheContext:
    """State shared by the transformer hooks and the scheduler adapter of one pipeline."""

    def __init__(self, config: MeanCacheConfig, pipe, scheduler, transformer_names: tuple[str, ...]):
        self.config = config
        self._pipe = weakref.ref(pipe)
        self.scheduler = scheduler
        self.transformer_names = transformer_names
        self.generation: _Generation | None = None
        self.stats = MeanCacheStats()
        self._schedules: dict[tuple, Schedule] = {}
        self._scheduler_saved: dict = {}
        self._end_of_call_saved = None
        self._enable_cache_saved: dict = {}
        # set by start_generation: the scheduler's sigmas and per-step timesteps, and the grid function
        self._run = None
        self._start_announced = False  # set_begin_index fixed where the generation starts
        # learning (MeanCacheConfig(budget=B), learn=True): the learner, the pipeline calls counted, the call that
        # learnt each key, and the current generation's state: None, "pending" (key not read yet) or its key
        self.learner = config.learner(_model_namespace(pipe, transformer_names)) if config.learn else None
        self._calls = 0
        self._learnt_in: dict[str, int] = {}
        self._learning: str | None = None
        self._sample_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ generation lifecycle
    def start_generation(self, sigmas: torch.Tensor, source_grid=None, timesteps=None) -> None:
        """New generation (from ``set_timesteps``): forget the previous one, fit the schedule to these sigmas.

        ``source_grid(sigmas, n)`` gives the pipeline's sigmas for n steps (to fit a schedule made for another N);
        ``timesteps`` (one per step) tell which transformer makes each step where the pipeline switches models
        (Wan 2.2). The generation starts at the first step; :meth:`start_at` moves its start (image-to-image).
        """
        self.generation = None
        self._run = (as_host_sigmas(sigmas), source_grid, None if timesteps is None else as_host_sigmas(timesteps))
        self._start_announced = False
        self._calls += 1
        self._sample_shape = None
        self._check_running_pipeline()
        self._begin(0)

    def start_at(self, offset: int) -> None:
        """The generation starts at the scheduler's step ``offset`` (``set_begin_index``; image-to-image): the
        schedule is fitted again to the steps actually run. Before any transformer call of the generation."""
        gen = self.generation
        if gen is None:
            return
        self._start_announced = True
        if offset == gen.offset:
            return
        if offset >= len(self._run[0]) - 1:  # no step left to run: the pipeline's own check says so
            self.abort()
            return
        if gen.step > 0 or gen.call_in_step > 0:
            self.abort()
            raise RuntimeError(
                f"MeanCache: the scheduler's begin index was set to {offset} after the generation had started at "
                f"step {gen.offset}: set_begin_index must come before the denoising loop"
            )
        self._begin(offset)

    def _begin(self, offset: int) -> None:
        sigmas_all, source_grid, timesteps = self._run
        n_all = len(sigmas_all) - 1
        if not 0 <= offset < n_all:
            self.abort()
            raise RuntimeError(f"MeanCache: the generation starts at step {offset} of a schedule of {n_all} steps")
        sigmas = sigmas_all[offset:]
        n = len(sigmas) - 1
        # B of the default rule and adaptive control counts the calls of the steps run (a given, published or solved
        # schedule is restricted to them instead: its budget is that of all N steps)
        budget = None if _static_source(self.config) else self.config.budget
        if budget is not None and offset == 0:
            check_budget(budget, n, name="budget (num_inference_steps is N)")
        if budget is not None and offset > 0 and budget > n:
            self.generation = None
            raise ValueError(
                f"MeanCache: budget={budget} but this generation runs {n} of its {n_all} steps (it starts at step "
                f"{offset}: image-to-image or inpainting with strength < 1, or a pipeline that slices its "
                f"timesteps). B counts the transformer calls actually made: use budget <= {n}, or a higher strength "
                "or num_inference_steps"
            )
        models = self._models_per_step(timesteps[offset:] if timesteps is not None else None, n)
        bounds = [0] + [i for i in range(1, n) if models[i] != models[i - 1]] + [n]
        segments = [_Segment(a, b, models[a], None, None) for a, b in zip(bounds, bounds[1:])]
        if budget is not None and len(segments) > budget:
            self.generation = None
            raise ValueError(
                f"MeanCache: budget={budget} but this generation is made by {len(segments)} models in turn "
                f"({', '.join(f'{s.model} from step {s.start}' for s in segments)}): each model's first step is "
                f"computed, so budget must be >= {len(segments)}"
            )
        try:
            self._plan(segments, sigmas, offset, source_grid)
        except BaseException:
            self.generation = None
            raise
        self.generation = _Generation(offset, sigmas, segments)
        self.stats = MeanCacheStats(num_steps=n, schedule=self.generation.schedule, first_step=offset,
                                    segments=tuple((s.start, s.model) for s in segments) if len(segments) > 1 else ())

    def _plan(self, segments: list[_Segment], sigmas: list[float], offset: int, source_grid) -> None:
        """Give every segment its schedule (None under adaptive control) and estimator state.

        A given, published or solved schedule (``schedule``, ``preset``, ``profile``) is the one of the whole
        generation, restricted to each segment's steps (its first step computed). The default rule and adaptive
        control fit the budget to the steps run, shared between segments in proportion to their steps.
        """
        config = self.config
        allowed = allowed_estimators(self.scheduler)
        static = _static_source(config)
        full = None
        if static:
            full, added = _computed_at_starts(self._schedule_for(config, self._run[0], source_grid, allowed),
                                              [(offset + s.start, offset + s.stop) for s in segments])
            if added:
                warnings.warn(f"MeanCache: the {config.source} computes none of the steps run before step "
                              f"{offset + segments[-1].start}; that step is computed: {added} transformer call(s) "
                              "more than the schedule makes there", UserWarning, stacklevel=5)
        lengths = [s.stop - s.start for s in segments]
        if len(segments) == 1 or static or config.budget is None:
            budgets = [config.budget] * len(segments)
        else:
            budgets = _split_budget(config.budget, lengths)
        self._learning = None
        if self.learner is not None and len(segments) == 1:  # read the key at the first step (_resolve_learning)
            self._learning = "pending"
            segments[0].schedule = Schedule.full(len(sigmas) - 1)
            segments[0].state = _RecordingState(sigmas, config.backend)
            return
        if self.learner is not None:
            config = dataclasses.replace(config, learn=False, cache_dir=None)  # several models: the blind rule
        for seg, b in zip(segments, budgets):
            shift = sigmas[seg.stop]  # 0 for the last segment
            seg_sigmas = [s - shift for s in sigmas[seg.start:seg.stop + 1]]
            cfg = config if b == config.budget else dataclasses.replace(config, budget=b)
            if config.adaptive:
                seg.state = adaptive_state(cfg, seg_sigmas, allowed)
                continue
            if static:
                seg.schedule = _restrict(full, offset + seg.start, offset + seg.stop)
            else:
                seg.schedule = self._schedule_for(cfg, seg_sigmas, None, allowed)
            seg.state = MeanCacheState(seg.schedule, seg_sigmas, backend=config.backend)

    def _schedule_for(self, config, sigmas: list[float], source_grid, allowed) -> Schedule:
        key = (tuple(sigmas), config.budget)
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = resolve_schedule(config, sigmas, source_grid, allowed=allowed,
                                        sampler=sampler_kind(self.scheduler))
            if len(self._schedules) >= 4:  # calls usually repeat the same N: keep a few
                self._schedules.pop(next(iter(self._schedules)))
            self._schedules[key] = schedule
        return schedule

    def _models_per_step(self, timesteps: list[float] | None, n: int) -> list[str | None]:
        """Which transformer makes each step run, where the pipeline says so ahead (Wan 2.2: ``boundary_ratio``,
        ``transformer`` at timesteps >= the boundary, ``transformer_2`` below); None where not known ahead (a change
        of model is then found at the call, :meth:`_model_changed`)."""
        pipe = self._pipe()
        ratio = None
        if pipe is not None and timesteps is not None and "transformer_2" in self.transformer_names:
            ratio = dict(getattr(pipe, "config", None) or {}).get("boundary_ratio")
        if ratio is None:
            return [None] * n
        boundary = ratio * self.scheduler.config.num_train_timesteps
        return ["transformer" if t >= boundary else "transformer_2" for t in timesteps[:n]]

    def _check_running_pipeline(self) -> None:
        """Refuse a call of another pipeline sharing this scheduler (``DiffusionPipeline.from_pipe``): MeanCache's
        stats, interrupt flag and end of call follow the pipeline it was applied to."""
        running = _calling_pipeline()
        pipe = self._pipe()
        if running is None or running is pipe:
            return
        applied = type(pipe).__name__ if pipe is not None else "a pipeline that no longer exists"
        raise RuntimeError(
            f"MeanCache: this call runs a {type(running).__name__}, which shares its scheduler (and transformers) with "
            f"the {applied} MeanCache was applied to (DiffusionPipeline.from_pipe shares components). MeanCache "
            "follows the one pipeline it was applied to (its stats, interrupt and end of call): run that pipeline, or "
            "remove_mean_cache(<that pipeline>) then apply_mean_cache(<this pipeline>, config)"
        )

    def abort(self) -> None:
        """Drop the current generation (after an error)."""
        if self.generation is not None:
            self.generation.outputs.clear()
        self.generation = None

    def end_generation(self) -> None:
        """End of a pipeline call (diffusers resets stateful hooks in ``maybe_free_model_hooks``).

        Raises RuntimeError when the transformer ran but the loop left steps untaken without being interrupted:
        the pipeline does not drive its loop through ``scheduler.step``, so MeanCache cannot work on it.
        """
        gen = self.generation
        if gen is None:
            return
        self.abort()
        self.stats.finished = gen.step == gen.num_steps
        pipe = self._pipe()
        interrupted = bool(getattr(pipe, "_interrupt", False)) if pipe is not None else False
        if gen.step < gen.num_steps and self.stats.transformer_calls > 0 and not interrupted:
            raise RuntimeError(
                f"MeanCache: the pipeline call ended after {gen.step} of {gen.num_steps} scheduler.step() calls "
                f"while the transformer ran {self.stats.transformer_calls} times. MeanCache needs a denoising loop "
                "that calls scheduler.step() once per timestep; this pipeline's loop does not (remove_mean_cache(pipe))"
            )

    # ------------------------------------------------------------------ per step
    def begin_step(self, index: int) -> int:
        """Validate that the scheduler is at the step the context expects (``index``: the scheduler's step, in
        MeanCache steps); returns the generation's step i."""
        gen = self.generation
        i = gen.step
        if i >= gen.num_steps:
            self.abort()
            raise RuntimeError(
                f"MeanCache: scheduler.step() called {i + 1} times after set_timesteps() set {gen.num_steps} steps"
            )
        if i == 0 and index != gen.offset and not self._start_announced:
            # The loop starts at another step than announced (a pipeline that slices its timesteps without
            # set_begin_index): fit the schedule to the steps run now. Step 0 is computed by every schedule, so
            # the calls made so far count as they are.
            calls, outputs, model = gen.call_in_step, gen.outputs, gen.segments[0].model
            try:
                self._begin(index)
            except BaseException:
                self.abort()
                raise
            gen = self.generation
            gen.call_in_step, gen.outputs = calls, outputs
            if gen.segments[0].model is None:
                gen.segments[0].model = model
            self.stats.transformer_calls = calls
        if index != gen.offset + i:
            self.abort()
            raise RuntimeError(
                f"MeanCache: the scheduler is at step {index} but MeanCache expects step {gen.offset + i}: a "
                "generation must run its steps in order"
            )
        if i == 0:
            self.stats.calls_per_step = gen.call_in_step
            if self._learning == "pending":
                self._resolve_learning()
            if logger.isEnabledFor(logging.INFO):
                logger.info(self._describe())
        return i

    def _resolve_learning(self) -> None:
        """At the first step of a learning-capable generation: run the learnt schedule of its key, or learn it."""
        gen = self.generation
        kind = sampler_kind(self.scheduler)
        key = self.learner.key(gen.sigmas, self._sample_shape or (), f"{kind}/{type(self.scheduler).__name__}")
        entry = self.learner.lookup(key)
        if entry is None:
            self._learning = key
            self.stats.learning = True
            return
        self._learning = None
        seg = gen.segments[0]
        seg.schedule = entry.schedule
        seg.state = MeanCacheState(entry.schedule, gen.sigmas, backend=self.config.backend)
        gen.set_segments(gen.segments)
        self.stats.schedule = gen.schedule
        self.stats.learnt_in = self._learnt_in.get(key, 0)  # 0: read from cache_dir
        self.stats.learnt = dict(entry.info, calls=entry.calls)

    def end_step(self, i: int, computed: bool, step_index: int | None) -> None:
        gen = self.generation
        if step_index != gen.offset + i + 1:
            self.abort()
            raise RuntimeError(
                f"MeanCache: after step {gen.offset + i} the scheduler's step index is {step_index}, expected "
                f"{gen.offset + i + 1}: a generation must run its steps in order"
            )
        if computed:
            self.stats.steps_computed += 1
        else:
            self.stats.steps_skipped += 1
        gen.step = i + 1
        gen.call_in_step = 0
        if gen.step == gen.num_steps:
            self.stats.finished = True
            if gen.schedule is None:  # adaptive: the schedule this generation ran
                self.stats.schedule = gen.state.schedule_so_far()
            gen.outputs.clear()  # the cached outputs are not needed any more
            if self._learning not in (None, "pending") and isinstance(gen.state, _RecordingState):
                key, self._learning = self._learning, None
                z, v = gen.state.trajectory()
                entry = self.learner.learn_from(z, v, gen.sigmas, sampler=sampler_kind(self.scheduler), key=key)
                self._learnt_in[key] = self._calls
                self.stats.learnt_in = self._calls
                self.stats.learnt = dict(entry.info, calls=entry.calls)
                gen.state.zs, gen.state.vs = [], []

    def _describe(self) -> str:
        """One line on the generation starting: steps, budget, computed steps, estimators, models."""
        gen = self.generation
        n_all = len(self._run[0]) - 1
        steps = f"N={gen.num_steps}" + (f" (steps {gen.offset}..{n_all - 1} of {n_all})" if gen.offset else "")
        models = ""
        if len(gen.segments) > 1:
            models = ", models " + ", ".join(f"{s.model} from step {s.start}" for s in gen.segments)
        if gen.schedule is None:
            return f"MeanCache: {steps}, {self.config.source}: computed steps decided while generating{models}"
        if self._learning not in (None, "pending"):
            return (f"MeanCache: {steps}, learning: every step computed in this first generation at this N, latent "
                    f"shape and scheduler; later ones make B={self.config.budget} calls per branch "
                    f"({self.config.source})")
        sched = gen.schedule
        names = sorted({e for e in sched.estimator_names() if e})
        return (f"MeanCache: {steps}, B={sched.budget}, computed steps {sched.compute_steps}, estimators "
                f"{', '.join(names) or 'none'} ({self.config.source}){models}")

    # ------------------------------------------------------------------ per transformer call
    # The decision is host-side bookkeeping and is never traced: under pipe.transformer.compile() dynamo would guard
    # on these counters and recompile at every step. recursive=False: the model's forward called from here compiles.
    @torch.compiler.disable(recursive=False)
    def transformer_call(self, original_forward, args, kwargs, model: str | None = None):
        pipe = self._pipe()
        if pipe is not None and getattr(pipe, "scheduler", self.scheduler) is not self.scheduler:
            # The new scheduler is not adapted: running on would silently generate without MeanCache.
            self.abort()
            raise RuntimeError(
                "MeanCache: pipe.scheduler was replaced after apply_mean_cache(); call remove_mean_cache(pipe), set "
                "the scheduler, then apply_mean_cache(pipe, config) again"
            )
        gen = self.generation
        if gen is None or gen.step >= gen.num_steps:  # outside a generation: plain forward
            return original_forward(*args, **kwargs)
        i = gen.step
        slot = gen.call_in_step
        gen.call_in_step = slot + 1
        if i == 0 and slot == 0 and self._learning == "pending":
            x = kwargs.get("hidden_states", args[0] if args else None)
            self._sample_shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
        if slot == 0 and model is not None:
            seg = gen.segment(i)
            if seg.model is None:  # the first call of the segment's model (not known ahead)
                seg.model = model
            elif seg.model != model:
                self._model_changed(i, model)
        if i == 0 and slot >= MAX_CALLS_BEFORE_FIRST_STEP:
            self.abort()
            raise RuntimeError(
                f"MeanCache: the transformer was called {slot + 1} times before the first scheduler.step(): the "
                "pipeline's loop does not call scheduler.step() once per timestep, which MeanCache needs "
                "(remove_mean_cache(pipe) to run it without MeanCache)"
            )
        if gen.compute[i] or slot not in gen.outputs:
            out = original_forward(*args, **kwargs)
            gen.outputs[slot] = out
            self.stats.transformer_calls += 1
            return out
        self.stats.transformer_calls_saved += 1
        return gen.outputs[slot]

    def _model_changed(self, i: int, model: str) -> None:
        """Step i is made by another model than the steps before it, which the pipeline did not say ahead: a new
        segment starts at i, computed, with its own estimator history. It takes the calls the current segment had
        left (the default rule and adaptive control solve again for them; a given schedule moves its first computed
        step after i to i); when none were left, that is one call more than the budget (with a warning)."""
        if self._learning is not None:  # several models: nothing is learnt from this generation
            self._learning = None
            self.stats.learning = False
        gen = self.generation
        seg = gen.segment(i)
        at, stop = i - seg.start, seg.stop - seg.start
        if at == 0:  # the segment starts here anyway (computed): only its model was not the one announced
            seg.model = model
            self.stats.segments = tuple((s.start, s.model) for s in gen.segments) if len(gen.segments) > 1 else ()
            return
        shift = gen.sigmas[seg.stop]
        sigmas = [s - shift for s in gen.sigmas[i:seg.stop + 1]]
        allowed = allowed_estimators(self.scheduler)
        tail = _Segment(i, seg.stop, model, None, None)
        if seg.schedule is not None:
            left = sum(seg.schedule.compute[at:])
            if not _static_source(self.config) and left >= 1:  # the default rule, for the calls left
                tail.schedule = self._schedule_for(dataclasses.replace(self.config, budget=left), sigmas, None, allowed)
                extra = False
            else:  # the given schedule, its first computed step after i moved to i (the steps before i have run)
                moved, added = _computed_at_starts(seg.schedule, [(at, stop)])
                tail.schedule = _restrict(moved, at, stop)
                extra = added > 0
            seg.schedule = _restrict(seg.schedule, 0, at)
            tail.state = MeanCacheState(tail.schedule, sigmas, backend=self.config.backend)
        else:
            left = None if seg.state.budget is None else seg.state.budget - seg.state.calls
            extra = left is not None and left < 1
            cfg = self.config if left is None else dataclasses.replace(self.config, budget=max(left, 1))
            tail.state = adaptive_state(cfg, sigmas, allowed)
        if extra:
            warnings.warn(f"MeanCache: {model} makes step {gen.offset + i} after {seg.model}; a model's first step "
                          "is computed: one transformer call more than the budget", UserWarning, stacklevel=4)
        seg.stop = i
        k = gen.segments.index(seg)
        gen.set_segments(gen.segments[:k + 1] + [tail] + gen.segments[k + 1:])
        if gen.schedule is not None:
            self.stats.schedule = gen.schedule
        self.stats.segments = tuple((s.start, s.model) for s in gen.segments)


def _static_source(config: MeanCacheConfig) -> bool:
    """Whether the schedule comes made (``schedule``, ``preset``, ``profile``) rather than from the budget."""
    return config.schedule is not None or config.preset is not None or config.profile is not None


def _calling_pipeline():
    """The diffusers pipeline whose ``__call__`` is on the stack (the nearest), or None."""
    from diffusers import DiffusionPipeline

    frame = sys._getframe(2)
    for _ in range(16):
        if frame is None:
            return None
        if "self" in frame.f_code.co_varnames[:1]:
            obj = frame.f_locals.get("self")
            if isinstance(obj, DiffusionPipeline):
                return obj
        frame = frame.f_back
    return None


class MeanCacheHook(ModelHook):
    """Transformer hook: runs the model on computed steps, answers from the call slot's last output on skipped ones."""

    _is_stateful = True

    def __init__(self, context: MeanCacheContext, name: str | None = None):
        super().__init__()
        self.context = context
        self.name = name  # the pipeline attribute of the transformer ("transformer", "transformer_2")

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        return self.context.transformer_call(self.fn_ref.original_forward, args, kwargs, self.name)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # diffusers calls this from pipe.maybe_free_model_hooks() at the end of every pipeline call.
        self.context.end_generation()
        return module


def _transformers(pipe) -> list[tuple[str, torch.nn.Module]]:
    return [
        (name, getattr(pipe, name))
        for name in _TRANSFORMER_NAMES
        if isinstance(getattr(pipe, name, None), torch.nn.Module)
    ]


def apply_mean_cache(pipe, config: MeanCacheConfig) -> None:
    """Accelerate a flow-matching diffusers pipeline with MeanCache, in place.

    Registers :class:`MeanCacheHook` on ``pipe.transformer`` (and ``pipe.transformer_2`` when present) and adapts
    ``pipe.scheduler`` (``FlowMatchEulerDiscreteScheduler``, UniPC / DPM-Solver++ in flow mode,
    ``FlowMatchHeunDiscreteScheduler`` or ``FlowMatchAdamsScheduler``). Every later call of the pipeline fits the
    schedule to its ``num_inference_steps``; :func:`get_mean_cache_stats` tells what the last call did;
    :func:`remove_mean_cache` restores the pipeline.

    - **Image-to-image and inpainting** (``strength < 1``: the loop starts mid-schedule, at the scheduler's
      ``set_begin_index``, or at the first ``step`` for a pipeline that only slices its timesteps): the schedule is
      fitted to the steps actually run, and B counts the calls actually made. ``budget`` larger than the steps run
      is a ValueError at ``set_begin_index``, before any transformer call (at the first ``step`` for a pipeline
      that slices without it). A given, published or solved schedule (``schedule=``, ``preset=``, ``profile=``) is
      the one of the whole N steps, restricted to the steps run: as many calls as it makes there, the first step
      run computed (its first computed step after that moves there).
    - **A change of model within a generation** (Wan 2.2: ``transformer`` down to the ``boundary_ratio``,
      ``transformer_2`` below it; any pipeline whose steps are made by ``transformer`` and ``transformer_2`` in
      turn): the steps of each model are a segment of their own, whose first step is computed and whose estimates
      use only that model's velocities. The budget is shared between segments in proportion to their steps
      (each at least 1) and the schedule solved per segment, so the calls still total B. A given schedule keeps
      its number of calls: a segment's first computed step moves to its first step (or, with none, the last one
      of the segment before). A change the pipeline does not announce ahead (no ``boundary_ratio``) is found at
      the call and handled the same way from there (one call more when nothing is left to move).
    - **Composition:** a transformer that already has another cache (diffusers' ``enable_cache`` or one of its
      cache hooks, cache-dit) is refused, and ``enable_cache`` on a transformer carrying MeanCache raises.
      ``DiffusionPipeline.from_pipe`` siblings share the scheduler and transformers: a call of a sibling is
      refused before any transformer call (stats, interrupt and end of call follow the pipeline MeanCache was
      applied to).

    Raises:
        TypeError: ``config`` is not a MeanCacheConfig, the pipeline has no transformer, its class is refused
            (:mod:`.compat`), or its scheduler is not one MeanCache supports (``scheduler.check_scheduler``), or the
            schedule uses estimators that scheduler does not allow.
        ValueError: MeanCache is already applied to this pipeline or to one of its transformers, or another cache
            is enabled on one of its transformers.
    """
    if not isinstance(config, MeanCacheConfig):
        raise TypeError(f"config must be a MeanCacheConfig, got {type(config).__name__}")
    if getattr(pipe, _CONTEXT_ATTR, None) is not None:
        raise ValueError("MeanCache is already applied to this pipeline: call remove_mean_cache(pipe) first")
    check_pipeline(pipe)
    transformers = _transformers(pipe)
    if not transformers:
        raise TypeError(
            f"{type(pipe).__name__} has no transformer: MeanCache needs a pipeline with a `transformer` "
            "(and optionally `transformer_2`) module"
        )
    for name, module in transformers:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(_MEANCACHE_HOOK) is not None:
            raise ValueError(f"pipe.{name} already carries a MeanCache hook (shared with another pipeline, e.g. one "
                             "made with DiffusionPipeline.from_pipe? remove_mean_cache(<that pipeline>) first)")
        other = _other_cache(pipe, module)
        if other is not None:
            raise ValueError(
                f"pipe.{name} already has another cache enabled ({other}). MeanCache skips whole transformer calls; "
                "stacked on a cache that skips work inside them, what either one computes is undefined. Disable it "
                f"first (pipe.{name}.disable_cache() for diffusers' enable_cache) or use that cache alone"
            )
    scheduler = getattr(pipe, "scheduler", None)
    check_scheduler(scheduler, config)

    context = MeanCacheContext(config, pipe, scheduler, tuple(name for name, _ in transformers))
    for name, module in transformers:
        _apply_mean_cache_hook(module, context, name)
        _guard_enable_cache(module, name, context)
    context._scheduler_saved = wrap_scheduler(scheduler, context)
    _wrap_end_of_call(pipe, context)
    setattr(pipe, _CONTEXT_ATTR, context)


def _wrap_end_of_call(pipe, context: MeanCacheContext) -> None:
    """diffusers pipelines end every call with ``self.maybe_free_model_hooks()``; it resets the hooks of
    transformers that have diffusers' CacheMixin, not of the others (SD3, Z-Image): close the generation there too."""
    original = getattr(pipe, "maybe_free_model_hooks", None)
    if original is None:
        return
    context._end_of_call_saved = pipe.__dict__.get("maybe_free_model_hooks")

    @functools.wraps(original)
    def maybe_free_model_hooks(*args, **kwargs):
        try:
            context.end_generation()
        finally:
            original(*args, **kwargs)

    pipe.maybe_free_model_hooks = maybe_free_model_hooks


def _accelerate_forward(module: torch.nn.Module):
    """accelerate's forward wrapper on ``module`` (``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``:
    ``module.forward`` calls ``module._old_forward`` between its pre- and post-forward), or None."""
    if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") and "forward" in module.__dict__:
        return module.__dict__["forward"]
    return None


def _apply_mean_cache_hook(module: torch.nn.Module, context: MeanCacheContext, name: str | None = None) -> None:
    # Under accelerate's offload hook the MeanCache hook goes inside it: the pipeline re-installs offloading after
    # every call (remove: forward = _old_forward; add: wraps forward), which keeps what _old_forward runs.
    outer = _accelerate_forward(module)
    if outer is not None:
        module.forward = module._old_forward
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(MeanCacheHook(context, name), _MEANCACHE_HOOK)
    if outer is not None:
        module._old_forward = module.forward
        module.forward = outer


def _other_cache(pipe, module: torch.nn.Module) -> str | None:
    """What other cache ``module`` (a transformer of ``pipe``) carries, or None."""
    if getattr(module, "is_cache_enabled", False):
        return f"diffusers' {type(module._cache_config).__name__} (enable_cache)"
    for sub_name, sub in module.named_modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None:
            for hook_name in registry.hooks:
                if hook_name.startswith(_OTHER_CACHE_HOOKS):
                    return f"diffusers hook {hook_name!r} on {sub_name or 'the transformer itself'}"
        if type(sub).__module__.startswith("cache_dit"):
            return f"cache-dit ({type(sub).__name__} on {sub_name or 'the transformer itself'})"
    if getattr(type(pipe), "_is_cached", False) is True or getattr(module, "_is_cached", False) is True:
        return "cache-dit (the pipeline or transformer is marked _is_cached)"
    return None


def _guard_enable_cache(module: torch.nn.Module, name: str, context: MeanCacheContext) -> None:
    """diffusers' ``enable_cache`` on a transformer carrying MeanCache raises (until :func:`remove_mean_cache`)."""
    original = getattr(module, "enable_cache", None)
    if original is None:
        return
    context._enable_cache_saved[name] = module.__dict__.get("enable_cache")

    @functools.wraps(original)
    def enable_cache(*args, **kwargs):
        raise ValueError(
            f"MeanCache is applied to this {type(module).__name__} (pipe.{name}); stacking diffusers' enable_cache on "
            "it is not supported (what either cache computes would be undefined): remove_mean_cache(pipe) first"
        )

    module.enable_cache = enable_cache


def _unguard_enable_cache(module: torch.nn.Module, name: str, context: MeanCacheContext) -> None:
    if name not in context._enable_cache_saved:
        return
    saved = context._enable_cache_saved.pop(name)
    if saved is None:
        module.__dict__.pop("enable_cache", None)
    else:
        module.enable_cache = saved


def _remove_mean_cache_hook(module: torch.nn.Module) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or registry.get_hook(_MEANCACHE_HOOK) is None:
        return
    outer = _accelerate_forward(module)  # kept outside, around what remains
    if outer is not None:
        module.forward = module._old_forward
    registry.remove_hook(_MEANCACHE_HOOK, recurse=False)
    # With no hook left, the registry re-assigns the class's forward as an instance attribute: drop it.
    if not registry.hooks and module.__dict__.get("forward") == type(module).forward.__get__(module):
        del module.__dict__["forward"]
    if outer is not None:
        module._old_forward = module.forward
        module.forward = outer


def remove_mean_cache(pipe) -> None:
    """Undo :func:`apply_mean_cache`: the pipeline then generates bit-identically to one never accelerated.

    Raises:
        ValueError: MeanCache is not applied to this pipeline.
    """
    context = getattr(pipe, _CONTEXT_ATTR, None)
    if context is None:
        raise ValueError("MeanCache is not applied to this pipeline (nothing to remove)")
    context.abort()
    for name in context.transformer_names:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            _remove_mean_cache_hook(module)
            _unguard_enable_cache(module, name, context)
    unwrap_scheduler(context.scheduler, context._scheduler_saved)
    if "maybe_free_model_hooks" in pipe.__dict__:
        if context._end_of_call_saved is None:
            del pipe.__dict__["maybe_free_model_hooks"]
        else:
            pipe.maybe_free_model_hooks = context._end_of_call_saved
    delattr(pipe, _CONTEXT_ATTR)


def get_mean_cache_stats(pipe) -> MeanCacheStats:
    """Statistics of the pipeline's last (or current) call: steps computed/skipped, transformer calls made/saved."""
    context = getattr(pipe, _CONTEXT_ATTR, None)
    if context is None:
        raise ValueError("MeanCache is not applied to this pipeline: no statistics")
    return context.stats.copy()
