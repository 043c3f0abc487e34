"""A pipeline's dynamics signature (:mod:`meancache_kernels.dynamics`) from one full-step generation."""

from __future__ import annotations

from ..dynamics import Signature, signature_from_velocities
from .calibration import record_trajectory

__all__ = ["pipeline_signature"]


def pipeline_signature(pipe, name: str | None = None, **call_kwargs) -> Signature:
    """The per-step magnitude ratio and change of ``pipe``'s guided transformer output over one generation
    (``pipe(**call_kwargs)`` with every step computed: N transformer steps). ``num_inference_steps=28`` makes it
    comparable with FLUX.1's published ratios (``Signature.format()`` prints both). MeanCache must not be applied."""
    call_kwargs.setdefault("output_type", "latent")
    _, v, _ = record_trajectory(pipe, **call_kwargs)
    return signature_from_velocities(list(v), name or type(pipe).__name__)
