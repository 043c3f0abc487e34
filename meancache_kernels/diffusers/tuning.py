"""End-to-end tuning on a diffusers pipeline: :func:`meancache_kernels.tune` with the pipeline as the model.

The candidates (:func:`meancache_kernels.tuning.candidate_schedules`) run through :func:`apply_mean_cache` on the
tuning prompts; each is compared with the pipeline's own full-step output of the same prompt and seed, either the
final latents (``metric="latent"``, ``output_type="latent"``) or the decoded images (``metric="image"``, pixels in
[0, 1]), and the best schedule is returned.
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
from .scheduler import allowed_estimators, sampler_kind

__all__ = ["tune_pipeline"]


# what tune_pipeline compares with the references: the pipeline's output_type for each metric
METRICS = {"latent": "latent", "image": "pt"}
_METRIC_TEXT = {
    "latent": "geometric mean over samples of the relative RMSE of the final latent vs the full-step output",
    "image": "geometric mean over samples of the relative RMSE of the decoded image (pixels in [0, 1]) vs the "
             "full-step output's",
}


def _as_tensor(images) -> torch.Tensor:
    """A pipeline's output (tensor, numpy array, or a list of them) as one float tensor [S, ...] on the CPU."""
    if isinstance(images, (list, tuple)):
        return torch.stack([_as_tensor(x) for x in images])
    if not isinstance(images, torch.Tensor):
        import numpy as np

        images = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return images.detach().float().cpu()


def _outputs(pipe, prompts: list[str], idx: list[int], n: int, seed: int, call_kwargs: dict,
             output_type: str = "latent") -> torch.Tensor:
    """Final latents (or decoded images, ``output_type="pt"``) of prompts[k] for k in idx (prompt k with a generator
    seeded seed + k), in one call."""
    kwargs = dict(call_kwargs)
    if isinstance(kwargs.get("negative_prompt"), str):
        kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(idx)
    generators = [torch.Generator().manual_seed(seed + k) for k in idx]
    out = pipe(prompt=[prompts[k] for k in idx], num_inference_steps=n, generator=generators, output_type=output_type,
               **kwargs)
    return _as_tensor(out[0])


_latents = _outputs  # the former name


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
    metric: str = "image",
    progress: bool = True,
    backend: str = "auto",
    solver_backend: str = "auto",
    **call_kwargs,
) -> Schedule:
    """The schedule with the lowest error of the final latents (or decoded images, ``metric="image"``) against
    ``pipe``'s full-step outputs (:func:`meancache_kernels.tuning.sample_error`, per prompt, geometric mean).

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
        metric: what a candidate's output is compared on; ``"image"`` (default): the decoded images of the
            pipeline's normal decode (``output_type="pt"``, pixels in [0, 1]), whose per-prompt relative RMSE has a
            logarithm that is an affine function of the prompt's PSNR, so the geometric mean ranks candidates by mean
            PSNR; costs a VAE decode per generation. ``"latent"``: the final latents (``output_type="latent"``, no
            decoding; for video pipelines or where decoding is expensive). On the two small trained FluxPipelines
            (bench/results/tune_metric.md) the decoded-image PSNR did not follow the latent error.
        progress: print the model-call cost and show a progress bar over the candidates.
        backend: op backend of the MeanCache estimate (``"auto"``, ``"torch"``, ``"triton"``).
        solver_backend: PSSP solver backend of the candidates (``"auto"``, ``"cpp"``, ``"python"``).
        call_kwargs: further pipeline arguments (height, width, guidance_scale, ...).

    Returns:
        The best :class:`Schedule`, every candidate's error in ``meta["tune"]`` (as :func:`meancache_kernels.tune`;
        ``metric``: ``"latent"`` or ``"image"``, ``metric_description``: what the errors are).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    check_ops_backend(backend)
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if "output_type" in call_kwargs:
        raise ValueError(f"tune_pipeline sets output_type itself (metric={metric!r}); leave it out of the arguments")
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    if num_inference_steps != profile.num_steps:
        raise ValueError(f"num_inference_steps={num_inference_steps} differs from the profile's N={profile.num_steps}")
    if getattr(pipe, "_meancache_context", None) is not None:
        raise ValueError("tune_pipeline needs the pipeline without MeanCache: remove_mean_cache(pipe) first")
    # under a multistep scheduler only the estimators that predict the velocity itself apply
    candidates, baseline = prepare_candidates(profile, budget, candidates, gammas=gammas,
                                              margin_se=default_margin_se, solver_backend=solver_backend,
                                              allowed=allowed_estimators(pipe.scheduler),
                                              sampler=sampler_kind(pipe.scheduler))
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
    output_type = METRICS[metric]
    references = _outputs(pipe, prompts, everything, reference_steps, seed, call_kwargs, output_type)
    calls = [reference_steps * num]

    def run(name: str, idx: list[int]) -> list[float]:
        if not idx:
            return []
        apply_mean_cache(pipe, MeanCacheConfig(schedule=candidates[name], backend=backend))
        try:
            out = _outputs(pipe, prompts, idx, n, seed, call_kwargs, output_type)
            calls[0] += get_mean_cache_stats(pipe).steps_computed * len(idx)
        finally:
            remove_mean_cache(pipe)
        return per_sample_errors(out, references[idx])

    best = run_tuning(candidates, baseline, num, run, lambda: calls[0], budget, halving=halving,
                      margin_se=default_margin_se, progress=progress)
    best.meta["tune"]["reference_steps"] = reference_steps
    best.meta["tune"]["metric"] = metric
    best.meta["tune"]["metric_description"] = _METRIC_TEXT[metric]
    return best
