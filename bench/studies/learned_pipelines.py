"""The one line learnt against the blind rule on the trained tiny FluxPipelines (issue 22): the shipped one, the
second one (bench/tiny_flux_seed1) and the one with FLUX.1's early dynamics (meancache_kernels/assets/
tiny_flux_natural).

    python -m bench.studies.learned_pipelines MODEL N B1,B2,...     # MODEL: shipped or a model directory
    python -m bench.studies.learned_pipelines MODEL N B1,B2,... --unipc --learnings 1

For each budget: ``MeanCacheConfig(budget=B, learn=False)`` (blind: the even rule) and ``MeanCacheConfig(budget=B)``
after its learning generation on ONE calibration prompt (k = 0, 1, 2: three separate learnings, each on its own
prompt and seed), judged on bench.frontier's 8 evaluation prompts (seeds 0..7, batched) by PSNR [dB] against the
uncached N-step images, ``mean/worst`` prompt, with the rule's choice and the early share it read. Every evaluation
run is checked to make exactly B transformer calls. Results: bench/results/learned_pipelines.md.

``--unipc``: the pipeline under UniPC order 2 (flow sigmas, its dynamic shift) against its own N-step output, the
blind rule being the multistep one, plus UniPC 2 with B steps alone (bench/results/learned_unipc.md).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.loading import load_pipeline

from ..frontier import methods as M
from ..frontier.common import CAL_SEED, calibration_prompts, eval_prompts
from ..frontier.pipelines import psnr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.learned_pipelines")
    ap.add_argument("model", help="shipped, or a model directory")
    ap.add_argument("steps", type=int)
    ap.add_argument("budgets")
    ap.add_argument("--unipc", action="store_true", help="under UniPC order 2 instead of the pipeline's Euler")
    ap.add_argument("--learnings", type=int, default=3, help="separate learnings, each from one calibration prompt")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = None if args.model == "shipped" else args.model
    n, budgets = args.steps, [int(x) for x in args.budgets.split(",")]
    pipe, kw = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    if args.unipc:
        pipe.scheduler = M.unipc(2)
    prompts, cal = eval_prompts(8), calibration_prompts()

    def gen(ps, seed0, steps=n):
        g = [torch.Generator().manual_seed(seed0 + k) for k in range(len(ps))]
        out = pipe(ps, num_inference_steps=steps, generator=g, output_type="np", **kw).images
        return np.asarray(out, np.float64)

    ref = gen(prompts, 0)
    for b in budgets:
        row = []
        if args.unipc:
            ps = [psnr(a, r) for a, r in zip(gen(prompts, 0, b), ref)]
            row.append(f"unipc2-B-steps:{np.mean(ps):.1f}/{np.min(ps):.1f}")
        configs = [("blind", MeanCacheConfig(budget=b, learn=False))]
        configs += [(f"learn{k}", MeanCacheConfig(budget=b)) for k in range(args.learnings)]
        for name, cfg in configs:
            apply_mean_cache(pipe, cfg)
            try:
                info = ""
                if name.startswith("learn"):
                    k = int(name[-1])
                    gen([cal[k]], CAL_SEED + k)  # the learning generation: one prompt, every step computed
                    info = get_mean_cache_stats(pipe).learnt
                imgs = gen(prompts, 0)
                if get_mean_cache_stats(pipe).transformer_calls != b:
                    raise RuntimeError(f"{name}: {get_mean_cache_stats(pipe).transformer_calls} calls, not {b}")
            finally:
                remove_mean_cache(pipe)
            ps = [psnr(a, r) for a, r in zip(imgs, ref)]
            row.append(f"{name}:{np.mean(ps):.1f}/{np.min(ps):.1f}"
                       + (f"({info['choice']},{info['early_share']:.2f})" if info else ""))
        print(args.model, n, b, " ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
