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
"""

from __future__ import annotations

import functools
import weakref

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..cache import MeanCacheState
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

_MEANCACHE_HOOK = "meancache_hook"
_CONTEXT_ATTR = "_meancache_context"
_TRANSFORMER_NAMES = ("transformer", "transformer_2")
# No flow-matching pipeline makes more transformer calls per step (true CFG: 2). More calls before the first
# scheduler.step mean the loop advances without calling it.
MAX_CALLS_BEFORE_FIRST_STEP = 4


class _Decisions:
    """``compute[i]`` of a generation whose steps are decided while it runs (adaptive control): host state only."""

    __slots__ = ("_state",)

    def __init__(self, state):
        self._state = state

    def __getitem__(self, i: int) -> bool:
        return self._state.should_compute(i)


class _Generation:
    """Bookkeeping of one generation (one ``set_timesteps`` .. last ``step``).

    ``schedule`` is the static schedule (None under adaptive control, whose ``state`` decides as it goes);
    ``compute[i]`` says whether step i runs the transformer either way.
    """

    __slots__ = ("schedule", "compute", "state", "num_steps", "step", "call_in_step", "outputs")

    def __init__(self, schedule, state):
        self.schedule = schedule
        self.compute = schedule.compute if schedule is not None else _Decisions(state)
        self.state = state
        self.num_steps = state.num_steps
        self.step = 0
        self.call_in_step = 0
        self.outputs: dict[int, object] = {}


class MeanCacheContext:
    """State shared by the transformer hooks and the scheduler adapter of one pipeline."""

    def __init__(self, config: MeanCacheConfig, pipe, scheduler, transformer_names: tuple[str, ...]):
        self.config = config
        self._pipe = weakref.ref(pipe)
        self.scheduler = scheduler
        self.transformer_names = transformer_names
        self.generation: _Generation | None = None
        self.stats = MeanCacheStats()
        self._schedules: dict[tuple[float, ...], object] = {}
        self._scheduler_saved: dict = {}
        self._end_of_call_saved = None

    # ------------------------------------------------------------------ generation lifecycle
    def start_generation(self, sigmas: torch.Tensor, source_grid=None) -> None:
        """New generation (from ``set_timesteps``): forget the previous one, fit the schedule to these sigmas.

        ``source_grid(sigmas, n)`` gives the pipeline's sigmas for n steps (to fit a schedule made for another N).
        """
        self.generation = None
        host = as_host_sigmas(sigmas)
        allowed = allowed_estimators(self.scheduler)
        if self.config.adaptive:
            state = adaptive_state(self.config, host, allowed)
            self.generation = _Generation(None, state)
            self.stats = MeanCacheStats(num_steps=state.num_steps, schedule=None)
            return
        key = tuple(host)
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = resolve_schedule(self.config, host, source_grid, allowed=allowed,
                                        sampler=sampler_kind(self.scheduler))
            self._schedules = {key: schedule}  # keep one: calls usually repeat the same N
        self.generation = _Generation(schedule, MeanCacheState(schedule, host, backend=self.config.backend))
        self.stats = MeanCacheStats(num_steps=schedule.num_steps, schedule=schedule)

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
    def begin_step(self, step_index: int | None, begin_index: int | None) -> int:
        """Validate that the scheduler is at the step the context expects; returns that step i."""
        gen = self.generation
        i = gen.step
        if i >= gen.num_steps:
            self.abort()
            raise RuntimeError(
                f"MeanCache: scheduler.step() called {i + 1} times after set_timesteps() set {gen.num_steps} steps"
            )
        expected = step_index if step_index is not None else (begin_index or 0)
        if expected != i:
            self.abort()
            raise RuntimeError(
                f"MeanCache: the scheduler is at step {expected} but MeanCache expects step {i}: generations must run "
                "every step from the first one in order (image-to-image starting mid-schedule is not supported)"
            )
        if i == 0:
            self.stats.calls_per_step = gen.call_in_step
        return i

    def end_step(self, i: int, computed: bool, step_index: int | None) -> None:
        gen = self.generation
        if step_index != i + 1:
            self.abort()
            raise RuntimeError(
                f"MeanCache: after step {i} the scheduler's step index is {step_index}, expected {i + 1}: the "
                "generation does not start at the first timestep (image-to-image is not supported)"
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

    # ------------------------------------------------------------------ per transformer call
    # The decision is host-side bookkeeping and is never traced: under pipe.transformer.compile() dynamo would guard
    # on these counters and recompile at every step. recursive=False: the model's forward called from here compiles.
    @torch.compiler.disable(recursive=False)
    def transformer_call(self, original_forward, args, kwargs):
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


class MeanCacheHook(ModelHook):
    """Transformer hook: runs the model on computed steps, answers from the call slot's last output on skipped ones."""

    _is_stateful = True

    def __init__(self, context: MeanCacheContext):
        super().__init__()
        self.context = context

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        return self.context.transformer_call(self.fn_ref.original_forward, args, kwargs)

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
    ``pipe.scheduler`` (a ``FlowMatchEulerDiscreteScheduler``). Every later call of the pipeline fits the schedule
    to its ``num_inference_steps``; :func:`get_mean_cache_stats` tells what the last call did;
    :func:`remove_mean_cache` restores the pipeline.

    Raises:
        TypeError: ``config`` is not a MeanCacheConfig, the pipeline has no transformer, or its scheduler is not a
            deterministic flow-matching Euler scheduler.
        ValueError: MeanCache is already applied to this pipeline or to one of its transformers.
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
            raise ValueError(f"pipe.{name} already carries a MeanCache hook (shared with another pipeline?)")
    scheduler = getattr(pipe, "scheduler", None)
    check_scheduler(scheduler, config)

    context = MeanCacheContext(config, pipe, scheduler, tuple(name for name, _ in transformers))
    for _, module in transformers:
        _apply_mean_cache_hook(module, context)
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


def _apply_mean_cache_hook(module: torch.nn.Module, context: MeanCacheContext) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(MeanCacheHook(context), _MEANCACHE_HOOK)


def _remove_mean_cache_hook(module: torch.nn.Module) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or registry.get_hook(_MEANCACHE_HOOK) is None:
        return
    registry.remove_hook(_MEANCACHE_HOOK, recurse=False)
    # With no hook left, the registry re-assigns the class's forward as an instance attribute: drop it.
    if not registry.hooks and module.__dict__.get("forward") == type(module).forward.__get__(module):
        del module.__dict__["forward"]


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
