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

Per model, scheduler (UniPC order 2, DPM-Solver++ 2M with flow sigmas and the dynamic shift; FlowMatchAdams orders 1
and 2 on the Euler sigmas) and budget (17, 10 of N = 50),
on bench.frontier's 8 EVALUATION prompts (seeds 0..7) against that scheduler's own 50-step output and against the
converged reference (the pipeline's Euler scheduler with 200 steps, as bench.any_scheduler), mean / worst prompt
PSNR: B steps of the scheduler alone; ``MeanCacheConfig(budget=B, learn=False)`` (the blind rule); ``solve(profile, B)``
on the Euler profile (no tuning); and the schedule ``tune_pipeline`` picks on bench.frontier's 8 tuning prompts
(seeds 200..). The profile: the shipped one for the shipped model at N = 50, else calibrated on bench.frontier's
calibration prompts (seeds 100..) with the Euler scheduler.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels.metrics import psnr

from ..any_scheduler import make_solver
from ..frontier.common import CAL_SEED, TUNE_SEED, calibration_prompts, eval_prompts, tuning_prompts
from . import study_args

SOLVERS = ("UniPC order 2", "DPM-Solver++ 2M", "Adams order 1", "Adams order 2")
CONV_FACTOR = 4  # the converged reference: the pipeline's Euler scheduler with 4N steps (as bench.any_scheduler)


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

    args = study_args(__doc__, argv)
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
    conv = generate(CONV_FACTOR * n)  # with the pipeline's Euler scheduler
    print(f"{args.model or 'shipped'} N={n}, {m} evaluation prompts; profile: {source} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    methods = ("B steps alone", "one line", "solve(Euler profile)", "tuned under the scheduler")
    cells: dict[tuple[str, int], dict[str, tuple[str, str]]] = {}
    picks: dict[tuple[str, int], str] = {}
    for name in SOLVERS:
        pipe.scheduler = make_solver(name, euler)
        try:
            own = generate(n)

            def score(imgs):
                out = []
                for ref in (own, conv):
                    p = [psnr(a, b) for a, b in zip(imgs, ref)]
                    out.append(f"{np.mean(p):.2f} / {np.min(p):.2f}")
                return tuple(out)

            def cached(config, b):
                apply_mean_cache(pipe, config)
                try:
                    imgs = generate(n)
                    assert get_mean_cache_stats(pipe).steps_computed == b
                finally:
                    remove_mean_cache(pipe)
                return imgs

            for b in budgets:
                tuned_sched = tune_pipeline(pipe, tuning_prompts(m), profile=profile, budget=b, num_inference_steps=n,
                                            seed=TUNE_SEED, progress=False, **kw)
                picks[name, b] = tuned_sched.meta["tune"]["best"]
                cells[name, b] = dict(zip(methods, (
                    score(generate(b)), score(cached(MeanCacheConfig(budget=b, learn=False), b)),
                    score(cached(MeanCacheConfig(profile=profile, budget=b), b)),
                    score(cached(MeanCacheConfig(schedule=tuned_sched), b)))))
                print(f"  {name} B={b}: " + ", ".join(f"{k} {v[0]} (conv {v[1]})" for k, v in cells[name, b].items()),
                      flush=True)
        finally:
            pipe.scheduler = euler
    for which, title in ((0, "against the scheduler's own N-step output"),
                         (1, f"against the converged reference (Euler, {CONV_FACTOR * n} steps)")):
        print(f"\nMean / worst-prompt PSNR [dB] {title}:\n")
        print("| scheduler | B | " + " | ".join(methods) + (" | tuned pick |" if which == 0 else " |"))
        print("|---|---|" + "---|" * (len(methods) + (which == 0)))
        for (name, b), row in cells.items():
            tail = f" | {picks[name, b]} |" if which == 0 else " |"
            print(f"| {name} | {b} | " + " | ".join(row[k][which] for k in methods) + tail)
    print(f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__}, mck {mck.__version__})")


if __name__ == "__main__":
    main()
