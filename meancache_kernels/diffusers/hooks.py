"""MeanCache on a diffusers pipeline: a transformer hook and a scheduler adapter sharing one context.

MeanCache works on the guided velocity (after classifier-free guidance), so a skipped step skips every transformer
call of that step, both CFG branches included:

- :class:`MeanCacheHook` (a diffusers ``ModelHook`` with ``new_forward``) sits on each denoiser of the pipeline:
  ``transformer``, ``transformer_2`` (Wan 2.2's second expert) and ``unconditional_transformer`` (Ideogram 4's
  unconditional model) where present, or ``unet`` in a pipeline with none of them (DreamLite: MeanCache does not
  care about the architecture). On a computed step it runs the model; on a skipped step it returns the last real
  output of the same call slot (the call's index within the step: true CFG makes two calls per step, whether of one
  model or, as in Ideogram 4, of two) without running the model. That output only keeps the pipeline's guidance
  arithmetic well-formed: the scheduler adapter discards it.
- the scheduler adapter (``scheduler.py``) records (z_i, v_i, s_i) at every ``step`` and, on skipped steps,
  replaces the model output with the MeanCache estimate.
- companion schedulers (``scheduler.wrap_companion``): a deep copy of the adapted scheduler taken during a call, or a
  scheduler component such as LTX-2's ``audio_scheduler``, steps other latents of the same transformer output (LTX-2's
  and Kandinsky 6's audio). It follows the main generation's computed and skipped steps with estimator states of its
  own, so its skipped steps take its own estimate, never the transformer's stale output.

Which step the loop is in is a host-side counter advanced by ``scheduler.step`` and reset by ``set_timesteps``:
deciding whether to run the transformer reads no device value.

A generation (:class:`_Generation`) covers the steps the loop actually runs: from the scheduler's begin index
(``set_begin_index``: image-to-image, inpainting) or the first step it takes, to the end. Its steps are split into
segments by the transformer that makes them (Wan 2.2's two experts: the model of a step's first call; a second model
called later in the same step, as Ideogram 4's unconditional branch, is a CFG branch, not a change of model); each
segment has its own schedule and estimator state, so no estimate uses another model's velocities.
``start_generation`` (at ``set_timesteps``) builds it, ``start_at`` (at ``set_begin_index``) rebuilds it for a later
start, ``begin_step`` / ``end_step`` (at every ``scheduler.step``) and ``transformer_call`` (at every transformer
forward) run it. A pipeline that runs its loops in inner pipelines sharing its scheduler (VisualClozePipeline:
``generation_pipe``, ``upsampling_pipe``) is accelerated through them: their calls are its calls
(:func:`.context.inner_pipelines`), and their end of call ends the generation. The generation's data live in
:mod:`.generation`, the context that drives them in :mod:`.context`; this module holds the hook and apply / remove.

``MeanCacheConfig(budget=B)`` learns (:class:`meancache_kernels.MeanCache`, one per accelerated pipeline): a
generation of one segment whose key (the sigmas run, the latent shape the transformer sees, the scheduler) has no
learnt schedule yet computes every step, records its trajectory (:class:`_RecordingState`) and learns at its last
step; the key is read at the first step (every schedule computes it), so a later generation at that key switches to
the learnt schedule before anything is recorded. Generations made by several models use the calibration-free rule.
"""

from __future__ import annotations

import functools

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .compat import check_pipeline
from .config import MeanCacheConfig
from .context import MeanCacheContext, inner_pipelines
from .scheduler import (
    check_scheduler,
    unwrap_scheduler,
    wrap_companion,
    wrap_scheduler,
)
from .stats import MeanCacheStats

__all__ = ["MeanCacheHook", "MeanCacheContext", "apply_mean_cache", "remove_mean_cache", "get_mean_cache_stats"]


_MEANCACHE_HOOK = "meancache_hook"
_CONTEXT_ATTR = "_meancache_context"
# The pipeline attributes MeanCache hooks: the transformers (Wan 2.2's second expert, Ideogram 4's unconditional
# model) and, in a pipeline that has none of them, the UNet (DreamLite).
# Scheduler components a loop steps beside pipe.scheduler, for other latents of the same transformer call.
_COMPANION_SCHEDULERS = ("audio_scheduler",)
_TRANSFORMER_NAMES = ("transformer", "transformer_2", "unconditional_transformer")
_UNET_NAME = "unet"
# Hook names of diffusers' step caches (FirstBlockCache, MagCache, FasterCache, PAB, TaylorSeer, SeaCache): a
# transformer carrying one of them already skips work between steps.
_OTHER_CACHE_HOOKS = ("fbc_", "mag_cache_", "faster_cache_", "pyramid_attention_broadcast", "taylorseer_cache",
                      "sea_cache_")


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
    """The denoisers MeanCache hooks on ``pipe``: its transformers (:data:`_TRANSFORMER_NAMES`), or its ``unet``
    when it has none."""
    found = [
        (name, getattr(pipe, name))
        for name in _TRANSFORMER_NAMES
        if isinstance(getattr(pipe, name, None), torch.nn.Module)
    ]
    if not found and isinstance(getattr(pipe, _UNET_NAME, None), torch.nn.Module):
        found = [(_UNET_NAME, getattr(pipe, _UNET_NAME))]
    return found


