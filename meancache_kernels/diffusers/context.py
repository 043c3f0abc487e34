"""MeanCacheContext: what the transformer hooks and the scheduler adapter of one pipeline share, and the lifecycle of
its generations (start, begin index, per step, per transformer call, learning, end). See :mod:`.hooks`."""

from __future__ import annotations

import dataclasses
import sys
import warnings
import weakref

import torch
from diffusers.utils import logging

from ..cache import MeanCacheState
from ..checks import check_budget
from ..schedule import Schedule
from .config import MeanCacheConfig, adaptive_state, resolve_schedule
from .generation import (
    _computed_at_starts,
    _Generation,
    _model_namespace,
    _RecordingState,
    _restrict,
    _Segment,
    _split_budget,
)
from .scheduler import allowed_estimators, as_host_sigmas, sampler_kind
from .stats import MeanCacheStats

# The documented logger of the generation-start line (the name it had when this code lived in hooks.py).
logger = logging.get_logger("meancache_kernels.diffusers.hooks")

# No flow-matching pipeline makes more transformer calls per step (true CFG: 2). More calls before the first
# scheduler.step mean the loop advances without calling it.
MAX_CALLS_BEFORE_FIRST_STEP = 4


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
        self._finished_stats: MeanCacheStats | None = None
        self._running = None  # weakref to the inner pipeline running the generation (VisualCloze), else None
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
        # the stats of a generation that ran to its end, kept for an end of call that ran no step after it
        self._finished_stats = self.stats if self.generation is not None and self.stats.finished else None
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
        stats, interrupt flag and end of call follow the pipeline it was applied to. The pipelines that pipeline runs
        its loops in (:func:`inner_pipelines`: VisualCloze's ``generation_pipe`` and ``upsampling_pipe``) are part of
        it; the one running is the one whose interrupt flag :meth:`end_generation` reads."""
        running = _calling_pipeline()
        pipe = self._pipe()
        self._running = None
        if running is None or running is pipe:
            return
        if pipe is not None and any(running is inner for inner in inner_pipelines(pipe)):
            self._running = weakref.ref(running)
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
        if gen.step == 0 and gen.call_in_step == 0 and self._finished_stats is not None:
            # set_timesteps again after the last loop, with no step after it (Wan-Animate resets its scheduler at
            # the end of every segment's loop): the stats stay those of the last generation, which ran
            self.stats, self._finished_stats = self._finished_stats, None
            return
        self.stats.finished = gen.step == gen.num_steps
        pipe = self._running() if self._running is not None else self._pipe()  # an inner pipeline's own flag
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
        # A step's model is that of its first call: another model called later in the same step (Ideogram 4's
        # unconditional_transformer) is a CFG branch, not a change of model.
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


def inner_pipelines(pipe) -> list:
    """The pipelines ``pipe`` runs its denoising loops in: the DiffusionPipeline attributes of ``pipe`` (not its
    registered components) that share its scheduler (VisualClozePipeline: ``generation_pipe``,
    ``upsampling_pipe``). Their calls are calls of ``pipe``."""
    from diffusers import DiffusionPipeline

    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return []
    return [v for v in vars(pipe).values()
            if isinstance(v, DiffusionPipeline) and v is not pipe and getattr(v, "scheduler", None) is scheduler]


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
