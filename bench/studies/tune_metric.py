"""Tuning metric: does ``tune_pipeline(metric="image")`` (candidates judged on the decoded images) keep tuning at
least as good as the calibration-free default, where ``metric="latent"`` (the final latents) lost to it
(bench/results/cheap_calibration.md)?

    python -m bench.studies.tune_metric            # -> bench/results/tune_metric.{json,md}
    python -m bench.studies.tune_metric --smoke    # shipped model, N = 8, B = 5 / 3, 2 prompts per set (< 1 min)
    python -m bench.studies.tune_metric --report bench/results/tune_metric.json   # the report again

For both models (the shipped tiny FluxPipeline and bench/tiny_flux_seed1) at N = 50 and B = 25 / 17 / 10, on
bench.frontier's 8 EVALUATION prompts (noise seeds 0..7), by the PSNR of the decoded images against the uncached
50-step output (mean and worst prompt), with the protocol and helpers of bench.studies.cheap_calibration (its
``Study``: the same references, the same 8-prompt calibration profile P_8, the same scoring):

1. ``default``: ``MeanCacheConfig(budget=B, learn=False)``, the calibration-free default rule;
2. ``solve(P_8)``: ``MeanCacheConfig(profile=P_8, budget=B)``;
3. ``tune latent`` / ``tune image``: ``tune_pipeline`` with the default candidates and margin (the default rule is a
   candidate and is kept unless beaten by more than 1 standard error of the paired per-prompt log-error
   differences) on bench.frontier's 8 tuning prompts (noise seeds 200..), profile P_8, ``metric="latent"`` /
   ``metric="image"``;
4. ``lowest latent`` / ``lowest image``: the lowest-error candidate of the same tuning run (margin 0), shown only
   where the margin rule kept the default instead (then it differs from 3.), rebuilt by name from the candidates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .. import frontier as F
from .cheap_calibration import LABELS, Study, _git, _paired

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "tune_metric"
METRICS = ("latent", "image")
TARGET_DB = -0.5  # the target: tuned >= default - 0.5 dB


def tune(study: Study, profile, budget: int, metric: str):
    """``tune_pipeline`` on the study's tuning prompts with ``metric``: the schedule, its setup cost in calls and the
    row's extra fields (as ``Study.tune``, plus the metric and the lowest candidate's name)."""
    from meancache_kernels.diffusers import tune_pipeline

    t0 = time.perf_counter()
    s = tune_pipeline(study.pipe, study.tune_p, profile=profile, budget=budget, num_inference_steps=study.n,
                      seed=F.TUNE_SEED, metric=metric, progress=False, **study.kw)
    m = s.meta["tune"]
    how = m.get("default") or {}
    extra = dict(metric=m["metric"], pick=m["best"], lowest=m["lowest"], candidates=len(m["candidates"]),
                 tune_secs=time.perf_counter() - t0, kept_default=bool(how.get("kept")) if how else None,
                 advantage_db=how.get("advantage_db"), se_db=how.get("se_db"))
    return s, int(m["model_calls"]), extra


def run_model(key: str, n: int, budgets, n_eval: int, n_tune: int, n_cal: int, log) -> dict:
    from meancache_kernels.diffusers import MeanCacheConfig
    from meancache_kernels.tuning import candidate_schedules

    st = Study(key, n, budgets, n_eval, n_tune, n_cal, 1, [n_cal], [n_tune], draws=False, log=log)
    st.generate()  # warm-up
    st.ref, _ = st.generate()
    log(f"{LABELS[key]}: N = {n}, {len(st.eval_p)} evaluation prompts, references done")
    profile = st.calibrate(n_cal, 0)
    for b in st.budgets:
        st.add(b, "default", "default (no calibration)", MeanCacheConfig(budget=b, learn=False), 0)
        st.add(b, "profile", f"solve(P_{n_cal})", MeanCacheConfig(profile=profile, budget=b), n * n_cal)
        cands = None
        for metric in METRICS:
            sched, cost, extra = tune(st, profile, b, metric)
            st.add(b, "tune", f"tune {metric}", MeanCacheConfig(schedule=sched), n * n_cal + cost, extra)
            if extra["lowest"] != extra["pick"]:  # the margin rule kept the default: how the lowest would do
                cands = cands or candidate_schedules(profile, b)
                st.add(b, "lowest", f"lowest {metric}", MeanCacheConfig(schedule=cands[extra["lowest"]]),
                       n * n_cal + cost, dict(metric=metric, pick=extra["lowest"]))
    return dict(model=key, label=LABELS[key], n=n, budgets=st.budgets, eval_prompts=st.eval_p,
                tuning_prompts=st.tune_p, calibration_prompts=st.cal_set, calibration_seed=F.CAL_SEED,
                tuning_seed=F.TUNE_SEED, profile_k=n_cal,
                calibration_secs={f"{k}@{s}": v for (k, s), v in st.cal_secs.items()}, rows=st.rows)


# ------------------------------------------------------------------------------------------------ report
def _setting_rows(st: dict, b: int):
    rb = [r for r in st["rows"] if r["budget"] == b and r["status"] == "ok"]
    base = next((r for r in rb if r["kind"] == "default"), None)
    return rb, base


def _summary(data: dict) -> list[str]:
    """One line per setting: Δ default of each tuned row and whether it meets the target."""
    lines = ["## Headline: tuned against the free default", "",
             f"Δ default = mean over the evaluation prompts of the per-prompt PSNR difference to "
             f"`MeanCacheConfig(budget=B)` ± its standard error (paired, dB); target: Δ >= {TARGET_DB} dB. "
             "`kept` = the margin rule kept the default rule.", "",
             "| model | B | default mean / worst | solve(P_k) Δ | tune latent Δ | pick (latent) | tune image Δ | "
             "pick (image) | image meets target |", "|---|---|---|---|---|---|---|---|---|"]
    for st in data["studies"]:
        for b in st["budgets"]:
            rb, base = _setting_rows(st, b)
            if base is None:
                continue
            cell = {}
            for r in rb:
                if r is base or r["kind"] == "lowest":
                    continue
                d, se = _paired(r, base)
                key = r["kind"] if r["kind"] != "tune" else f"tune {r['metric']}"
                cell[key] = (d, se, r)

            def fmt(k):
                return f"{cell[k][0]:+.2f} ± {cell[k][1]:.2f}" if k in cell else ""

            def pick(k):
                if k not in cell:
                    return ""
                r = cell[k][2]
                return r["pick"] + (" (kept)" if r.get("kept_default") else "")

            meets = ""
            if "tune image" in cell:
                meets = "yes" if cell["tune image"][0] >= TARGET_DB else "NO"
            short = "shipped" if st["model"] == "shipped" else "second"
            lines.append(f"| {short} | {b} | {base['psnr_mean']:.2f} / {base['psnr_min']:.2f} | {fmt('profile')} | "
                         f"{fmt('tune latent')} | {pick('tune latent')} | {fmt('tune image')} | "
                         f"{pick('tune image')} | {meets} |")
    return lines + [""]


def _versus(data: dict) -> list[str]:
    """``tune image`` against ``tune latent`` and against ``solve(P_k)``: paired mean PSNR difference ± s.e."""
    lines = ["Paired differences of `tune image` to the other upgrades (mean per-prompt PSNR difference ± s.e., "
             "dB) and tuning wall time on this machine (shared CPU, indicative):", "",
             "| model | B | image - latent | image - solve(P_k) | tuning wall latent / image [s] |",
             "|---|---|---|---|---|"]
    for st in data["studies"]:
        for b in st["budgets"]:
            rb = {r["label"]: r for r in st["rows"] if r["budget"] == b and r["status"] == "ok"}
            img, lat = rb.get("tune image"), rb.get("tune latent")
            prof = next((r for r in rb.values() if r["kind"] == "profile"), None)
            if img is None:
                continue
            cells = [f"{d:+.2f} ± {se:.2f}" for d, se in (_paired(img, o) for o in (lat, prof) if o is not None)]
            wall = f"{lat['tune_secs']:.0f} / {img['tune_secs']:.0f}" if lat is not None else ""
            short = "shipped" if st["model"] == "shipped" else "second"
            lines.append(f"| {short} | {b} | " + " | ".join(cells) + f" | {wall} |")
    return lines + [""]


def report(data: dict) -> str:
    lines = [
        "# Tuning metric: final latents or decoded images", "",
        f"`{data['command']}`, machine {data['machine']}, {data['date']}, git {data['git']}, {data['seconds']:.0f} s.",
        "",
        "Protocol (bench/studies/tune_metric.py's docstring): bench.frontier's three disjoint prompt sets; 8 "
        "evaluation prompts (noise seeds 0..7) batched; PSNR [dB] of the decoded images against the uncached "
        "N-step output, mean over prompts and worst prompt. `solve(P_8)`: `MeanCacheConfig(profile=P_8, budget=B)`, "
        "P_8 from `calibrate_pipeline(max_span=6, max_skip=12)` on the 8 calibration prompts (noise seeds 100..107),"
        " as bench.studies.cheap_calibration. `tune <metric>`: `tune_pipeline(metric=...)`, default candidates and "
        "margin (1 s.e.), 8 tuning prompts (noise seeds 200..207), profile P_8. `lowest <metric>`: the "
        "lowest-error candidate of that tuning run, shown where the margin rule kept the default instead. "
        "`advantage`: the lowest candidate's tuning-set advantage over the default rule by the tuning metric "
        "(mean log-error difference in dB ± s.e.), what the margin rule weighed.", ""]
    lines += _summary(data)
    lines += _versus(data)
    for st in data["studies"]:
        lines += [f"## {st['label']}, N = {st['n']}", ""]
        for b in st["budgets"]:
            rb, base = _setting_rows(st, b)
            lines += [f"### B = {b}", "",
                      "| option | mean PSNR | worst PSNR | Δ default [dB] | pick | kept default | advantage on "
                      "tuning set [dB] | candidates | tuning wall [s] | setup calls |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in [x for x in st["rows"] if x["budget"] == b]:
                if r["status"] != "ok":
                    lines.append(f"| {r['label']} | {r['status']} | | | | | | | | |")
                    continue
                d = _paired(r, base) if base is not None and r is not base else None
                dd = f"{d[0]:+.2f} ± {d[1]:.2f}" if d else ""
                kept = "" if r["kind"] != "tune" else ("yes" if r.get("kept_default") else "no")
                adv = ""
                if r["kind"] == "tune" and r.get("advantage_db") is not None:
                    se = r.get("se_db")
                    adv = f"{r['advantage_db']:+.2f} ± {se:.2f}" if se is not None else f"{r['advantage_db']:+.2f}"
                secs = f"{r['tune_secs']:.0f}" if r.get("tune_secs") is not None else ""
                lines.append(f"| {r['label']} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} | {dd} | "
                             f"{r.get('pick', '')} | {kept} | {adv} | {r.get('candidates', '')} | {secs} | "
                             f"{r['cost_calls']} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="shipped model, N = 8, B = 5 / 3, 2 prompts per set")
    ap.add_argument("--models", default=None, help="comma list of shipped, seed1 (default: both; smoke: shipped)")
    ap.add_argument("--budgets", default=None, help="comma list (default 25,17,10)")
    ap.add_argument("--report", default=None, metavar="JSON", help="only the report, from an earlier run's JSON")
    ap.add_argument("--out", default=str(OUT), help="output stem (.json, .md)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, the shared 2-core machine)")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.smoke:
        n, budgets, n_eval, n_tune, n_cal, models = F.SMOKE_N, F.SMOKE_BUDGETS, 2, 2, 2, "shipped"
    else:
        n, budgets, n_eval, n_tune, n_cal, models = F.N, F.BUDGETS, 8, 8, 8, "shipped,seed1"
    if args.budgets:
        budgets = tuple(int(x) for x in args.budgets.split(","))
    models = args.models or models

    def log(s):
        print(s, flush=True)

    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    data = dict(command=f"python -m bench.studies.tune_metric {args_text}".strip(),
                machine=f"cpu-2c, 2 cores shared ({os.cpu_count()} visible), torch {torch.__version__}, "
                        f"{args.threads} torch thread(s)",
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git=_git(), seconds=0.0, studies=[])
    text = ""
    for key in models.split(","):
        data["studies"].append(run_model(key.strip(), n, budgets, n_eval, n_tune, n_cal, log))
        data["seconds"] = time.perf_counter() - t0
        text = report(data)
        if not args.smoke:  # written after every model: a stopped run keeps the models it finished
            Path(args.out + ".json").write_text(json.dumps(data, indent=1) + "\n")
            Path(args.out + ".md").write_text(text)
    print(text)
    return 0 if all(math.isfinite(r.get("psnr_mean", 0.0)) for st in data["studies"] for r in st["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
