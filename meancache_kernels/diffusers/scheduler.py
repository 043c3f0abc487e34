"""Adapter of a diffusers flow-matching Euler scheduler: MeanCache bookkeeping at ``step`` and ``set_timesteps``.

The adapter wraps the *instance's* ``step`` and ``set_timesteps`` (the class is untouched, and removal puts the
instance back as it was):

- ``set_timesteps`` runs unchanged, then starts a new generation on the shared context (reset, schedule fitted to
  the actual N and sigmas);
- ``step(v, t, z)`` at step i: on a computed step it records (z_i, v_i, s_i) and runs the scheduler's own Euler
  step; on a skipped step it replaces the model output with the MeanCache estimate and returns the fused
  estimate-and-Euler result, advancing the scheduler's step index as its own ``step`` does.
"""

from __future__ import annotations

import functools
import inspect

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchEulerDiscreteSchedulerOutput,
)

__all__ = ["SUPPORTED_SCHEDULERS", "check_scheduler", "wrap_scheduler", "unwrap_scheduler"]

SUPPORTED_SCHEDULERS = (FlowMatchEulerDiscreteScheduler,)
_WRAPPED = ("step", "set_timesteps")


def check_scheduler(scheduler) -> None:
    """TypeError unless ``scheduler`` is a deterministic, one-evaluation-per-step flow-matching Euler scheduler."""
    supported = ", ".join(c.__name__ for c in SUPPORTED_SCHEDULERS)
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise TypeError(
            f"MeanCache supports flow-matching Euler schedulers ({supported}) with one model evaluation per step; "
            f"the pipeline's scheduler is {type(scheduler).__name__}. For a flow-matching model, switch first: "
            "pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)"
        )
    if type(scheduler).step is not FlowMatchEulerDiscreteScheduler.step:
        raise TypeError(
            f"MeanCache supports the flow-matching Euler step; {type(scheduler).__name__} overrides step() (a "
            "different solver, e.g. FlowMatchAdamsScheduler, which is used instead of MeanCache, not with it). "
            "Switch first: pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)"
        )
    cfg = scheduler.config
    for flag in ("stochastic_sampling", "invert_sigmas"):
        if cfg.get(flag, False):
            raise TypeError(
                f"MeanCache supports the deterministic flow-matching Euler ODE; {type(scheduler).__name__} is "
                f"configured with {flag}=True"
            )
    if getattr(scheduler, "order", 1) != 1:
        raise TypeError(f"MeanCache supports one model evaluation per step; scheduler.order={scheduler.order}")
    for attr in ("_step_index", "_begin_index"):
        if not hasattr(scheduler, attr):
            raise TypeError(f"{type(scheduler).__name__} has no {attr}: not a diffusers flow-matching Euler scheduler")


def wrap_scheduler(scheduler, context) -> dict:
    """Install the adapter on ``scheduler``; returns what :func:`unwrap_scheduler` needs to restore it."""
    saved = {name: scheduler.__dict__[name] for name in _WRAPPED if name in scheduler.__dict__}
    orig_step = scheduler.step
    orig_set_timesteps = scheduler.set_timesteps
    params = list(inspect.signature(orig_step).parameters)
    # Positions of the optional arguments after (model_output, timestep, sample), for positional calls.
    pos = {name: params.index(name) - 3 for name in ("per_token_timesteps", "return_dict") if name in params}

    set_signature = inspect.signature(orig_set_timesteps)

    @functools.wraps(orig_set_timesteps)
    def set_timesteps(*args, **kwargs):
        out = orig_set_timesteps(*args, **kwargs)
        try:
            given = set_signature.bind(*args, **kwargs).arguments
        except TypeError:
            given = {}
        context.start_generation(scheduler.sigmas, functools.partial(_grid_for, scheduler, given))
        return out

    @functools.wraps(orig_step)
    def step(model_output, timestep, sample, *args, **kwargs):
        gen = context.generation
        if gen is None:  # not inside a generation started by set_timesteps: the scheduler's own step
            return orig_step(model_output, timestep, sample, *args, **kwargs)

        def arg(name, default):
            if name in kwargs:
                return kwargs[name]
            k = pos.get(name)
            return args[k] if k is not None and k < len(args) else default

        if arg("per_token_timesteps", None) is not None:
            context.abort()
            raise TypeError("MeanCache does not support per_token_timesteps in scheduler.step (one sigma per step)")
        i = context.begin_step(scheduler.step_index, scheduler.begin_index)
        if gen.compute[i]:
            sample = gen.state.record(i, sample, model_output)  # corrected after taylorc skipped steps
            out = orig_step(model_output, timestep, sample, *args, **kwargs)
            context.end_step(i, True, scheduler.step_index)
            return out
        _, z_next = gen.state.skip(i, sample)
        if z_next.dtype != model_output.dtype:  # the scheduler casts its result to the model output's dtype
            z_next = z_next.to(model_output.dtype)
        scheduler._step_index = i + 1
        context.end_step(i, False, scheduler.step_index)
        if not arg("return_dict", True):
            return (z_next,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=z_next)

    scheduler.step = step
    scheduler.set_timesteps = set_timesteps
    return saved


def _grid_for(scheduler, given: dict, sigmas: list[float], num_steps: int) -> list[float]:
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
    fresh = type(scheduler).from_config(scheduler.config)
    if hasattr(scheduler, "_shift"):
        fresh._shift = scheduler._shift
    fresh.set_timesteps(num_steps, mu=given.get("mu"))
    return as_host_sigmas(fresh.sigmas)


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
