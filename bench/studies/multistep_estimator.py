"""Which estimator should the one line feed a scheduler other than Euler: taylor1, taylor2, or the Euler rule's mix?

    python -m bench.studies.multistep_estimator                          # shipped model, prints the table
    python -m bench.studies.multistep_estimator --model bench/tiny_flux_seed1
    python -m bench.studies.multistep_estimator --smoke                  # N = 8, B = 3, 2 prompts (< 1 min)

Under UniPC, DPM-Solver++, FlowMatchAdams and FlowMatchHeun the corrector (taylorc) is not allowed, and a skipped
step hands the scheduler a predicted velocity (taylor1 / taylor2). The default rule chose its corrector-free
preference under the Euler scheduler (taylor2 on gaps of at most 3 skipped steps, taylor1 on longer ones). This study
measures, per scheduler, the evenly spaced computed steps of the default rule with (a) that mix, (b) taylor1 on every
gap, (c) taylor2 on every gap, at B = 25 / 17 / 10 of N = 50, against the scheduler's own 50-step output.

Data: the zero-config study's SELECTION prompts (noise seeds 300..), 16 of them batched, disjoint from bench.frontier's
evaluation prompts: this chooses the rule for multistep schedulers; bench.any_scheduler and
bench.studies.tune_any_scheduler (evaluation prompts) check it. Mean PSNR of the decoded images (worst prompt beside
it).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from meancache_kernels.default_rule import default_schedule
from meancache_kernels.metrics import psnr

from ..any_scheduler import make_solver
from ..zero_config.measure import PipeBench, selection_prompts
from . import study_args

SCHEDULERS = ("UniPC order 1", "UniPC order 2", "UniPC order 3", "DPM-Solver++ 2M", "DPM-Solver++ 3M",
              "Adams order 1", "Adams order 2", "Heun")
VARIANTS = {"Euler rule's mix": ("taylor1", "taylor2"), "taylor1": ("taylor1",), "taylor2": ("taylor2",)}


def main(argv=None) -> None:
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache

    args = study_args(__doc__, argv)
    n, budgets, m = (8, (3,), 2) if args.smoke else (50, (25, 17, 10), 16)
    schedulers = ("UniPC order 2", "Heun") if args.smoke else SCHEDULERS
    t0 = time.perf_counter()
    pb = PipeBench(args.model, "study", selection_prompts(m), seed0=300)
    euler = pb.pipe.scheduler
    print(f"{args.model or 'shipped'} N={n}, {m} selection prompts (seeds 300..) batched; mean / worst-prompt PSNR "
          "[dB] against each scheduler's own N-step output\n")
    print("| scheduler | B | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    wins = dict.fromkeys([*VARIANTS, "tie (within 0.01 dB)"], 0)
    for name in schedulers:
        pb.pipe.scheduler = make_solver(name, euler)
        try:
            own = pb.generate(n)
            sigmas = pb.pipe.scheduler.sigmas.double().tolist()
            if name == "Heun":  # the scheduler holds every stage's sigma: the step grid is s_0 and every second one
                sigmas = [sigmas[0]] + sigmas[1::2]
            for b in budgets:
                cells, means = [], {}
                for label, estimators in VARIANTS.items():
                    schedule = default_schedule(sigmas, b, estimators=estimators)
                    apply_mean_cache(pb.pipe, MeanCacheConfig(schedule=schedule))
                    try:
                        imgs = pb.generate(n)
                        assert get_mean_cache_stats(pb.pipe).steps_computed == b
                    finally:
                        remove_mean_cache(pb.pipe)
                    p = [psnr(x, y) for x, y in zip(imgs, own)]
                    means[label] = float(np.mean(p))
                    cells.append(f"{np.mean(p):.2f} / {np.min(p):.2f}")
                top = [k for k, v in means.items() if v >= max(means.values()) - 0.01]
                wins[top[0] if len(top) == 1 else "tie (within 0.01 dB)"] += 1
                print(f"| {name} | {b} | " + " | ".join(cells) + " |", flush=True)
        finally:
            pb.pipe.scheduler = euler
    print("\nbest mean per setting: " + ", ".join(f"{k} {v}" for k, v in wins.items()))
    print(f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