def apply_mean_cache(pipe, config: MeanCacheConfig) -> None:
    """Accelerate a flow-matching diffusers pipeline with MeanCache, in place.

    Registers :class:`MeanCacheHook` on ``pipe.transformer`` (and ``pipe.transformer_2`` and
    ``pipe.unconditional_transformer`` when present; on ``pipe.unet`` in a pipeline with none of them) and adapts
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
    - **Several denoisers:** every model the loop calls is hooked, so a skipped step runs none of them. Ideogram 4
      calls ``transformer`` (conditional) then ``unconditional_transformer`` at every step: two calls per step, one
      per CFG branch, B calls each (2B in all); the two models within one step are not a change of model. DreamLite
      (``unet``, its CFG branches batched in one call) makes B calls.
    - **Inner pipelines:** VisualClozePipeline runs its loops in ``pipe.generation_pipe`` and (``upsampling_strength
      > 0``) ``pipe.upsampling_pipe``, which share its transformer and scheduler: apply MeanCache to the
      VisualClozePipeline itself. Their calls are its calls (not refused as ``from_pipe`` siblings); each of the two
      generations makes B calls per CFG branch (the upsampling one, an image-to-image pass, counts the steps it runs:
      ``budget`` larger than them is a ValueError), and :func:`get_mean_cache_stats` reports the last one.
      :func:`remove_mean_cache` on the VisualClozePipeline restores all three.
    - **Composition:** a transformer that already has another cache (diffusers' ``enable_cache`` or one of its
      cache hooks, cache-dit) is refused, and ``enable_cache`` on a transformer carrying MeanCache raises.
      ``DiffusionPipeline.from_pipe`` siblings share the scheduler and transformers: a call of a sibling is
      refused before any transformer call (stats, interrupt and end of call follow the pipeline MeanCache was
      applied to).

    Raises:
        TypeError: ``config`` is not a MeanCacheConfig, the pipeline has no denoiser to hook (no ``transformer``,
            no ``unet``), its class is refused
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
            f"{type(pipe).__name__} has no denoiser MeanCache can hook: it needs a pipeline with a `transformer` "
            "module (and optionally `transformer_2` or `unconditional_transformer`) or, with none of them, a `unet`"
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
    # A scheduler component stepped in the same loop for other latents (LTX-2's optional audio_scheduler; without
    # one the pipeline deep-copies pipe.scheduler, which makes a companion by itself) follows the same steps. First,
    # so that a companion refused (Heun) leaves the pipeline untouched.
    context._companions_saved = []
    for name in _COMPANION_SCHEDULERS:
        other = getattr(pipe, name, None)
        if other is not None and other is not scheduler and hasattr(other, "step"):
            try:
                context._companions_saved.append((other, wrap_companion(other, context)))
            except TypeError as e:
                for done, saved in context._companions_saved:
                    unwrap_scheduler(done, saved)
                raise TypeError(f"pipe.{name}: {e}") from None
    for name, module in transformers:
        _apply_mean_cache_hook(module, context, name)
        _guard_enable_cache(module, name, context)
    context._scheduler_saved = wrap_scheduler(scheduler, context)
    _wrap_end_of_call(pipe, context)
    # The pipelines it runs its loops in (VisualCloze): their calls end the generation too.
    context._inner_end_of_call_saved = []
    outer_saved = context._end_of_call_saved
    for inner in inner_pipelines(pipe):
        context._end_of_call_saved = None
        _wrap_end_of_call(inner, context)
        context._inner_end_of_call_saved.append((inner, context._end_of_call_saved))
    context._end_of_call_saved = outer_saved
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
    for other, saved in getattr(context, "_companions_saved", ()):
        unwrap_scheduler(other, saved)
    _unwrap_end_of_call(pipe, context._end_of_call_saved)
    for inner, saved in getattr(context, "_inner_end_of_call_saved", ()):
        _unwrap_end_of_call(inner, saved)
    delattr(pipe, _CONTEXT_ATTR)


def _unwrap_end_of_call(pipe, saved) -> None:
    if "maybe_free_model_hooks" in pipe.__dict__:
        if saved is None:
            del pipe.__dict__["maybe_free_model_hooks"]
        else:
            pipe.maybe_free_model_hooks = saved


def get_mean_cache_stats(pipe) -> MeanCacheStats:
    """Statistics of the pipeline's last (or current) call: steps computed/skipped, transformer calls made/saved."""
    context = getattr(pipe, _CONTEXT_ATTR, None)
    if context is None:
        raise ValueError("MeanCache is not applied to this pipeline: no statistics")
    return context.stats.copy()
