"""Triton kernels and their launchers (imports triton: import this package lazily, from ``ops`` dispatch only).

Each launcher takes arguments already validated by the matching ``meancache_kernels.ops`` function.
"""

from .calibration import calibration_errors
from .delta import velocity_delta
from .euler import euler_step
from .mean_velocity import mean_velocity_step

__all__ = ["mean_velocity_step", "euler_step", "velocity_delta", "calibration_errors"]
