"""The one line learnt against the blind (multistep) rule under UniPC (order 2, flow sigmas, the pipeline's dynamic
shift), on a trained tiny FluxPipeline (issue 22: "the same holds under UniPC with the multistep rule").

    python -m bench.studies.learned_unipc MODEL N B1,B2,...      # MODEL: shipped or a model directory

Reference: the same pipeline under UniPC 2 with N steps, uncached. Rows: blind (``learn=False``: the multistep rule,
taylor1 on even steps), learnt (one learning generation on one calibration prompt; the learner uses only the
estimators UniPC allows), and UniPC 2 with B steps alone. 8 evaluation prompts, mean / worst PSNR [dB]. Every run
is checked to make exactly B transformer calls.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.loading import load_pipeline

from ..frontier import methods as M
from ..frontier.common import CAL_SEED, calibration_prompts, eval_prompts
from ..frontier.pipelines import psnr


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        raise SystemExit("usage: python -m bench.studies.learned_unipc MODEL N B1,B2,...")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = None if argv[0] == "shipped" else argv[0]
    n, budgets = int(argv[1]), [int(x) for x in argv[2].split(",")]
    pipe, kw = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = M.unipc(2)
    prompts, cal = eval_prompts(8), calibration_prompts()

    def gen(ps, seed0, steps=n):
        g = [torch.Generator().manual_seed(seed0 + k) for k in range(len(ps))]
        return np.asarray(pipe(ps, num_inference_steps=steps, generator=g, output_type="np", **kw).images, np.float64)

    def score(imgs):
        ps = [psnr(a, r) for a, r in zip(imgs, ref)]
        return f"{np.mean(ps):.1f}/{np.min(ps):.1f}"

    ref = gen(prompts, 0)
    for b in budgets:
        row = [f"unipc2-B-steps:{score(gen(prompts, 0, b))}"]
        for name, cfg in (("blind", MeanCacheConfig(budget=b, learn=False)), ("learnt", MeanCacheConfig(budget=b))):
            apply_mean_cache(pipe, cfg)
            try:
                info = ""
                if name == "learnt":
                    gen([cal[0]], CAL_SEED)
                    info = get_mean_cache_stats(pipe).learnt
                imgs = gen(prompts, 0)
                if get_mean_cache_stats(pipe).transformer_calls != b:
                    raise RuntimeError(f"{name}: {get_mean_cache_stats(pipe).transformer_calls} calls, not {b}")
            finally:
                remove_mean_cache(pipe)
            row.append(f"{name}:{score(imgs)}" + (f"({info['choice']})" if info else ""))
        print(argv[0], n, b, " ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
