"""Test and demo helpers: analytic flows with ground truth (no training, no hub).

``GaussianMixtureFlow`` gives the exact rectified-flow velocity of a Gaussian-mixture data distribution, so the
test suite and the demos have a real curved ODE whose every quantity is known in closed form.
"""

from .flows import GaussianMixtureFlow, flow_sigmas, smooth_random_field

__all__ = ["GaussianMixtureFlow", "flow_sigmas", "smooth_random_field"]
