"""How well does tuning's choice on the tuning data hold on the evaluation data? And which selection rule is best?

    python -m bench.studies.tune_selection     # collect (7 min on 2 cores) + report -> bench/results/tune_selection.*
    python -m bench.studies.tune_selection --report bench/results/tune_selection.json   # the report again

(bench/results/tune_selection.json, the collected errors, is a few MB and is not committed;
bench/results/tune_selection.md is.)

For every setting (both trained FluxPipelines at N = 50, B = 25 / 17 / 10 and N = 28, B = 14 / 10 / 7; eight
Gaussian-mixture flows, the two of bench.frontier and six others, at N = 50, B = 25 / 17 / 10 / 6) every tuning
candidate (:func:`meancache_kernels.tuning.candidate_schedules`) is run on the tuning data and on the evaluation data
(bench.frontier's disjoint prompt sets and seeds; for the flows 32 tuning and 256 evaluation latents), and the
per-sample relative RMSE of the final latent against the uncached N-step output is kept. A selection rule sees only
the tuning errors; it is judged by the evaluation error of what it picks:

- regret: 20 log10(eval geometric-mean error of the pick / that of the best candidate on the evaluation data), in
  dB (for the pipelines about the mean-PSNR given away to an oracle that picks on the evaluation data);
- worst: 20 log10 of the pick's largest evaluation error over that of the current rule's pick (negative = a better
  worst sample).

Rules (all on the per-sample tuning errors e_k of a candidate, S samples, log l_k = log e_k):

- ``geo``: the lowest mean(l) (mean PSNR; the library's rule before ``default_margin_se``);
- ``keep default T s.e.``: ``geo``, unless the library's untuned default ``solve(profile, B)`` is within T standard
  errors of the paired differences of l (``meancache_kernels.tuning.choose``; the library's rule, T = 1);
- ``mean``: the lowest mean(e);
- ``rms``: the lowest sqrt(mean(e^2)) (the pooled MSE);
- ``risk λ``: the lowest mean(l) + λ std(l);
- ``1se-worst``: the candidates whose paired mean log-ratio to the ``geo`` pick is within one standard error of it,
  then the lowest max(e) among them;
- ``untuned default``: no tuning, ``solve(profile, B)`` (for comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import frontier as F

ROOT = Path(__file__).resolve().parents[2]

FLOWS = F.FLOWS + (
    dict(dim=16, components=3, shift=1.0, seed=11),
    dict(dim=32, components=8, shift=1.5, seed=12),
    dict(dim=256, components=10, shift=3.0, seed=13),
    dict(dim=64, components=2, shift=6.0, seed=14),
    dict(dim=8, components=12, shift=2.0, seed=15),
    dict(dim=128, components=6, shift=4.5, seed=16),
)
PIPELINE_SETTINGS = ((50, (25, 17, 10)), (28, (14, 10, 7)))
MODELS = (None, str(ROOT / "bench" / "tiny_flux_seed1"))


def collect_flows(log) -> list[dict]:
    import meancache_kernels as mck
    from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas
    from meancache_kernels.tuning import candidate_schedules, default_candidate, per_sample_errors

    out = []
    for spec in FLOWS:
        flow = GaussianMixtureFlow.random(spec["dim"], components=spec["components"], seed=spec["seed"])
        sig = flow_sigmas(50, shift=spec["shift"])

        def latents(n, off, seed=spec["seed"], dim=spec["dim"]):
            return torch.randn(n, dim, generator=torch.Generator().manual_seed(1000 * seed + off), dtype=torch.float64)

        z_eval, z_cal, z_tune = latents(256, 1), latents(64, 2), latents(32, 3)  # bench.frontier's latents
        profile = mck.calibrate(flow, z_cal, sig, max_span=6, max_skip=12, progress=False, batch_size=64)
        full = mck.Schedule.full(50)
        r_tune, r_eval = mck.sample(flow, z_tune, sig, full), mck.sample(flow, z_eval, sig, full)
        for b in (25, 17, 10, 6):
            cands = {}
            schedules = candidate_schedules(profile, b)
            for name, s in schedules.items():
                cands[name] = dict(tune=per_sample_errors(mck.sample(flow, z_tune, sig, s), r_tune),
                                   eval=per_sample_errors(mck.sample(flow, z_eval, sig, s), r_eval))
            out.append(dict(kind="flow", setting=f"flow {spec['dim']},{spec['components']},{spec['shift']:g},"
                                                 f"{spec['seed']} N=50 B={b}", candidates=cands,
                            default=default_candidate(schedules, profile, b)))
            log(f"  {out[-1]['setting']}: {len(cands)} candidates")
    return out


def collect_pipelines(log) -> list[dict]:
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, calibrate_pipeline, remove_mean_cache
    from meancache_kernels.diffusers.loading import load_pipeline
    from meancache_kernels.diffusers.tuning import _latents
    from meancache_kernels.tuning import candidate_schedules, default_candidate, per_sample_errors

    out = []
    tune_p, eval_p, cal_p = F.tuning_prompts(8), F.eval_prompts(8), F.calibration_prompts()
    for model in MODELS:
        pipe, kw = load_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        for n, budgets in PIPELINE_SETTINGS:
            profile = calibrate_pipeline(pipe, cal_p * 4, n, max_span=6, max_skip=12, batch_size=len(cal_p),
                                         seed=F.CAL_SEED, progress=False, **kw)  # as bench.frontier for --model
            idx = list(range(8))
            r_tune = _latents(pipe, tune_p, idx, n, F.TUNE_SEED, kw)
            r_eval = _latents(pipe, eval_p, idx, n, 0, kw)

            def errors(prompts, seed, schedule, ref, n=n, pipe=pipe, kw=kw):
                apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
                try:
                    return per_sample_errors(_latents(pipe, prompts, idx, n, seed, kw), ref)
                finally:
                    remove_mean_cache(pipe)

            for b in budgets:
                schedules = candidate_schedules(profile, b)
                cands = {name: dict(tune=errors(tune_p, F.TUNE_SEED, s, r_tune), eval=errors(eval_p, 0, s, r_eval))
                         for name, s in schedules.items()}
                label = "shipped" if model is None else Path(model).name
                out.append(dict(kind="pipeline", setting=f"{label} N={n} B={b}", candidates=cands,
                                default=default_candidate(schedules, profile, b)))
                log(f"  {out[-1]['setting']}: {len(cands)} candidates")
    return out


# ------------------------------------------------------------------------------------------------ rules
def _logs(e):
    return np.log(np.maximum(np.asarray(e, np.float64), 1e-300))


def rule_geo(c, default=None):
    return min(c, key=lambda n: _logs(c[n]["tune"]).mean())


def rule_mean(c, default=None):
    return min(c, key=lambda n: float(np.mean(c[n]["tune"])))


def rule_rms(c, default=None):
    return min(c, key=lambda n: float(np.sqrt(np.mean(np.square(c[n]["tune"])))))


def rule_risk(lam):
    def rule(c, default=None):
        return min(c, key=lambda n: _logs(c[n]["tune"]).mean() + lam * _logs(c[n]["tune"]).std())
    return rule


def rule_1se_worst(c, default=None):
    best = rule_geo(c)
    lb = _logs(c[best]["tune"])
    tied = []
    for n in c:
        d = _logs(c[n]["tune"]) - lb
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        if d.mean() <= se:
            tied.append(n)
    return min(tied, key=lambda n: max(c[n]["tune"]))


def rule_keep_default(margin_se):
    """The library's rule (meancache_kernels.tuning.choose): the geo pick unless the untuned default is within
    ``margin_se`` standard errors of it."""
    from meancache_kernels.tuning import choose

    def rule(c, default=None):
        results = [{"name": n, "error": math.exp(_logs(v["tune"]).mean()), "samples": len(v["tune"]),
                    "errors": list(v["tune"])} for n, v in c.items()]
        return choose(results, default if default in c else None, margin_se)[0]
    return rule


RULES = {"geo": rule_geo, "keep default 1 s.e. (library)": rule_keep_default(1.0),
         "keep default 0.5 s.e.": rule_keep_default(0.5), "keep default 2 s.e.": rule_keep_default(2.0),
         "mean": rule_mean, "rms": rule_rms, "risk 0.5": rule_risk(0.5), "risk 1": rule_risk(1.0),
         "1se-worst": rule_1se_worst,
         "untuned default": lambda c, default=None: default if default in c else rule_geo(c)}


def _default_by_name(c):
    """For files collected before the default was recorded: solve()'s default is gamma 2 with the state cost, kept
    under the gamma-1 name when both solved to the same schedule."""
    return next((n for n in ("pssp[default,state]@g2", "pssp[default,state]@g1") if n in c), None)


def report(data: dict) -> str:
    settings = data["settings"]
    per_rule = {r: dict(regret=[], worst=[], kinds=[]) for r in RULES}
    rows = []
    for st in settings:
        c = {n: v for n, v in st["candidates"].items() if all(map(math.isfinite, v["tune"] + v["eval"]))}
        ev = {n: _logs(v["eval"]).mean() for n, v in c.items()}
        oracle = min(ev.values())
        default = st.get("default") or _default_by_name(c)
        ref_worst = max(c[rule_geo(c)]["eval"])
        cells = []
        for r, fn in RULES.items():
            pick = fn(c, default)
            regret = 20 / math.log(10) * (ev[pick] - oracle)
            worst = 20 * math.log10(max(c[pick]["eval"]) / ref_worst)
            per_rule[r]["regret"].append(regret)
            per_rule[r]["worst"].append(worst)
            per_rule[r]["kinds"].append(st["kind"])
            cells.append(f"{regret:.2f} / {worst:+.2f}")
        rows.append(f"| {st['setting']} | {len(c)} | " + " | ".join(cells) + " |")
    head = ["| setting | candidates | " + " | ".join(RULES) + " |", "|---|---|" + "---|" * len(RULES)]
    summ = ["| rule | mean regret, pipelines [dB] | max regret, pipelines | mean regret, flows [dB] | max regret, "
            "flows | mean worst-sample change vs geo [dB] |", "|---|---|---|---|---|---|"]
    for r, v in per_rule.items():
        reg, kinds = np.array(v["regret"]), np.array(v["kinds"])
        p, f = reg[kinds == "pipeline"], reg[kinds == "flow"]
        summ.append(f"| {r} | {p.mean():.2f} | {p.max():.2f} | {f.mean():.2f} | {f.max():.2f} | "
                    f"{np.mean(v['worst']):+.2f} |")
    sizes = ["| tuning samples used | mean regret, pipelines [dB] | mean regret, flows [dB] |", "|---|---|---|"]
    rng = np.random.default_rng(0)
    for k in (1, 2, 4, 8, 16, 32):
        reg = {"pipeline": [], "flow": []}
        for st in settings:
            c = {n: v for n, v in st["candidates"].items() if all(map(math.isfinite, v["tune"] + v["eval"]))}
            s_tot = len(next(iter(c.values()))["tune"])
            if k > s_tot:
                continue
            ev = {n: _logs(v["eval"]).mean() for n, v in c.items()}
            oracle = min(ev.values())
            for _ in range(20 if k < s_tot else 1):
                idx = rng.choice(s_tot, size=k, replace=False)
                pick = rule_geo({n: dict(tune=[v["tune"][i] for i in idx]) for n, v in c.items()})
                reg[st["kind"]].append(20 / math.log(10) * (ev[pick] - oracle))
        cell = {kind: (f"{np.mean(v):.2f}" if v else "") for kind, v in reg.items()}
        sizes.append(f"| {k} | {cell['pipeline']} | {cell['flow']} |")
    return "\n".join([
        f"`{data['command']}`, {data['machine']}, {data['date']}, {data['seconds']:.0f} s.", "",
        "Summary over the settings (regret: dB of geometric-mean error given away to the evaluation-data oracle; "
        "worst: change of the largest per-sample evaluation error against the `geo` pick, in dB, lower is better):",
        "", *summ, "",
        "The `geo` rule on random subsets of the tuning samples (20 draws each; the pipelines have 8 tuning prompts, "
        "the flows 32 tuning latents):", "", *sizes, "", "Per setting, regret / worst [dB]:", "", *head, *rows, ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", default=None, metavar="JSON", help="only the report, from an earlier run's JSON")
    ap.add_argument("--no-pipelines", action="store_true")
    ap.add_argument("--no-flows", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune_selection"),
                    help="output stem (.json, .md; default bench/results/tune_selection)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    settings = []
    if not args.no_flows:
        settings += collect_flows(lambda s: print(s, flush=True))
    if not args.no_pipelines:
        settings += collect_pipelines(lambda s: print(s, flush=True))
    import os

    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    data = dict(command=f"python -m bench.studies.tune_selection {args_text}".strip(),
                machine=f"cpu-{os.cpu_count()}c, torch {torch.__version__}",
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), seconds=time.perf_counter() - t0,
                settings=settings)
    for st in settings:  # 4 significant digits: the errors are compared in dB, and the file stays small
        for v in st["candidates"].values():
            v["tune"], v["eval"] = [float(f"{e:.4g}") for e in v["tune"]], [float(f"{e:.4g}") for e in v["eval"]]
    Path(args.out + ".json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    text = report(data)
    Path(args.out + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
