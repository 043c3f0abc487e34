"""Adapter of a diffusers flow-matching scheduler: MeanCache bookkeeping at ``step`` and ``set_timesteps``.

The adapter wraps the *instance's* ``step`` and ``set_timesteps`` (the class is untouched, and removal puts the
instance back as it was). ``set_timesteps`` runs unchanged, then starts a new generation on the shared context
(reset, schedule fitted to the actual N and sigmas). What ``step`` does depends on the scheduler:

- **Euler** (``FlowMatchEulerDiscreteScheduler``'s own step): at step i, on a computed step it records
  (z_i, v_i, s_i) and runs the scheduler's Euler step; on a skipped step it returns the fused estimate-and-Euler
  result of the MeanCache estimator, advancing the scheduler's step index as its own ``step`` does. Every estimator
  works here (:func:`allowed_estimators`).
- **one evaluation per step, any solver** (``UniPCMultistepScheduler`` and ``DPMSolverMultistepScheduler`` in flow
  mode, ``FlowMatchAdamsScheduler``): the scheduler's *own* step always runs. On a computed step it gets the model
  output (recorded); on a skipped step it gets the estimate of the model output at that step's sigma, so the
  solver's multistep history, corrector included, is fed consistently. Only estimators that predict the
  instantaneous velocity at s_i qualify: ``taylor1`` and ``taylor2`` (the Lagrange polynomial in sigma through the
  last computed velocities, evaluated at s_i). ``jvp`` and ``mean`` estimate the *average* velocity over an Euler
  step [s_i, s_{i+1}] and ``taylorc`` rewrites z at the next computed step (a correction of Euler increments): they
  are Euler-only, and a schedule using them is refused with a TypeError naming the estimators that work.
- **Heun** (``FlowMatchHeunDiscreteScheduler``, two evaluations per step: its timesteps are duplicated and the
  pipeline calls ``step`` once per stage). A MeanCache step is one Heun step (sigma interval), so N is the
  pipeline's ``num_inference_steps``. A computed step runs both stages (2 transformer evaluations; the last step is
  Euler-only in diffusers: 1); the first stage's output, the velocity at (z_i, s_i) on the trajectory, is recorded.
  A skipped step runs none: the first stage gets the estimate at s_i, the second the same polynomial at s_{i+1},
  so Heun's update is the trapezoidal rule on the extrapolated velocity. Same estimators as above.

**Companion schedulers.** Audio-video pipelines (LTX-2, Kandinsky 6 with ``sample_audio=True``) step a
``copy.deepcopy`` of the scheduler, taken in the call, for the audio latents with the same transformer call's audio
output. The adapter installs the instance's ``__deepcopy__``: a copy is made from the scheduler as it was before the
adapter and, when taken inside a generation (a call of the pipeline running, or a generation in progress), adapted as
a *companion* of the same context (:func:`wrap_companion`). A companion follows the main generation's computed and
skipped steps at its own step index (stepping before or after the main scheduler), keeps its own estimator state per
segment (same schedule and sigmas, fed with its own latents and model outputs) and on a skipped step, where the hook
gave it the call's stale output, uses its own estimate the way the main adapter does. It makes no transformer call
and does not touch the context's counters or stats; outside a generation, and after ``remove_mean_cache``, it (and
any copy then taken) is a plain scheduler.

Schedulers that are not deterministic flow-matching ODE solvers with a velocity (flow) output (DDIM, UniPC without
``prediction_type="flow_prediction"`` and ``use_flow_sigmas=True``, SDE variants, ``s_churn``) get a TypeError.
"""

from __future__ import annotations

import copy
import functools
import inspect

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchEulerDiscreteSchedulerOutput,
)

from .. import estimators as _estimators
from .. import ops

__all__ = [
    "SUPPORTED_SCHEDULERS",
    "VELOCITY_ESTIMATORS",
    "allowed_estimators",
    "sampler_kind",
    "check_scheduler",
    "check_euler_scheduler",
    "wrap_scheduler",
    "wrap_companion",
    "unwrap_scheduler",
]

