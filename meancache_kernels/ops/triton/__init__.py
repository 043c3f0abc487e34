"""Triton kernels and their launchers (imports triton: import this package lazily, from ``ops`` dispatch only).

Each launcher takes arguments already validated by the matching ``meancache_kernels.ops`` function. Importing this
package also registers ``torch.ops.meancache_kernels.mean_velocity_step`` and
``torch.ops.meancache_kernels.combine_step`` (functional ``torch.library.custom_op``s over the fused steps, one opaque
node each for torch.compile).
"""

from .calibration import calibration_errors
from .combine import combine_step, combine_step_op
from .delta import velocity_delta
from .edges import edge_errors
from .euler import euler_step
from .mean_velocity import mean_velocity_step, mean_velocity_step_op

__all__ = [
    "mean_velocity_step",
    "mean_velocity_step_op",
    "combine_step",
    "combine_step_op",
    "euler_step",
    "velocity_delta",
    "calibration_errors",
    "edge_errors",
]
