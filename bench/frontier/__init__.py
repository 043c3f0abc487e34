"""Quality per transformer call: MeanCache against every alternative a user has, at matched work, in one run.

    python -m bench.frontier              # shipped tiny FluxPipeline + two analytic flows -> bench/results/frontier.*
    python -m bench.frontier --model bench/tiny_flux_seed1 --no-flows --name frontier_seed1
    python -m bench.frontier --smoke      # 1 prompt, N = 8, 2 budgets, every method once (CI, < 1 min)

Pipeline part (a FluxPipeline written by python/tools/train_tiny_flux.py; default the shipped one), N steps (50),
budgets B (25, 17, 10): every method is run on the same evaluation prompts and noise seeds (seeds 0..), batched in
one call, and judged by PSNR / SSIM on [0, 1] pixels (mean and worst prompt) against

- the uncached N-step Euler output of the same prompt and seed (the headline: what a user compares with), and
- a converged reference: the same pipeline with 4N Euler steps.

Methods at matched transformer work:

- fewer steps: Euler with B steps; UniPC with B steps, solver_order 1, 2, 3; DPM-Solver++ (2M, 3M) with B steps;
  UniPC and DPM-Solver++ use diffusers' flow sigmas (``use_flow_sigmas=True`` and the pipeline's dynamic shift
  ``mu``: FluxPipeline then passes no ``sigmas``, which DPMSolverMultistepScheduler does not take); FlowMatchHeun
  with (B + 1) // 2 steps (2 evaluations per step but the last: 2n - 1 calls), run on the pipeline's own Euler sigmas
  through a subclass whose ``set_timesteps`` takes FluxPipeline's ``sigmas`` and ``mu``; the library's own few-step
  solver ``FlowMatchAdamsScheduler`` (orders 1 and 2, B steps on the pipeline's Euler sigmas), counted as an
  alternative to MeanCache like the others;
- caches, all through ``transformer.enable_cache``: FirstBlockCache and MagCache (thresholds bisected so that the
  counted cost on the TUNING prompts is closest to B; MagCache first calibrates its magnitude ratios on the
  calibration prompts; max_skip_steps 8 and retention_ratio 0.1 so that small budgets are reachable); TaylorSeer lite
  (max_order 1 and 2) and full mode (the attention outputs of every block Taylor-predicted; max_order 1 and 2): its
  schedule is fixed (``disable_cache_before_step`` w, ``cache_interval`` k), so (w, k) is picked from a cost model of
  its computed-step count, the default w = 3 preferred on ties;
- MeanCache: every schedule source and estimator the library offers (:func:`methods.meancache_methods`): the
  paper's PSSP schedule, the published presets for this N and B, and, when ``meancache_kernels.estimators`` exists,
  PSSP and uniform schedules for every estimator in ``estimators.available()``, the library default and the tuned
  schedule.

Cost is counted, not assumed: ``forwards`` (``fwd``) = transformer calls, counted at proj_out (the diffusers caches
skip work inside a call, so they show N; fewer steps and MeanCache make fewer calls); ``equiv`` =
multiply-accumulates of every Linear layer of the transformer divided by those of one full forward (a cache's
always-computed first block or embedders included), the measure every method is matched on. A row whose ``equiv``
misses B by more than 10 % is marked ``*`` and takes no part in "best per budget".

Data: evaluation prompts (seeds 0..), tuning prompts (seeds 200..; cache thresholds, MeanCache tuning) and
calibration prompts (seeds 100..; MeanCache profile, MagCache ratios) are three disjoint prompt sets. The shipped
model's profile was calibrated on the calibration prompts by python/tools/calibrate_tiny_flux.py and is used when it
holds costs for every estimator the library offers; any other model (``--model``), or a shipped profile without some
estimator, is calibrated in the run on the calibration prompts, as a user would.

Analytic part (meancache_kernels.testing.GaussianMixtureFlow, float64, exact velocity): Euler-B, UniPC-B and
DPM-Solver++-B driven directly on the velocity function (their sigmas replaced by the same shifted flow sigmas as
Euler's), Heun with (B + 1) // 2 steps, the library's FlowMatchAdamsScheduler (driven the same way), and MeanCache
(profile calibrated and schedules tuned on latents disjoint from the evaluation latents). Relative RMSE of the final
latent against the N-step Euler output (headline) and against a converged reference (classical RK4, 400 steps on the
same shifted sigma curve).

Outputs: a markdown report (``NAME.md``), strict JSON (``NAME.json``, no NaN/Infinity: an identical image has PSNR
null) and a plot (``NAME.png``: PSNR against equiv, one line per method family, the family's best variant at each
budget).

Modules: ``common`` (constants, the prompt sets, the Row record), ``methods`` (the method registry: few-step solvers,
caches, MeanCache variants), ``pipelines`` (the pipeline part), ``flows`` (the analytic part), ``report`` (markdown,
JSON, plot), ``cli`` (the command line; ``python -m bench.frontier`` runs it).
"""

from .cli import main
from .common import (
    BUDGETS,
    CAL_SEED,
    FAMILIES,
    FLOWS,
    SMOKE_BUDGETS,
    SMOKE_FLOWS,
    SMOKE_N,
    TOLERANCE,
    TUNE_SEED,
    N,
    Row,
    calibration_prompts,
    eval_prompts,
    tuning_prompts,
)
from .flows import bench_flow
from .methods import (
    ADAMS_ORDERS,
    adams,
    describe,
    heun_scheduler,
    heun_steps,
    meancache_methods,
    taylor_computed,
    uniform_steps,
)
from .pipelines import Counter, PipelineBench, psnr, ssim
from .report import write_outputs

__all__ = [
    "ADAMS_ORDERS", "BUDGETS", "CAL_SEED", "FAMILIES", "FLOWS", "N", "SMOKE_BUDGETS", "SMOKE_FLOWS", "SMOKE_N",
    "TOLERANCE", "TUNE_SEED", "Counter", "PipelineBench", "Row", "adams", "bench_flow", "calibration_prompts",
    "describe", "eval_prompts", "heun_scheduler", "heun_steps", "main", "meancache_methods", "psnr", "ssim",
    "taylor_computed", "tuning_prompts", "uniform_steps", "write_outputs",
]
