"""Triton kernels and their launchers (imports triton: import this package lazily, from ``ops`` dispatch only).

Each launcher takes arguments already validated by the matching ``meancache_kernels.ops`` function. Importing this
package also registers ``torch.ops.meancache_kernels.mean_velocity_step`` (a functional ``torch.library.custom_op``
over the fused step, one opaque node for torch.compile).
"""

from .calibration import calibration_errors
from .delta import velocity_delta
from .euler import euler_step
from .mean_velocity import mean_velocity_step, mean_velocity_step_op

__all__ = ["mean_velocity_step", "mean_velocity_step_op", "euler_step", "velocity_delta", "calibration_errors"]
