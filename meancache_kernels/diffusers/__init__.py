"""MeanCache for diffusers pipelines: one call accelerates a flow-matching pipeline.

    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache

    apply_mean_cache(pipe, MeanCacheConfig(preset="qwen-image", budget=10))
    image = pipe(prompt, num_inference_steps=50).images[0]     # 10 of 50 steps run the transformer
    remove_mean_cache(pipe)

Works on pipelines whose loop calls ``pipe.transformer`` (and ``pipe.transformer_2``) then
``pipe.scheduler.step`` once per timestep with a ``FlowMatchEulerDiscreteScheduler``: FLUX.1, Qwen-Image,
Z-Image, Stable Diffusion 3, Wan, HunyuanVideo. This subpackage is the only part of meancache_kernels that
imports diffusers.

Which steps run the transformer is decided in Python from host-side counters, outside the model: with
``torch.compile``, compile the transformer's blocks (``pipe.transformer.compile_repeated_blocks()``) rather than the
whole hooked module. ``calibrate_pipeline`` (or ``meancache calibrate``) measures the edge costs of a pipeline for
``MeanCacheConfig(profile=..., budget=B)``; ``tune_pipeline`` (or ``meancache tune``) picks the best schedule end to
end on a few tuning prompts. ``FlowMatchAdamsScheduler`` is a few-step solver (Adams-Bashforth in sigma) for
when the converged ODE solution, not the N-step output, is the target.
"""

try:
    import diffusers  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "meancache_kernels.diffusers needs diffusers: pip install 'meancache_kernels[diffusers]'"
    ) from e

from .adams import FlowMatchAdamsScheduler
from .calibration import calibrate_pipeline
from .config import MeanCacheConfig
from .hooks import MeanCacheHook, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from .loading import load_pipeline
from .stats import MeanCacheStats
from .tuning import tune_pipeline

__all__ = [
    "FlowMatchAdamsScheduler",
    "MeanCacheConfig",
    "MeanCacheHook",
    "MeanCacheStats",
    "apply_mean_cache",
    "calibrate_pipeline",
    "get_mean_cache_stats",
    "load_pipeline",
    "remove_mean_cache",
    "tune_pipeline",
]
