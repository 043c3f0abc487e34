"""Which pipelines MeanCache can run on: the check :func:`~meancache_kernels.diffusers.apply_mean_cache` makes
before it touches a pipeline, so that a pipeline it cannot accelerate is refused with the reason, never failed
mid-generation.

MeanCache needs a denoising loop that, once per timestep, calls the transformer then ``scheduler.step`` with one
sigma for the whole latent, on a deterministic flow ODE. The pipelines of diffusers that break that contract by
construction are listed in :data:`REFUSED` with the reason; the tests of the compatibility matrix
(``tests/diffusers/test_matrix.py``, ``docs/pipelines.md``) check every other flow-matching pipeline class.
"""

from __future__ import annotations

__all__ = ["REFUSED", "check_pipeline", "refusal_reason"]

_DIFFUSION_FORCING = (
    "diffusion forcing: every latent frame block follows its own timestep schedule (a per-frame timestep tensor and "
    "one scheduler per block), not one sigma per step"
)

# Pipeline class name -> why MeanCache cannot run on it.
REFUSED: dict[str, str] = {
    "LTXConditionPipeline": (
        "its loop steps the scheduler with per-token timesteps (conditioning frames keep their own noise level), "
        "not one sigma per step"
    ),
    "SanaWMPipeline": (
        "its loop steps the scheduler with per-token timesteps (the first latent frame, the conditioning image, stays "
        "at timestep 0), not one sigma per step"
    ),
    "LTXI2VLongMultiPromptPipeline": (
        "its loop over each temporal tile runs scheduler.timesteps[:-1] (the last timestep is never stepped) and "
        "skips the steps whose sigma exceeds skip_steps_sigma_threshold without calling scheduler.step()"
    ),
    "SkyReelsV2DiffusionForcingPipeline": _DIFFUSION_FORCING,
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": _DIFFUSION_FORCING,
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline": _DIFFUSION_FORCING,
}


def refusal_reason(cls) -> str | None:
    """Why MeanCache cannot run on pipelines of class ``cls`` (or of a subclass of a refused class); None when it
    is not refused."""
    for klass in getattr(cls, "__mro__", (cls,)):
        reason = REFUSED.get(getattr(klass, "__name__", ""))
        if reason is not None:
            return reason
    return None


def check_pipeline(pipe) -> None:
    """Raise TypeError naming the reason when MeanCache cannot run on ``pipe``'s class; return None otherwise."""
    reason = refusal_reason(type(pipe))
    if reason is not None:
        raise TypeError(
            f"MeanCache cannot run on {type(pipe).__name__}: {reason}. MeanCache needs a loop that calls the "
            "transformer, then scheduler.step() once per timestep with one sigma for the whole latent "
            "(see docs/pipelines.md)"
        )