# The instance attributes the adapter installs (``__deepcopy__``: companion schedulers, see wrap_companion).
_WRAPPED = ("step", "set_timesteps", "set_begin_index", "__deepcopy__")
# Estimators whose estimate is the velocity at s_i itself: what a solver other than Euler consumes as model output.
VELOCITY_ESTIMATORS = tuple(f"taylor{p}" for p in _estimators.POLY_ORDERS)

_EULER, _ONE_EVAL, _HEUN = "euler", "one evaluation per step", "heun"


def _multistep_classes() -> tuple[type, ...]:
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    return (UniPCMultistepScheduler, DPMSolverMultistepScheduler)


def _heun_class() -> type:
    from diffusers import FlowMatchHeunDiscreteScheduler

    return FlowMatchHeunDiscreteScheduler


def _adams_class() -> type:
    from .adams import FlowMatchAdamsScheduler

    return FlowMatchAdamsScheduler


def _supported() -> tuple[type, ...]:
    return (FlowMatchEulerDiscreteScheduler, _adams_class(), _heun_class()) + _multistep_classes()


SUPPORTED_SCHEDULERS = _supported()
_SWITCH = "pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)"


def _kind(scheduler) -> str:
    """Which adapter ``scheduler`` takes (``_EULER``, ``_ONE_EVAL`` or ``_HEUN``); TypeError when none fits."""
    name = type(scheduler).__name__
    supported = ", ".join(c.__name__ for c in SUPPORTED_SCHEDULERS)
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise TypeError(
            f"MeanCache supports deterministic flow-matching schedulers ({supported}; UniPC and DPM-Solver++ with "
            f"prediction_type='flow_prediction' and use_flow_sigmas=True); the pipeline's scheduler is {name}. For a "
            f"flow-matching model, switch first: {_SWITCH}"
        )
    cfg = scheduler.config
    for attr in ("_step_index", "_begin_index"):
        if not hasattr(scheduler, attr):
            raise TypeError(f"{name} has no {attr}: not a diffusers flow-matching scheduler")
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        for flag in ("stochastic_sampling", "invert_sigmas"):
            if cfg.get(flag, False):
                raise TypeError(
                    f"MeanCache supports the deterministic flow-matching ODE; {name} is configured with {flag}=True"
                )
        if type(scheduler).step is FlowMatchEulerDiscreteScheduler.step:
            if getattr(scheduler, "order", 1) != 1:
                raise TypeError(f"MeanCache supports one model evaluation per step; scheduler.order={scheduler.order}")
            return _EULER
        if isinstance(scheduler, _adams_class()) and type(scheduler).step is _adams_class().step:
            return _ONE_EVAL
        raise TypeError(
            f"{name} overrides step() with a solver MeanCache does not know (it supports {supported}). "
            f"Switch first: {_SWITCH}"
        )
    if isinstance(scheduler, _heun_class()):
        if type(scheduler).step is not _heun_class().step:
            raise TypeError(f"{name} overrides FlowMatchHeunDiscreteScheduler.step(): MeanCache does not know it")
        return _HEUN
    # UniPC / DPM-Solver multistep: one evaluation per step, flow mode only.
    base = next(c for c in _multistep_classes() if isinstance(scheduler, c))
    if type(scheduler).step is not base.step:
        raise TypeError(f"{name} overrides {base.__name__}.step(): MeanCache does not know it")
    if cfg.get("prediction_type") != "flow_prediction" or not cfg.get("use_flow_sigmas", False):
        raise TypeError(
            f"MeanCache needs a flow-matching scheduler; {name} is configured with "
            f"prediction_type={cfg.get('prediction_type')!r}, use_flow_sigmas={cfg.get('use_flow_sigmas')!r}. For a "
            f"flow-matching model use {base.__name__}.from_config(pipe.scheduler.config, "
            "prediction_type='flow_prediction', use_flow_sigmas=True) (or FlowMatchEulerDiscreteScheduler)"
        )
    algorithm = cfg.get("algorithm_type")
    if algorithm is not None and algorithm != "dpmsolver++":
        raise TypeError(
            f"MeanCache supports the deterministic flow ODE; {name} is configured with algorithm_type={algorithm!r} "
            "(use 'dpmsolver++': the SDE variants are stochastic)"
        )
    if cfg.get("final_sigmas_type", "zero") != "zero":
        raise TypeError(
            f"MeanCache integrates down to sigma = 0; {name} is configured with "
            f"final_sigmas_type={cfg.get('final_sigmas_type')!r} (use 'zero')"
        )
    if getattr(scheduler, "order", 1) != 1:
        raise TypeError(f"MeanCache supports one model evaluation per step here; scheduler.order={scheduler.order}")
    return _ONE_EVAL


