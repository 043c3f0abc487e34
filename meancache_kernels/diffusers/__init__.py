"""MeanCache for diffusers pipelines: one line accelerates a flow-matching pipeline.

    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats

    apply_mean_cache(pipe, MeanCacheConfig(budget=17))
    image = pipe(prompt, num_inference_steps=50).images[0]  # first generation: every step, the schedule learnt
    image = pipe(prompt, num_inference_steps=50).images[0]  # then B = 17 of the 50 steps run the transformer
    print(get_mean_cache_stats(pipe))                       # steps computed / skipped, transformer calls made / saved

``MeanCacheConfig(budget=17, learn=False)``: the calibration-free rule from the first generation;
``cache_dir=DIR`` keeps learnt schedules on disk.

or scoped: ``with mean_cache(pipe, MeanCacheConfig(budget=17)) as mc: ...`` (removed on leaving; ``mc.stats``).
``preview_schedule(pipe, MeanCacheConfig(budget=17), 50)`` shows the steps that will run without running the model;
``is_mean_cache_enabled(pipe)`` tells whether it is applied. MeanCache hooks the whole pipeline (transformer and
scheduler), so it is applied with ``apply_mean_cache(pipe, ...)``, not ``pipe.transformer.enable_cache(...)``.

Works on pipelines whose loop calls ``pipe.transformer`` (and ``pipe.transformer_2``) then ``pipe.scheduler.step``
once per timestep (FLUX.1, Qwen-Image, Z-Image, Stable Diffusion 3, Wan, HunyuanVideo; image-to-image and inpainting
at ``strength < 1`` included, the schedule fitted to the steps run), under
``FlowMatchEulerDiscreteScheduler``, UniPC and DPM-Solver++ in flow mode, ``FlowMatchHeunDiscreteScheduler`` and
the library's ``FlowMatchAdamsScheduler``. A generation makes B transformer calls without CFG or with batched CFG
(FLUX.1), 2B with true CFG (Qwen-Image, Wan), and under Heun 2 per computed step (the last step 1). This subpackage
is the only part of meancache_kernels that imports diffusers.

Which steps run the transformer is decided in Python from host-side counters, outside the model:
``pipe.transformer.compile()`` and ``compile_repeated_blocks()`` both work under it (docs/guide.md).

Beyond the one line, each with its measured standing in bench/RESULTS.md: ``calibrate_pipeline`` + ``tune_pipeline``
(``meancache calibrate`` / ``meancache tune``) pick a schedule end to end on a few tuning prompts for thousands of
extra model calls per budget (at or above the one line in the 12 Euler settings measured, up to 2.6 dB below it in 3
of 16 settings under other schedulers);
``MeanCacheConfig(preset=...)`` runs the paper's published schedules, below the best alternative in every setting
measured there; ``FlowMatchAdamsScheduler`` is a few-step solver for when the converged ODE solution, not the N-step
output, is the target.
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
from .dynamics import pipeline_signature
from .hooks import MeanCacheHook, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from .loading import load_pipeline
from .stats import MeanCacheStats
from .tuning import tune_pipeline
from .usage import MeanCacheHandle, SchedulePreview, is_mean_cache_enabled, mean_cache, preview_schedule

__all__ = [
    "FlowMatchAdamsScheduler",
    "MeanCacheConfig",
    "MeanCacheHandle",
    "MeanCacheHook",
    "MeanCacheStats",
    "SchedulePreview",
    "apply_mean_cache",
    "calibrate_pipeline",
    "get_mean_cache_stats",
    "is_mean_cache_enabled",
    "load_pipeline",
    "mean_cache",
    "pipeline_signature",
    "preview_schedule",
    "remove_mean_cache",
    "tune_pipeline",
]
