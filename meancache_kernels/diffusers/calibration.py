"""Calibration of a diffusers pipeline: full-step generations recorded at ``scheduler.step``, turned into a Profile.

At every step the scheduler receives the guided velocity v_i (after CFG and any rescaling the pipeline does) and the
state z_i; the recorder keeps both (on the CPU) and the final state, giving the trajectories
``(z [N+1, S, ...], v [N, S, ...])`` that :func:`meancache_kernels.calibration.profile_from_trajectories` consumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from ..calibration import profile_from_trajectories
from ..profile import Profile
from .scheduler import check_euler_scheduler

__all__ = ["record_trajectory", "calibrate_pipeline"]


def record_trajectory(pipe, *, on_step: Callable[[], None] | None = None, **call_kwargs):
    """Run ``pipe(**call_kwargs)`` with every step computed and record its trajectory at ``scheduler.step``.

    Returns ``(z, v, sigmas)``: z [N+1, B, ...] the states (z[0] the initial latents, z[N] the final ones), v [N, B,
    ...] the velocity handed to the scheduler at every step, and the N + 1 sigmas (floats). Tensors are float32 on
    the CPU. ``on_step`` is called after every step (progress bars).
    """
    if getattr(pipe, "_meancache_context", None) is not None:
        raise ValueError("calibration needs full-step generations: remove_mean_cache(pipe) first")
    scheduler = pipe.scheduler
    check_euler_scheduler(scheduler)
    original = scheduler.step
    zs, vs = [], []

    def step(model_output, timestep, sample, *args, **kwargs):
        out = original(model_output, timestep, sample, *args, **kwargs)
        prev = out[0] if isinstance(out, tuple) else out.prev_sample
        if not zs:
            zs.append(sample.detach().float().cpu())
        vs.append(model_output.detach().float().cpu())
        zs.append(prev.detach().float().cpu())
        if on_step is not None:
            on_step()
        return out

    had_own = "step" in scheduler.__dict__
    saved = scheduler.__dict__.get("step")
    scheduler.step = step
    try:
        pipe(**call_kwargs)
    finally:
        if had_own:
            scheduler.step = saved
        else:
            scheduler.__dict__.pop("step", None)
    sigmas = scheduler.sigmas.detach().double().cpu().tolist()
    if len(vs) != len(sigmas) - 1:
        raise RuntimeError(
            f"the pipeline called scheduler.step {len(vs)} times for {len(sigmas) - 1} timesteps: its loop cannot be "
            "calibrated at the scheduler step"
        )
    return torch.stack(zs), torch.stack(vs), sigmas


def calibrate_pipeline(
    pipe,
    prompts: Sequence[str],
    num_inference_steps: int,
    *,
    max_span: int = 6,
    max_skip: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    progress: bool = True,
    meta: dict | None = None,
    estimators=None,
    **call_kwargs,
) -> Profile:
    """Calibrate MeanCache edge costs of ``pipe`` on full-step generations of ``prompts``.

    Args:
        pipe: a diffusers pipeline with a flow-matching Euler scheduler (MeanCache not applied).
        prompts: the calibration prompts (one sample each).
        num_inference_steps: N, the step count the profile (and the schedules solved from it) is for.
        max_span, max_skip: as :func:`meancache_kernels.calibration.profile_from_trajectories`.
        batch_size: prompts generated together in one pipeline call.
        seed: seed of the initial noise (prompt k of a batch starting at b uses a generator seeded ``seed + b + k``).
        progress: show a tqdm progress bar over the denoising steps.
        meta: extra profile metadata; ``call_kwargs``: further pipeline arguments (height, width, guidance, ...).
        estimators: estimators to calibrate (None: every one; ``("jvp",)``: the paper's costs only).
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    from tqdm.auto import tqdm

    prompts = list(prompts)
    n_batches = -(-len(prompts) // batch_size)
    bar = tqdm(total=n_batches * num_inference_steps, desc="meancache calibrate", unit="step", disable=not progress)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    grid: list[list[float]] = []

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            generators = [torch.Generator().manual_seed(seed + start + k) for k in range(len(chunk))]
            kwargs = dict(call_kwargs)
            if isinstance(kwargs.get("negative_prompt"), str):
                kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(chunk)
            z, v, sigmas = record_trajectory(
                pipe, on_step=lambda: bar.update(1), prompt=chunk, num_inference_steps=num_inference_steps,
                generator=generators, output_type="latent", **kwargs,
            )
            if grid and sigmas != grid[0]:
                raise ValueError("calibration generations ran on different sigma grids: keep the resolution fixed")
            grid.append(sigmas)
            yield z, v

    try:
        it = iter(batches())
        first = next(it)  # the sigma grid is known after the first generation

        def chained():
            yield first
            yield from it

        full_meta = {"pipeline": type(pipe).__name__, "prompts": len(prompts)}
        name = getattr(getattr(pipe, "config", None), "_name_or_path", None)
        if name:
            full_meta["model"] = name
        full_meta.update(meta or {})
        return profile_from_trajectories(chained(), grid[0], max_span, max_skip, meta=full_meta,
                                         estimators=estimators)
    finally:
        bar.close()