def allowed_estimators(scheduler) -> tuple[str, ...]:
    """The estimator names a MeanCache schedule may use on skipped steps under ``scheduler``.

    Every estimator under the flow-matching Euler step; under any other supported solver (UniPC, DPM-Solver++,
    FlowMatchAdams, FlowMatchHeun) only those that estimate the velocity at the skipped step's sigma:
    :data:`VELOCITY_ESTIMATORS` (``("taylor1", "taylor2")``). TypeError for an unsupported scheduler.
    """
    if _kind(scheduler) == _EULER:
        return tuple(_estimators.available())
    return VELOCITY_ESTIMATORS


def sampler_kind(scheduler) -> str:
    """What consumes MeanCache's estimate under ``scheduler``: ``"euler"`` (the flow-matching Euler step) or
    ``"multistep"`` (any other supported solver); picks the default rule (:func:`meancache_kernels.default_rule.
    default_schedule`'s ``sampler``). TypeError for an unsupported scheduler."""
    return "euler" if _kind(scheduler) == _EULER else "multistep"


def _check_estimators(scheduler, kind: str, names, what: str) -> None:
    if kind == _EULER:
        return
    bad = sorted({n for n in names if n and n not in VELOCITY_ESTIMATORS})
    if not bad:
        return
    name = type(scheduler).__name__
    how = ("overrides step() (a different solver than the Euler step)" if isinstance(scheduler,
           FlowMatchEulerDiscreteScheduler) else "is not the flow-matching Euler step")
    raise TypeError(
        f"MeanCache: {what} uses the estimators {bad}, which work only with FlowMatchEulerDiscreteScheduler ({name} "
        f"{how}: jvp and mean estimate the average velocity over an Euler step, taylorc corrects Euler increments). "
        f"Under {name} a skipped step feeds the solver an estimate of the model output at that step's sigma, which "
        f"only {list(VELOCITY_ESTIMATORS)} give: use e.g. Schedule.uniform(N, B, 'taylor2'), or switch first: "
        f"{_SWITCH}"
    )


def _base_schedule_names(config, allowed) -> list[str] | None:
    """Estimator names of the configuration's schedule before it is fitted to N (None when not known yet); a
    profile's schedule as solved for a scheduler that allows ``allowed``."""
    schedule = getattr(config, "schedule", None)
    if schedule is None and getattr(config, "profile", None) is not None:
        schedule = config.profile_schedule(allowed)
    if schedule is None and getattr(config, "preset", None) is not None:
        from .. import presets

        schedule = presets.get(config.preset, config.budget)
    return None if schedule is None else schedule.estimator_names()


def check_scheduler(scheduler, config=None) -> None:
    """TypeError unless ``scheduler`` is a deterministic flow-matching scheduler MeanCache can adapt: the Euler
    scheduler, UniPC / DPM-Solver++ in flow mode, FlowMatchAdams or FlowMatchHeun; with ``config`` (a
    MeanCacheConfig), also when its schedule uses estimators that do not work under that scheduler
    (:func:`allowed_estimators`)."""
    kind = _kind(scheduler)
    if config is not None:
        names = _base_schedule_names(config, allowed_estimators(scheduler))
        if names is not None:
            _check_estimators(scheduler, kind, names, f"the {config.source}")


def check_euler_scheduler(scheduler) -> None:
    """TypeError unless ``scheduler`` takes the flow-matching Euler step (``FlowMatchEulerDiscreteScheduler``'s own
    step, deterministic): what calibration needs, since edge costs are measured on Euler trajectories."""
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        kind = _kind(scheduler)  # the Euler scheduler's own refusals (stochastic, overridden step, ...)
    else:
        kind = None
    if kind != _EULER:
        raise TypeError(
            f"this needs the flow-matching Euler step (FlowMatchEulerDiscreteScheduler); the pipeline's scheduler is "
            f"{type(scheduler).__name__}. Switch first: {_SWITCH}"
        )


