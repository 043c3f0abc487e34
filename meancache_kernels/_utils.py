"""Small shared validation helpers (no torch import)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["as_sigmas"]


def as_sigmas(sigmas, num_steps: int | None = None, name: str = "sigmas") -> list[float]:
    """Validate a flow-matching sigma schedule and return it as a list of Python floats.

    ``sigmas`` (list, tuple, numpy array or torch tensor) must hold N + 1 finite, strictly decreasing values ending
    at 0. When ``num_steps`` is given, N must equal it. A device tensor is read back to the host once, here.
    """
    if hasattr(sigmas, "detach"):  # torch tensor, without importing torch
        sigmas = sigmas.detach().cpu().double().tolist()
    elif hasattr(sigmas, "tolist") and not isinstance(sigmas, (list, tuple)):
        sigmas = sigmas.tolist()
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Sequence):
        raise TypeError(f"{name} must be a list, tuple, numpy array or tensor of floats, got {type(sigmas).__name__}")
    try:
        out = [float(s) for s in sigmas]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold real numbers, got {list(sigmas)[:4]}...") from None
    if any(isinstance(s, Sequence) for s in sigmas):
        raise ValueError(f"{name} must be one-dimensional")
    if len(out) < 2:
        raise ValueError(f"{name} must hold N + 1 >= 2 values (N steps), got {len(out)}")
    if num_steps is not None and len(out) != num_steps + 1:
        raise ValueError(
            f"{name} must hold N + 1 = {num_steps + 1} values for a schedule of N = {num_steps} steps, got {len(out)}"
        )
    for k, s in enumerate(out):
        if not math.isfinite(s):
            raise ValueError(f"{name}[{k}] = {s} is not finite")
    for k in range(len(out) - 1):
        if not out[k] > out[k + 1]:
            raise ValueError(
                f"{name} must be strictly decreasing (s_0 > s_1 > ... > s_N = 0); {name}[{k}]={out[k]} and "
                f"{name}[{k + 1}]={out[k + 1]}"
            )
    if out[-1] != 0.0:
        raise ValueError(f"{name} must end at 0 (the clean sample), got {name}[-1]={out[-1]}")
    return out
