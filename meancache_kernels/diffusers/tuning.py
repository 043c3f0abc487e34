"""End-to-end tuning on a diffusers pipeline: :func:`meancache_kernels.tune` with the pipeline as the model.

The candidates (:func:`meancache_kernels.tuning.candidate_schedules`) run through :func:`apply_mean_cache` on the
tuning prompts; each is compared with the pipeline's own full-step output of the same prompt and seed (final
latents, ``output_type="latent"``), and the best schedule is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import check_ops_backend
from ..metrics import per_sample_errors
from ..profile import Profile
from ..schedule import Schedule
from ..tuning import DEFAULT_GAMMAS, DEFAULT_MARGIN_SE, prepare_candidates, run_tuning
from .config import MeanCacheConfig
from .hooks import apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from .scheduler import allowed_estimators

__all__ = ["tune_pipeline"]


def _latents(pipe, prompts: list[str], idx: list[int], n: int, seed: int, call_kwargs: dict) -> torch.Tensor:
    """Final latents of prompts[k] for k in idx (prompt k with a generator seeded seed + k), in one call."""
    kwargs = dict(call_kwargs)
    if isinstance(kwargs.get("negative_prompt"), str):
        kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(idx)
    generators = [torch.Generator().manual_seed(seed + k) for k in idx]
    out = pipe(prompt=[prompts[k] for k in idx], num_inference_steps=n, generator=generators, output_type="latent",
               **kwargs)
    return out[0].detach().float().cpu()


def tune_pipeline(
    pipe,
    prompts: Sequence[str],
    *,
    profile: Profile,
    budget: int,
    num_inference_steps: int,
    seed: int = 10_000,
    candidates: dict[str, Schedule] | None = None,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    reference_steps: int | None = None,
    halving: bool = False,
    default_margin_se: float = DEFAULT_MARGIN_SE,
    progress: bool = True,
    backend: str = "auto",
    solver_backend: str = "auto",
    **call_kwargs,
) -> Schedule:
    """The schedule with the lowest error of the final latents against ``pipe``'s full-step outputs
    (:func:`meancache_kernels.tuning.sample_error`, per prompt, geometric mean).

    Args:
        pipe: a diffusers flow-matching pipeline (any scheduler MeanCache supports), MeanCache not applied.
        prompts: the tuning prompts (keep them apart from any prompt you evaluate on); generated together.
        profile: the pipeline's calibration profile (:func:`calibrate_pipeline`) at ``num_inference_steps``.
        budget: B, computed steps.
        num_inference_steps: N (the profile's).
        seed: prompt k uses a generator seeded ``seed + k``.
        candidates: ``{name: Schedule}`` instead of the default set.
        gammas: gammas of the PSSP candidates.
        reference_steps: steps of the reference generations the candidates are judged against; None:
            ``num_inference_steps`` (the uncached N-step output, what MeanCache approximates); e.g. ``4 * N`` to
            prefer the schedule closest to the converged ODE solution instead.
        halving: successive halving over the prompts (:func:`meancache_kernels.tuning.select`) instead of every
            candidate on every prompt: about a third of the transformer calls with 8 prompts.
        default_margin_se: with the default candidates, the calibration-free default rule (what
            ``MeanCacheConfig(budget=B)`` runs) is kept
            unless the lowest-error candidate beats it by more than this many standard errors of the paired
            per-prompt differences of log error (:func:`meancache_kernels.tuning.choose`); 0: the lowest error.
        progress: print the model-call cost and show a progress bar over the candidates.
        backend: op backend of the MeanCache estimate (``"auto"``, ``"torch"``, ``"triton"``).
        solver_backend: PSSP solver backend of the candidates (``"auto"``, ``"cpp"``, ``"python"``).
        call_kwargs: further pipeline arguments (height, width, guidance_scale, ...).

    Returns:
        The best :class:`Schedule`, every candidate's error in ``meta["tune"]`` (as :func:`meancache_kernels.tune`).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    check_ops_backend(backend)
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    if num_inference_steps != profile.num_steps:
        raise ValueError(f"num_inference_steps={num_inference_steps} differs from the profile's N={profile.num_steps}")
    if getattr(pipe, "_meancache_context", None) is not None:
        raise ValueError("tune_pipeline needs the pipeline without MeanCache: remove_mean_cache(pipe) first")
    # under a multistep scheduler only the estimators that predict the velocity itself apply
    candidates, baseline = prepare_candidates(profile, budget, candidates, gammas=gammas,
                                              margin_se=default_margin_se, solver_backend=solver_backend,
                                              allowed=allowed_estimators(pipe.scheduler))
    prompts = list(prompts)
    n, num = num_inference_steps, len(prompts)
    if reference_steps is None:
        reference_steps = n
    elif isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
        raise ValueError(f"reference_steps must be an int >= 1 or None, got {reference_steps!r}")
    cost = reference_steps * num + sum(c.budget for c in candidates.values()) * num
    if progress:
        print(f"meancache tune: {len(candidates)} candidates x {num} prompts: {'at most ' if halving else 'about '}"
              f"{cost} transformer-call steps ({reference_steps * num} for the {reference_steps}-step references)")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    everything = list(range(num))
    references = _latents(pipe, prompts, everything, reference_steps, seed, call_kwargs)
    calls = [reference_steps * num]

    def run(name: str, idx: list[int]) -> list[float]:
        if not idx:
            return []
        apply_mean_cache(pipe, MeanCacheConfig(schedule=candidates[name], backend=backend))
        try:
            out = _latents(pipe, prompts, idx, n, seed, call_kwargs)
            calls[0] += get_mean_cache_stats(pipe).steps_computed * len(idx)
        finally:
            remove_mean_cache(pipe)
        return per_sample_errors(out, references[idx])

    best = run_tuning(candidates, baseline, num, run, lambda: calls[0], budget, halving=halving,
                      margin_se=default_margin_se, progress=progress)
    best.meta["tune"]["reference_steps"] = reference_steps
    return best
