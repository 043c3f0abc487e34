"""Test and demo helpers: analytic flows with ground truth (no training, no hub), and the paper's loop as an oracle.

``GaussianMixtureFlow`` gives the exact rectified-flow velocity of a Gaussian-mixture data distribution, so the
test suite and the demos have a real curved ODE whose every quantity is known in closed form.
"""

from .flows import (
    REALISTIC_FLOWS,
    GaussianMixtureFlow,
    flow_sigmas,
    late_decision_flow,
    power_law_flow,
    realistic_flow,
    smooth_random_field,
)
from .official import official_sample

__all__ = ["GaussianMixtureFlow", "flow_sigmas", "smooth_random_field", "official_sample", "power_law_flow",
           "late_decision_flow", "realistic_flow", "REALISTIC_FLOWS"]

# Tiny diffusers pipelines live in meancache_kernels.diffusers.testing (the only layer that imports diffusers);
# they are forwarded lazily so that importing this module never imports diffusers.
_DIFFUSERS_TESTING = ("tiny_pipeline", "tiny_call_kwargs", "KINDS", "CALLS_PER_STEP")


def __getattr__(name):
    if name in _DIFFUSERS_TESTING:
        from ..diffusers import testing

        return getattr(testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