def wrap_scheduler(scheduler, context) -> dict:
    """Install the adapter on ``scheduler``; returns what :func:`unwrap_scheduler` needs to restore it."""
    kind = _kind(scheduler)
    saved = {name: scheduler.__dict__[name] for name in _WRAPPED if name in scheduler.__dict__}
    orig_step = scheduler.step
    orig_set_timesteps = scheduler.set_timesteps
    arg = _arg_reader(orig_step)

    set_signature = inspect.signature(orig_set_timesteps)

    @functools.wraps(orig_set_timesteps)
    def set_timesteps(*args, **kwargs):
        out = orig_set_timesteps(*args, **kwargs)
        try:
            given = set_signature.bind(*args, **kwargs).arguments
        except TypeError:
            given = {}
        context.start_generation(_flow_grid(scheduler, kind), functools.partial(_grid_for, scheduler, given, kind=kind),
                                 _flow_timesteps(scheduler, kind))
        if kind != _EULER:
            try:
                _check_estimators(scheduler, kind, _generation_estimators(context.generation),
                                  f"the schedule of this generation ({context.config.source})")
            except TypeError:
                context.abort()
                raise
        return out

    orig_set_begin_index = getattr(scheduler, "set_begin_index", None)

    def set_begin_index(*args, **kwargs):
        out = orig_set_begin_index(*args, **kwargs)
        if scheduler.begin_index is not None:  # image-to-image: the loop starts mid-schedule
            context.start_at(scheduler.begin_index // 2 if kind == _HEUN else scheduler.begin_index)
        return out

    @functools.wraps(orig_step)
    def euler_step(model_output, timestep, sample, *args, **kwargs):
        gen = context.generation
        if gen is None:  # not inside a generation started by set_timesteps: the scheduler's own step
            return orig_step(model_output, timestep, sample, *args, **kwargs)
        if arg(args, kwargs, "per_token_timesteps", None) is not None:
            context.abort()
            raise TypeError("MeanCache does not support per_token_timesteps in scheduler.step (one sigma per step)")
        i = context.begin_step(_current_index(scheduler, timestep))
        gen = context.generation  # a new one when the loop started elsewhere than announced
        if gen.compute[i]:
            sample = gen.state.record(i, sample, model_output)  # corrected after taylorc skipped steps
            out = orig_step(model_output, timestep, sample, *args, **kwargs)
            context.end_step(i, True, scheduler.step_index)
            return out
        _, z_next = gen.state.skip(i, sample)
        if z_next.dtype != model_output.dtype:  # the scheduler casts its result to the model output's dtype
            z_next = z_next.to(model_output.dtype)
        scheduler._step_index = gen.offset + i + 1
        context.end_step(i, False, scheduler.step_index)
        if not arg(args, kwargs, "return_dict", True):
            return (z_next,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=z_next)

    def own_step(model_output, timestep, sample, args, kwargs):
        """The scheduler's own step; the generation is dropped when it raises."""
        try:
            return orig_step(model_output, timestep, sample, *args, **kwargs)
        except BaseException:
            context.abort()
            raise

    def estimate(gen, i, sample, model_output):
        """The estimate of the model output at skipped step i, recorded, in the model output's dtype and device."""
        v_hat = gen.state.estimate(i, sample)
        gen.state.record(i, sample, v_hat)
        return v_hat.to(device=model_output.device, dtype=model_output.dtype)

    @functools.wraps(orig_step)
    def one_eval_step(model_output, timestep, sample, *args, **kwargs):
        gen = context.generation
        if gen is None:
            return orig_step(model_output, timestep, sample, *args, **kwargs)
        i = context.begin_step(_current_index(scheduler, timestep))
        gen = context.generation
        computed = gen.compute[i]
        if computed:
            gen.state.record(i, sample, model_output)
        else:
            model_output = estimate(gen, i, sample, model_output)
        out = own_step(model_output, timestep, sample, args, kwargs)
        context.end_step(i, computed, scheduler.step_index)
        return out

    # Heun: per generation, the velocities of the computed steps (for the second stage of skipped steps) and the
    # second-stage estimate of the current skipped step.
    heun = {"gen": None, "nodes": [], "stage2": None}

    @functools.wraps(orig_step)
    def heun_step(model_output, timestep, sample, *args, **kwargs):
        gen = context.generation
        if gen is None:
            return orig_step(model_output, timestep, sample, *args, **kwargs)
        if arg(args, kwargs, "s_churn", 0.0) != 0.0:
            context.abort()
            raise TypeError("MeanCache supports the deterministic ODE: s_churn must be 0 in scheduler.step")
        step, second = divmod(_current_index(scheduler, timestep), 2)
        if not second:
            i = context.begin_step(step)
            gen = context.generation
            if heun["gen"] is not gen:
                heun.update(gen=gen, nodes=[], stage2=None)
            if i == gen.segment(i).start:  # a new model (or the first step): estimates use its velocities only
                heun["nodes"] = []
            computed = gen.compute[i]
            if computed:
                gen.state.record(i, sample, model_output)
                heun["nodes"] = (heun["nodes"] + [(i, model_output)])[-(max(_estimators.POLY_ORDERS) + 1):]
            else:
                if i < gen.num_steps - 1:  # the last step is Euler-only: no second stage
                    heun["stage2"] = _second_stage(gen, i, heun["nodes"], sample)
                model_output = estimate(gen, i, sample, model_output)
        else:
            i = step - gen.offset
            if gen.step != i:
                context.abort()
                raise RuntimeError(f"MeanCache: Heun's second stage of step {i} came while at step {gen.step}")
            computed = gen.compute[i]
            if not computed:
                model_output = heun["stage2"].to(device=model_output.device, dtype=model_output.dtype)
                heun["stage2"] = None
        out = own_step(model_output, timestep, sample, args, kwargs)
        if second or i == gen.num_steps - 1:  # the step is complete (the last one has a single stage)
            if i == 0:
                context.stats.calls_per_step = gen.call_in_step  # both stages of the first step
            context.end_step(i, computed, (scheduler.step_index + 1) // 2)
            if i == gen.num_steps - 1:
                heun.update(gen=None, nodes=[], stage2=None)  # hold no latents after the generation
        return out

    scheduler.step = {_EULER: euler_step, _ONE_EVAL: one_eval_step, _HEUN: heun_step}[kind]
    scheduler.set_timesteps = set_timesteps
    if orig_set_begin_index is not None:
        scheduler.set_begin_index = functools.wraps(orig_set_begin_index)(set_begin_index)
    scheduler.__deepcopy__ = _deepcopy_hook(scheduler, context, kind, saved)
    return saved


def _arg_reader(orig_step):
    """``arg(args, kwargs, name, default)``: an optional argument of ``step`` after (model_output, timestep,
    sample), given by keyword or by position."""
    params = list(inspect.signature(orig_step).parameters)
    pos = {name: params.index(name) - 3 for name in ("per_token_timesteps", "return_dict", "s_churn")
           if name in params}

    def arg(args, kwargs, name, default):
        if name in kwargs:
            return kwargs[name]
        k = pos.get(name)
        return args[k] if k is not None and k < len(args) else default

    return arg


# ---------------------------------------------------------------------------------------------- companion schedulers
def _deepcopy_hook(scheduler, context, kind: str, saved: dict):
    """The instance's ``__deepcopy__`` (``copy.deepcopy`` looks it up on the instance): a deep copy of the scheduler
    *as it was before the adapter* (the adapter's attributes taken off for the copy, the ones it replaced put back),
    made a companion of ``context`` (:func:`wrap_companion`) when taken inside a generation: while a call of the
    pipeline is running or a generation of the context is in progress. Otherwise the copy is plain."""

    def __deepcopy__(memo):
        ours = {name: scheduler.__dict__.pop(name) for name in _WRAPPED if name in scheduler.__dict__}
        try:
            scheduler.__dict__.update(saved)
            clone = copy.deepcopy(scheduler, memo)
        finally:
            for name in _WRAPPED:
                scheduler.__dict__.pop(name, None)
            scheduler.__dict__.update(ours)
        if _in_generation(context):
            wrap_companion(clone, context, kind)
        return clone

    return __deepcopy__


def _in_generation(context) -> bool:
    """Whether a copy taken now belongs to a generation of ``context``: its pipeline's call is running (LTX-2 copies
    the scheduler before ``set_timesteps`` starts the generation) or a generation is in progress."""
    from .context import _calling_pipeline

    gen = context.generation
    if gen is not None and gen.step < gen.num_steps:
        return True
    pipe = context._pipe()
    return pipe is not None and _calling_pipeline() is pipe


def wrap_companion(scheduler, context, kind: str | None = None) -> dict:
    """Make ``scheduler`` (a copy of the adapted one, stepped in the same loop for other latents: LTX-2's and
    Kandinsky 6's audio) a companion of ``context``; returns what :func:`unwrap_scheduler` needs to restore it.

    Its ``step`` follows the main generation: at its own step index i (before or after the main scheduler's step of
    the same i) a computed step of the main generation is recorded in the companion's own estimator state (same
    schedule and sigmas, :class:`.generation._Companion`) and stepped by the scheduler; on a skipped step the model
    output it gets is the stale output of the transformer, so it is replaced by the companion's own estimate: the
    fused estimate-and-Euler step (Euler), or the estimate fed to the scheduler's own step (one evaluation per
    step). Learning generations compute every step: the scheduler's own step. Outside a generation (or after
    ``remove_mean_cache``, which ends it) it is a plain scheduler. It never calls the transformer and leaves the
    context's step counter and stats alone. Its own deep copies are companions too. FlowMatchHeun is refused.
    """
    from .generation import _Companion

    kind = kind or _kind(scheduler)
    if kind == _HEUN:
        raise TypeError(
            f"MeanCache: the pipeline steps a copy of its scheduler ({type(scheduler).__name__}) for other latents "
            "(e.g. audio): such companion schedulers are supported with FlowMatchEulerDiscreteScheduler and the "
            f"one-evaluation solvers (UniPC, DPM-Solver++, FlowMatchAdams), not with two-stage Heun. Switch first: "
            f"{_SWITCH}"
        )
    saved = {name: scheduler.__dict__[name] for name in _WRAPPED if name in scheduler.__dict__}
    orig_step = scheduler.step
    arg = _arg_reader(orig_step)
    link = _Companion()

    def grid():
        return as_host_sigmas(_flow_grid(scheduler, kind))

    @functools.wraps(orig_step)
    def companion_step(model_output, timestep, sample, *args, **kwargs):
        gen = context.generation
        index = _current_index(scheduler, timestep) if gen is not None else 0
        try:
            at = link.follow(gen, index, grid)
            if at is not None and arg(args, kwargs, "per_token_timesteps", None) is not None:
                raise TypeError("MeanCache does not support per_token_timesteps in scheduler.step (one sigma per step)")
        except BaseException:
            context.abort()
            link.reset()
            raise
        if at is None:
            return orig_step(model_output, timestep, sample, *args, **kwargs)
        state, j, seg = at
        last = index - gen.offset == gen.num_steps - 1
        if state is None:  # learning: computed; its first step is kept for the learnt schedule's state
            if j == 0:
                link.first = (seg, sample.detach().clone(), model_output.detach())
            out = orig_step(model_output, timestep, sample, *args, **kwargs)
        elif state.should_compute(j):
            sample = state.record(j, sample, model_output)  # corrected after taylorc skipped steps
            out = orig_step(model_output, timestep, sample, *args, **kwargs)
        elif kind == _EULER:
            _, z_next = state.skip(j, sample)
            if z_next.dtype != model_output.dtype:
                z_next = z_next.to(model_output.dtype)
            scheduler._step_index = index + 1
            out = (z_next,) if not arg(args, kwargs, "return_dict", True) else \
                FlowMatchEulerDiscreteSchedulerOutput(prev_sample=z_next)
        else:
            v_hat = state.estimate(j, sample)
            state.record(j, sample, v_hat)
            out = orig_step(v_hat.to(device=model_output.device, dtype=model_output.dtype), timestep, sample, *args,
                            **kwargs)
        if last:  # hold no latents after the generation
            link.states.clear()
            link.first = None
        return out

    scheduler.step = companion_step
    scheduler.__deepcopy__ = _deepcopy_hook(scheduler, context, kind, saved)
    return saved


def _second_stage(gen, i: int, nodes, sample: torch.Tensor) -> torch.Tensor:
    """Heun, skipped step i: the skipped step's estimator polynomial (through the computed velocities ``nodes``)
    evaluated at s_{i+1}, where Heun's second stage evaluates the model."""
    est = gen.schedule.estimator_at(i) if gen.schedule is not None else gen.state.estimator  # static / adaptive
    s = gen.state.sigmas
    used = nodes[-est.computed_depth:]
    weights = est.weights([s[j] for j, _ in used], s[i + 1], s[i + 1])
    tensors = [v for _, v in used]
    v_hat, _ = ops.combine_step(sample, tensors, weights, 0.0, v_dtype=tensors[-1].dtype, backend=gen.state.backend)
    return v_hat


def _generation_estimators(gen) -> list[str]:
    """Estimator names a generation uses: its static schedule's, or the adaptive state's one estimator."""
    if gen.schedule is not None:
        return gen.schedule.estimator_names()
    return [getattr(gen.state, "estimator_name", "")]


def _current_index(scheduler, timestep) -> int:
    """The scheduler's index of the step about to be taken (what its own ``step`` is about to use): its step index,
    else its begin index, else the index of ``timestep`` in its timesteps (a loop over sliced timesteps)."""
    if scheduler.step_index is not None:
        return scheduler.step_index
    if scheduler.begin_index is not None:
        return scheduler.begin_index
    try:
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(scheduler.timesteps.device)
        return int(scheduler.index_for_timestep(timestep))
    except Exception:  # no index_for_timestep, or a timestep not on the grid: the scheduler's step will say
        return 0


def _flow_timesteps(scheduler, kind: str) -> torch.Tensor | None:
    """The timestep of each MeanCache step (Heun's repeat every interior value: one per step)."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        return None
    return timesteps[::2] if kind == _HEUN else timesteps


def _flow_grid(scheduler, kind: str) -> torch.Tensor:
    """The N + 1 sigmas of the MeanCache steps: the scheduler's sigmas; for Heun, whose sigmas repeat every interior
    value (one per stage), one per step: s_0, s_1, ..., s_{N-1}, 0."""
    sigmas = scheduler.sigmas
    if kind == _HEUN:
        return torch.cat([sigmas[:1], sigmas[1::2]])
    return sigmas


def _grid_for(scheduler, given: dict, sigmas: list[float], num_steps: int, kind: str | None = None) -> list[float]:
    """The N + 1 sigmas this pipeline's scheduler would use for ``num_steps`` steps, given how ``set_timesteps`` was
    called for the current generation (``sigmas``, N + 1 values).

    Without custom sigmas or timesteps, a fresh scheduler of the same configuration (and shift, and ``mu`` for
    resolution-dependent shifting) computes them exactly. With custom ones (FLUX.1 and Qwen-Image pass
    ``linspace(1, 1/N, N)``, HunyuanVideo ``linspace(1, 0, N + 1)[:-1]``, before shifting) the rule behind them is
    unknown: the generation's sigma curve is sampled at the same relative positions k / num_steps, which is exact
    for both of those linear forms.
    """
    from .config import same_curve_sigmas

    if given.get("sigmas") is not None or given.get("timesteps") is not None:
        return same_curve_sigmas(sigmas, num_steps)
    if kind is None:
        kind = _kind(scheduler)
    fresh = type(scheduler).from_config(scheduler.config)
    if hasattr(scheduler, "_shift"):
        fresh._shift = scheduler._shift
    if kind == _EULER:
        fresh.set_timesteps(num_steps, mu=given.get("mu"))
    else:
        accepts_mu = "mu" in inspect.signature(fresh.set_timesteps).parameters
        fresh.set_timesteps(num_steps, **({"mu": given["mu"]} if accepts_mu and given.get("mu") is not None else {}))
    return as_host_sigmas(_flow_grid(fresh, kind))


def unwrap_scheduler(scheduler, saved: dict) -> None:
    """Undo :func:`wrap_scheduler`: the instance gets back exactly the attributes it had."""
    for name in _WRAPPED:
        if name in saved:
            setattr(scheduler, name, saved[name])
        else:
            scheduler.__dict__.pop(name, None)


def as_host_sigmas(sigmas: torch.Tensor) -> list[float]:
    """The scheduler's sigmas as Python floats (one device read per generation, at set_timesteps)."""
    return sigmas.detach().to("cpu", torch.float64).tolist()
