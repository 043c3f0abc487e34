"""Ablation of the schedule machinery (issue 10): estimator x schedule source x PSSP edge cost, at matched calls.

    python -m bench.studies.ablation_estimators                 # analytic flows + shipped pipeline (minutes, 2 cores)
    python -m bench.studies.ablation_estimators --no-pipeline   # analytic flows only (about a minute)
    python -m bench.studies.ablation_estimators --no-flows --tune   # + tune_pipeline: full, halving, reference_steps=4N

The decisions this backs (meancache_kernels.schedule.solve's defaults): PSSP over the polynomial estimators without
jvp (jvp's calibrated cost assumes a full-step history), the "state" edge cost for them, and the taylorc corrector.
For every budget B of N = 50 it runs, with the same latents / prompts and seeds:

- ``uniform[e]``: evenly spaced computed steps with estimator e;
- ``pssp[set, cost]@g``: :func:`meancache_kernels.solve` with that estimator set (``paper`` = ``("jvp",)``,
  ``all`` = every estimator, ``poly`` = the default, the polynomial ones; ``jvp+taylor+mean`` and ``taylor+mean``:
  the same without the taylorc corrector) and edge cost at gamma g.

Flows (meancache_kernels.testing.GaussianMixtureFlow, float64): relative RMSE of the final latent against the N-step
Euler output, 64 evaluation latents, calibration on 32 other latents. Pipeline (the shipped tiny FluxPipeline): mean
PSNR over the 8 evaluation prompts of bench.frontier against the uncached N-step output, with the shipped profile.
Nothing here is tuned on the evaluation data: it only compares fixed rules. ``--tune`` adds
:func:`meancache_kernels.diffusers.tune_pipeline` on bench.frontier's 8 tuning prompts (seeds 200..), judged on
the evaluation prompts: every candidate on every prompt (the default), with successive halving (``halving=True``),
and against 4N-step references (``reference_steps=4N``), with the transformer calls each one cost.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import torch

import meancache_kernels as mck

N = 50
BUDGETS = (25, 17, 10)
FLOWS = [(0, 64, 6, 3.0), (1, 32, 4, 1.0), (2, 16, 8, 6.0)]  # seed, dim, components, shift
UNIFORM = ("taylor1", "taylor2", "mean1", "taylorc1", "taylorc2")
SETS = {
    "paper": ("jvp",),
    "all": "all",
    "poly": None,  # the default
    # without the corrector: does mixing jvp in help or hurt the plain polynomial estimators?
    "jvp+taylor+mean": ("jvp", "taylor1", "taylor2", "mean1", "mean2"),
    "taylor+mean": ("taylor1", "taylor2", "mean1", "mean2"),
}
COSTS = ("velocity", "state")
GAMMAS = (1.0, 2.0, 3.0)


def schedules(profile, budget: int) -> dict[str, mck.Schedule]:
    out = {f"uniform[{e}]": mck.Schedule.uniform(N, budget, e) for e in UNIFORM if e in profile.estimators}
    for (name, est), cost, g in itertools.product(SETS.items(), COSTS, GAMMAS):
        out[f"pssp[{name},{cost}]@g{g:g}"] = mck.solve(profile, budget, gamma=g, estimators=est, edge_cost=cost)
    return out


def flows() -> list[str]:
    from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

    lines = []
    for seed, dim, comps, shift in FLOWS:
        flow = GaussianMixtureFlow.random(dim=dim, components=comps, seed=seed)
        sig = flow_sigmas(N, shift=shift)
        cal = torch.randn(32, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        prof = mck.calibrate(flow, cal, sig, max_span=6, max_skip=12, progress=False)
        z0 = torch.randn(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(100))
        full = mck.sample(flow, z0, sig, mck.Schedule.full(N))
        lines.append(f"\n#### Flow seed {seed}, dim {dim}, {comps} components, shift {shift}: relative RMSE\n")
        rows = {}
        for b in BUDGETS:
            for name, s in schedules(prof, b).items():
                rows.setdefault(name, {})[b] = ((mck.sample(flow, z0, sig, s) - full).norm() / full.norm()).item()
        lines += _table(rows, "{:.2e}", lower_is_better=True)
    return lines


def pipeline(threads: int, tune: bool = False) -> list[str]:
    from meancache_kernels._assets import SHIPPED_PROFILE
    from meancache_kernels.diffusers import (
        MeanCacheConfig,
        apply_mean_cache,
        load_pipeline,
        remove_mean_cache,
        tune_pipeline,
    )

    from ..frontier import TUNE_SEED, eval_prompts, tuning_prompts

    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe, kw = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    prof = mck.Profile.load(SHIPPED_PROFILE)
    prompts = eval_prompts(8)

    def run(schedule=None, steps=N):
        if schedule is not None:
            apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
        try:
            gens = [torch.Generator().manual_seed(k) for k in range(len(prompts))]
            return pipe(prompts, num_inference_steps=steps, generator=gens, output_type="np", **kw).images
        finally:
            if schedule is not None:
                remove_mean_cache(pipe)

    ref = run()

    def psnr(x, against=ref):
        mse = ((x - against) ** 2).reshape(len(x), -1).mean(1)
        return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-20))))

    rows = {}
    for b in BUDGETS:
        for name, s in schedules(prof, b).items():
            rows.setdefault(name, {})[b] = psnr(run(s))
    head = [f"\n#### Shipped tiny FluxPipeline: mean PSNR [dB] over 8 evaluation prompts (estimators in the profile: "
            f"{list(prof.estimators)})\n"]
    out = head + _table(rows, "{:.2f}", lower_is_better=False)
    if tune:
        conv = run(steps=4 * N)
        out += ["\n#### tune_pipeline on the 8 tuning prompts: mean PSNR [dB] on the evaluation prompts\n",
                "| B | mode | vs N steps | vs 4N steps | transformer-call steps | chosen |",
                "|---|---|---|---|---|---|"]
        for b in BUDGETS:
            for mode, extra in (("every candidate on every prompt", {}), ("halving=True", {"halving": True}),
                                ("reference_steps=4N", {"reference_steps": 4 * N})):
                s = tune_pipeline(pipe, tuning_prompts(8), profile=prof, budget=b, num_inference_steps=N,
                                  seed=TUNE_SEED, progress=False, **extra, **kw)
                x = run(s)
                t = s.meta["tune"]
                out.append(f"| {b} | {mode} | {psnr(x):.2f} | {psnr(x, conv):.2f} | {t['model_calls']} | {t['best']} |")
    return out


def _table(rows: dict[str, dict[int, float]], fmt: str, lower_is_better: bool) -> list[str]:
    out = ["| schedule | " + " | ".join(f"B={b}" for b in BUDGETS) + " |", "|---|" + "---|" * len(BUDGETS)]
    best = {b: (min if lower_is_better else max)(r[b] for r in rows.values()) for b in BUDGETS}
    for name, r in rows.items():
        cells = [("**" + fmt.format(r[b]) + "**") if r[b] == best[b] else fmt.format(r[b]) for b in BUDGETS]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--no-flows", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tune", action="store_true", help="also tune_pipeline (full, halving, reference_steps=4N)")
    args = ap.parse_args(argv)
    t0 = time.time()
    flags = "".join(f" --{k.replace('_', '-')}" for k in ("no_pipeline", "no_flows", "tune") if getattr(args, k))
    lines = [f"`python -m bench.studies.ablation_estimators{flags} --threads {args.threads}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}"]
    if not args.no_flows:
        lines += flows()
    if not args.no_pipeline:
        lines += pipeline(args.threads, args.tune)
    lines.append(f"\n({time.time() - t0:.0f} s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
