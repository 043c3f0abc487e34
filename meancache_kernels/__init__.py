"""meancache_kernels: training-free MeanCache acceleration for flow-matching image and video generation.

    import meancache_kernels as mck
    schedule = mck.presets.get("qwen-image", 10)
    z0 = mck.sample(model_fn, z, sigmas, schedule)

Importing does no GPU work and needs neither Triton, diffusers nor the compiled extension.
"""

from . import ops, presets
from ._version import __version__
from .cache import MeanCacheState, sample
from .schedule import Schedule

__all__ = ["__version__", "Schedule", "presets", "ops", "MeanCacheState", "sample"]
