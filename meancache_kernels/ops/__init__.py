"""Functional ops of MeanCache's per-step arithmetic (the package face; the wrappers live in :mod:`.functional`).

- :func:`mean_velocity_step`: the paper's average-velocity estimate and the Euler step, fused;
- :func:`combine_step`: any estimator's weighted sum of cached tensors and the Euler step, fused;
- :func:`euler_step`, :func:`velocity_delta`: the plain step and the relative change of two velocities;
- :func:`calibration_errors`, :func:`edge_errors`: the calibration roll-outs (edge costs).

``backend="auto" | "torch" | "triton"`` on every op; :mod:`.reference` holds the torch references (no Triton), and
``ops/triton/`` the kernels, imported on first use only.
"""

from . import reference
from .functional import calibration_errors, combine_step, edge_errors, euler_step, mean_velocity_step, velocity_delta

__all__ = [
    "mean_velocity_step",
    "combine_step",
    "euler_step",
    "velocity_delta",
    "calibration_errors",
    "edge_errors",
    "reference",
]
