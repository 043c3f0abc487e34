"""Calibrate with Euler, tune with the user's scheduler: does tuning under UniPC / DPM-Solver++ lift MeanCache there?

    python -m bench.studies.tune_any_scheduler                          # shipped model -> prints the table
    python -m bench.studies.tune_any_scheduler --model bench/tiny_flux_seed1
    python -m bench.studies.tune_any_scheduler --smoke                  # N = 8, B = 3, 2 prompts (< 1 min)

Calibration records full-step Euler trajectories (``calibrate_pipeline`` refuses other schedulers: its edge costs are
the error of an Euler roll-out). ``tune_pipeline`` runs every candidate through the pipeline as it is, so under a
multistep scheduler it judges the candidates with that scheduler in the loop; its candidates are the PSSP schedules
of the Euler profile restricted to the estimators the scheduler allows (taylor1 / taylor2), the uniform ones and the
calibration-free default rule (kept unless beaten by more than one standard error). This measures whether that
split (Euler edge costs, the scheduler's own end-to-end check) is enough, i.e. whether edge costs need the scheduler
in the loop at all.

Per model, scheduler (UniPC order 2, DPM-Solver++ 2M; flow sigmas, dynamic shift) and budget (17, 10 of N = 50),
on bench.frontier's 8 EVALUATION prompts (seeds 0..7) against that scheduler's own 50-step output (mean / worst
prompt PSNR): B steps of the scheduler alone; ``MeanCacheConfig(budget=B)`` (the one line); ``solve(profile, B)``
on the Euler profile (no tuning); and the schedule ``tune_pipeline`` picks on bench.frontier's 8 tuning prompts
(seeds 200..). The profile: the shipped one for the shipped model at N = 50, else calibrated on bench.frontier's
calibration prompts (seeds 100..) with the Euler scheduler.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels.metrics import psnr

from ..any_scheduler import make_solver
from ..frontier.common import CAL_SEED, TUNE_SEED, calibration_prompts, eval_prompts, tuning_prompts

SOLVERS = ("UniPC order 2", "DPM-Solver++ 2M")


def main(argv=None) -> None:
    from meancache_kernels import Profile
    from meancache_kernels._assets import SHIPPED_PROFILE
    from meancache_kernels.diffusers import (
        MeanCacheConfig,
        apply_mean_cache,
        calibrate_pipeline,
        get_mean_cache_stats,
        remove_mean_cache,
        tune_pipeline,
    )
    from meancache_kernels.diffusers.loading import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a trained tiny model dir (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, budgets, m = (8, (3,), 2) if args.smoke else (50, (17, 10), 8)
    t0 = time.perf_counter()
    pipe, kw = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    euler = pipe.scheduler
    prompts = eval_prompts(m)

    def generate(steps):
        gens = [torch.Generator().manual_seed(k) for k in range(m)]
        return np.asarray(pipe(prompts, num_inference_steps=steps, generator=gens, output_type="np", **kw).images,
                          np.float64)

    if args.model is None and n == 50:
        profile, source = Profile.load(SHIPPED_PROFILE), "the shipped profile"
    else:
        cal = calibration_prompts(2 if args.smoke else None)
        profile = calibrate_pipeline(pipe, cal, n, max_span=6, max_skip=min(12, n - 1), batch_size=len(cal),
                                     seed=CAL_SEED, progress=False, **kw)
        source = f"calibrated with Euler on {len(cal)} calibration prompts"
    print(f"{args.model or 'shipped'} N={n}, {m} evaluation prompts; profile: {source} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print("| scheduler | B | B steps alone | one line | solve(Euler profile) | tuned under the scheduler "
          "| tuned pick |")
    print("|---|---|---|---|---|---|---|")
    for name in SOLVERS:
        pipe.scheduler = make_solver(name, euler)
        try:
            own = generate(n)

            def score(imgs):
                p = [psnr(a, b) for a, b in zip(imgs, own)]
                return f"{np.mean(p):.2f} / {np.min(p):.2f}"

            def cached(config, b):
                apply_mean_cache(pipe, config)
                try:
                    imgs = generate(n)
                    assert get_mean_cache_stats(pipe).steps_computed == b
                finally:
                    remove_mean_cache(pipe)
                return imgs

            for b in budgets:
                alone = score(generate(b))
                one_line = score(cached(MeanCacheConfig(budget=b), b))
                solved = score(cached(MeanCacheConfig(profile=profile, budget=b), b))
                tuned_sched = tune_pipeline(pipe, tuning_prompts(m), profile=profile, budget=b, num_inference_steps=n,
                                            seed=TUNE_SEED, progress=False, **kw)
                tuned = score(cached(MeanCacheConfig(schedule=tuned_sched), b))
                pick = tuned_sched.meta["tune"]["best"]
                print(f"| {name} | {b} | {alone} | {one_line} | {solved} | {tuned} | {pick} |", flush=True)
        finally:
            pipe.scheduler = euler
    print(f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__}, mck {mck.__version__})")


if __name__ == "__main__":
    main()
