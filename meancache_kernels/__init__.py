"""meancache_kernels: training-free MeanCache acceleration for flow-matching image and video generation.

On a diffusers pipeline, one line (docs: README.md, docs/guide.md):

    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache
    apply_mean_cache(pipe, MeanCacheConfig(budget=17))   # first generation: every step, the schedule learnt;
                                                          # then B = 17 of the N steps run the transformer

For any velocity function ``model_fn(z, sigma) -> v``, the same:

    import meancache_kernels as mck
    mc = mck.MeanCache(budget=10)
    z0 = mc.sample(model_fn, z, sigmas)                   # N calls the first time, then 10
    z0 = mck.sample(model_fn, z, sigmas, mck.default_schedule(sigmas, 10))   # the calibration-free rule: 10

Importing does no GPU work and needs neither Triton, diffusers nor the compiled extension.
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # torch is not a pip dependency on purpose: an unpinned torch pulls the CUDA build
    raise ImportError(
        "meancache_kernels needs PyTorch. Install it first: `pip install torch==2.13.0` (CPU build) or the CUDA "
        "build of your choice from https://pytorch.org"
    ) from e

from . import adaptive, dynamics, estimators, ops, presets  # noqa: E402
from ._version import __version__  # noqa: E402
from .cache import MeanCacheState, sample  # noqa: E402
from .calibration import calibrate  # noqa: E402
from .default_rule import default_schedule  # noqa: E402
from .learning import MeanCache  # noqa: E402
from .profile import Profile  # noqa: E402
from .schedule import Schedule  # noqa: E402
from .solver import solve, solve_frontier  # noqa: E402
from .tuning import tune  # noqa: E402

__all__ = [
    "__version__", "Schedule", "presets", "ops", "estimators", "adaptive", "MeanCacheState", "sample", "Profile",
    "calibrate", "solve", "solve_frontier", "tune", "default_schedule", "MeanCache", "dynamics",
]
