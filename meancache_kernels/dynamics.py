"""A model's dynamics signature: how fast its output changes along one generation, beside FLUX.1's published one.

Over one full-step generation with velocities v_0 .. v_{N-1} (the transformer output after guidance):

    ratio_i  = mean over samples of ||v_i|| / ||v_{i-1}||         (ratio_0 = 1; MagCache's "magnitude ratio")
    change_i = mean over samples of ||v_i - v_{i-1}|| / ||v_{i-1}|| (change_0 = 0)

and two summaries of the early phase, read at N = 28 as FLUX.1's published ratios are:

    early5 = sum_{i=1..5} |1 - ratio_i|        prod10 = prod_{i=1..10} ratio_i

FLUX.1-dev (MagCache's calibration, shipped in diffusers as ``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS``):
early5 = 0.51, prod10 = 1.86: its output grows fast over the first steps, when the coarse content is decided. Models
with early5 near 0 are smooth; on them evenly spaced computed steps are near optimal, while a real model's early
phase asks for dense early steps (the paper's real-model schedules compute every early step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checks import as_sigmas

__all__ = ["Signature", "FLUX1", "FLUX1_MAG_RATIOS", "signature_from_velocities", "measure_signature"]

# MagCache's per-step magnitude ratios on FLUX.1-dev, N = 28, as published in diffusers 0.42.1
# (diffusers.hooks.mag_cache.FLUX_MAG_RATIOS; tests/core/test_dynamics.py checks the copy against it).
FLUX1_MAG_RATIOS = (
    1.0, 1.211, 1.117, 1.078, 1.062, 1.039, 1.031, 1.039, 1.023, 1.031, 1.023, 0.98, 1.016, 1.008, 1.0, 1.008, 1.0,
    1.008, 1.0, 1.0, 0.996, 0.996, 0.98, 0.988, 0.965, 0.957, 0.934, 0.891,
)
# Below this early-5 sum a model has no early phase to speak of (the tiny models trained before issue 22: 0.04-0.08).
SMOOTH_EARLY5 = 0.2


@dataclass(frozen=True)
class Signature:
    """Per-step magnitude ratios and relative changes of a model's output over one generation (module docstring).

    Attributes:
        ratios: N values, ratio_0 = 1.
        changes: N values (change_0 = 0), or None where only ratios are known (FLUX.1's published data).
        name: what was measured.
    """

    ratios: tuple[float, ...]
    changes: tuple[float, ...] | None = None
    name: str = "model"

    @property
    def num_steps(self) -> int:
        return len(self.ratios)

    @property
    def early5(self) -> float:
        """Sum of |1 - ratio_i| over steps 1..5."""
        return float(np.abs(1.0 - np.asarray(self.ratios[1:6])).sum())

    @property
    def prod10(self) -> float:
        """Product of ratio_i over steps 1..10."""
        return float(np.prod(self.ratios[1:11]))

    @property
    def regime(self) -> str:
        """``"early phase"`` (real-model-like: early5 >= 0.2) or ``"smooth"``."""
        return "early phase" if self.early5 >= SMOOTH_EARLY5 else "smooth"

    def format(self, reference: Signature | None = None) -> str:
        """A table of the per-step ratio (and change) beside ``reference``'s (FLUX.1's by default), with the
        summaries. Both are compared at their own step indices: measure at N = 28 for a like-for-like reading."""
        ref = FLUX1 if reference is None else reference
        head = f"{'step':>4}  {self.name + ' ratio':>14}  {'change':>7}  {ref.name + ' ratio':>16}"
        lines = [head]
        for i in range(max(self.num_steps, ref.num_steps)):
            mine = f"{self.ratios[i]:14.3f}" if i < self.num_steps else " " * 14
            ch = f"{self.changes[i]:7.3f}" if self.changes is not None and i < self.num_steps else " " * 7
            theirs = f"{ref.ratios[i]:16.3f}" if i < ref.num_steps else ""
            lines.append(f"{i:>4}  {mine}  {ch}  {theirs}".rstrip())
        lines.append(f"early5 (sum |1 - ratio|, steps 1-5): {self.early5:.3f}   {ref.name}: {ref.early5:.3f}")
        lines.append(f"prod10 (product of ratios 1-10):     {self.prod10:.3f}   {ref.name}: {ref.prod10:.3f}")
        lines.append(f"regime: {self.regime} ({ref.name}: {ref.regime})")
        return "\n".join(lines)


FLUX1 = Signature(FLUX1_MAG_RATIOS, None, "FLUX.1-dev")


def signature_from_velocities(velocities: Sequence[torch.Tensor], name: str = "model") -> Signature:
    """The signature of recorded velocities: ``velocities[i]`` the output of step i, shape [S, ...] (S samples)."""
    if isinstance(velocities, torch.Tensor):
        velocities = list(velocities)
    if not isinstance(velocities, (list, tuple)) or len(velocities) < 2:
        raise ValueError("velocities must hold at least 2 steps' outputs")
    prev = None
    ratios, changes = [1.0], [0.0]
    for i, v in enumerate(velocities):
        if not isinstance(v, torch.Tensor) or v.dim() < 1:
            raise TypeError(f"velocities[{i}] must be a tensor [S, ...], got {type(v).__name__}")
        flat = v.detach().reshape(v.shape[0], -1).double()
        if prev is not None:
            if flat.shape != prev.shape:
                raise ValueError(f"velocities[{i}] has shape {tuple(v.shape)}, the previous step's differs")
            base = prev.norm(dim=1).clamp_min(1e-30)
            ratios.append(float((flat.norm(dim=1) / base).mean()))
            changes.append(float(((flat - prev).norm(dim=1) / base).mean()))
        prev = flat
    return Signature(tuple(ratios), tuple(changes), name)


def measure_signature(model_fn: Callable[[torch.Tensor, float], torch.Tensor], z: torch.Tensor, sigmas,
                      name: str = "model") -> Signature:
    """Run one full-step Euler generation of ``model_fn(z, sigma) -> v`` from ``z`` [S, ...] over ``sigmas`` (N + 1
    values; N = 28 for a reading comparable with FLUX.1's) and return its :class:`Signature`. N model calls."""
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    s = as_sigmas(sigmas)
    vs = []
    for i in range(len(s) - 1):
        v = model_fn(z, s[i])
        vs.append(v.detach())
        z = z + (s[i + 1] - s[i]) * v
    return signature_from_velocities(vs, name)
