"""Cheap calibration (issue 15 item 4): how few calibration and tuning prompts does MeanCache's upgrade path need,
and does it beat the calibration-free default at all?

    python -m bench.studies.cheap_calibration            # -> bench/results/cheap_calibration.{json,md}
    python -m bench.studies.cheap_calibration --smoke    # N = 8, B = 5 / 3, tiny sets (< 1 min; writes nothing)
    python -m bench.studies.cheap_calibration --report bench/results/cheap_calibration.json   # the report again
    python -m bench.studies.cheap_calibration --diagnose   # + tuning's latent error vs image PSNR (~1 min)

(``--models shipped,seed1``, then ``--diagnose``, is the published run: 33 + 1 min on the shared 2-core
machine, one torch thread.)

For every model (the shipped tiny FluxPipeline; ``--models shipped,seed1`` adds bench/tiny_flux_seed1) at N = 50 and
every budget B (25 / 17 / 10), on bench.frontier's 8 EVALUATION prompts (noise seeds 0..7), judged by the PSNR of
the decoded images against the uncached N-step output (mean and worst prompt):

1. ``default``: ``MeanCacheConfig(budget=B, learn=False)``, the calibration-free default rule (zero cost);
2. ``profile k``: ``MeanCacheConfig(profile=P_k, budget=B)`` (PSSP, ``solve(P_k, B)``), P_k calibrated with
   ``calibrate_pipeline`` (max_span 6, max_skip 12, as bench.frontier) on the first k generations of one
   calibration set: bench.frontier's 8 calibration prompts repeated 4 times, generation j = prompt j mod 8 with
   noise seed 100 + j (the recipe of the shipped profile and of bench.frontier's in-run profiles). k <= 8 are k
   distinct prompts; k = 32 is the 8 prompts with 4 noise seeds each. Unless ``--no-draws``, the k = 1, 2, 4 rows
   are also repeated on the other disjoint slices of the first 8 generations (8 / 4 / 2 draws) to show the spread;
   the headline row is the first slice;
3. ``tune T``: ``tune_pipeline`` (default candidates, default margin rule: the calibration-free default rule is a
   candidate and is kept unless beaten by more than 1 standard error) on the first T of bench.frontier's tuning
   prompts (noise seeds 200..), with the 8-prompt profile P_8; unless ``--no-draws``, also on the other disjoint slices
   of the 8 tuning prompts. ``cal 1 + tune T``: the same with the 1-prompt profile P_1.

Every MeanCache row records its computed steps per generation (``get_mean_cache_stats``; all 204 rows: B).
Costs are counted in transformer calls per the library's own accounting (calibration: N per generation; tuning:
``meta["tune"]["model_calls"]``, N per tuning prompt for the references plus B per candidate per prompt) and
translated to a 50-step FLUX.1-dev run at 1024x1024 with the assumption :data:`SEC_PER_FORWARD` (see the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import frontier as F

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "cheap_calibration"
MODELS = {"shipped": None, "seed1": str(ROOT / "bench" / "tiny_flux_seed1")}
LABELS = {"shipped": "shipped tiny FluxPipeline", "seed1": "bench/tiny_flux_seed1 (second model)"}
CAL_KS = (1, 2, 4, 8, 32)
TUNE_TS = (1, 2, 4, 8)
CAL_REPEATS = 4  # the calibration set: the 8 calibration prompts x 4 noise seeds = 32 generations
# Assumed seconds per FLUX.1-dev transformer forward, 1024x1024, bf16, one H100, diffusers without compilation: an
# upper bound from a third-party end-to-end measurement (text encoders and VAE included) of 7.11 s for 28 steps,
# github.com/varadrane1707/BenchmarkFlux README, "H100 GPU Performance (1024x1024, 28 steps)", BF16 row. Not
# measured here (no GPU was lent to this session).
SEC_PER_FORWARD = 7.11 / 28


def _git() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (uncommitted changes in the working tree)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Study:
    def __init__(self, model_key: str, n: int, budgets, n_eval: int, n_tune: int, n_cal: int, repeats: int,
                 cal_ks, tune_ts, draws: bool, log):
        from meancache_kernels.diffusers.loading import load_pipeline

        self.key, self.n, self.budgets = model_key, n, list(budgets)
        self.cal_ks, self.tune_ts, self.draws, self.log = list(cal_ks), list(tune_ts), draws, log
        self.pipe, self.kw = load_pipeline(MODELS[model_key])
        self.pipe.set_progress_bar_config(disable=True)
        self.eval_p = F.eval_prompts(n_eval)
        self.tune_p = F.tuning_prompts(n_tune)
        self.cal_set = F.calibration_prompts(n_cal) * repeats  # generation j: prompt j mod n_cal, seed CAL_SEED + j
        self.n_distinct = n_cal
        self.profiles: dict[tuple[int, int], object] = {}  # (k, start) -> Profile
        self.cal_secs: dict[tuple[int, int], float] = {}
        self.rows: list[dict] = []

    # -------------------------------------------------------------- generation
    def generate(self, config=None):
        """Decoded evaluation images (float64 [S, H, W, C]) and the transformer calls per generation (None: full)."""
        from meancache_kernels.diffusers import apply_mean_cache, get_mean_cache_stats, remove_mean_cache

        gens = [torch.Generator().manual_seed(k) for k in range(len(self.eval_p))]
        calls = None
        if config is not None:
            apply_mean_cache(self.pipe, config)
        try:
            out = self.pipe(self.eval_p, num_inference_steps=self.n, generator=gens, output_type="np",
                            **self.kw).images
            if config is not None:
                st = get_mean_cache_stats(self.pipe)
                calls = st.steps_computed  # per generation (the prompts are batched: one call per step)
        finally:
            if config is not None:
                remove_mean_cache(self.pipe)
        return np.asarray(out, np.float64), calls

    def score(self, imgs) -> list[float]:
        from meancache_kernels.metrics import psnr

        return [float(psnr(a, b)) for a, b in zip(imgs, self.ref)]

    def add(self, budget, kind, label, config, cost_calls, extra=None):
        t0 = time.perf_counter()
        try:
            imgs, calls = self.generate(config)
        except Exception as e:  # an n/a row says why
            self.rows.append(dict(model=self.key, budget=budget, kind=kind, label=label, status=f"n/a: {e}"))
            self.log(f"  B={budget:>3} {label:<28} n/a: {type(e).__name__}: {e}")
            return
        p = self.score(imgs)
        row = dict(model=self.key, budget=budget, kind=kind, label=label, status="ok", psnr=p,
                   psnr_mean=float(np.mean(p)), psnr_min=float(np.min(p)), calls=calls, cost_calls=cost_calls,
                   wall=time.perf_counter() - t0)
        row.update(extra or {})
        self.rows.append(row)
        self.log(f"  B={budget:>3} {label:<28} PSNR {row['psnr_mean']:6.2f} (worst {row['psnr_min']:6.2f}) "
                 f"calls/gen {calls}  setup cost {cost_calls} calls  {extra.get('pick', '') if extra else ''}")

    # -------------------------------------------------------------- parts
    def calibrate(self, k: int, start: int):
        from meancache_kernels.diffusers import calibrate_pipeline

        if (k, start) not in self.profiles:
            t0 = time.perf_counter()
            self.profiles[(k, start)] = calibrate_pipeline(
                self.pipe, self.cal_set[start:start + k], self.n, max_span=6, max_skip=12,
                batch_size=min(k, self.n_distinct), seed=F.CAL_SEED + start, progress=False, **self.kw)
            self.cal_secs[(k, start)] = time.perf_counter() - t0
            self.log(f"  calibrated on generations {start}..{start + k - 1} ({self.cal_secs[(k, start)]:.0f} s)")
        return self.profiles[(k, start)]

    def tune(self, profile, budget: int, prompts: list[str], seed: int):
        from meancache_kernels.diffusers import tune_pipeline

        t0 = time.perf_counter()
        s = tune_pipeline(self.pipe, prompts, profile=profile, budget=budget, num_inference_steps=self.n, seed=seed,
                          progress=False, **self.kw)
        m = s.meta["tune"]
        how = m.get("default") or {}
        extra = dict(pick=m["best"], lowest=m["lowest"], candidates=len(m["candidates"]), tune_secs=time.perf_counter()
                     - t0, kept_default=bool(how.get("kept")) if how else None,
                     advantage_db=how.get("advantage_db"), se_db=how.get("se_db"))
        return s, int(m["model_calls"]), extra

    def run(self):
        from meancache_kernels.diffusers import MeanCacheConfig

        n = self.n
        self.generate()  # warm-up
        self.ref, _ = self.generate()
        self.log(f"{LABELS[self.key]}: N = {n}, {len(self.eval_p)} evaluation prompts, references done")
        # calibration: the headline slices (first k) and, with draws, the other disjoint slices of the first 8
        slices = []
        for k in self.cal_ks:
            starts = [0]
            if self.draws and k < self.n_distinct:
                starts = list(range(0, self.n_distinct - k + 1, k))
            slices += [(k, s) for s in starts if s + k <= len(self.cal_set)]
        for k, s in slices:
            self.calibrate(k, s)
        k_tune = max(k for k in self.cal_ks if k <= self.n_distinct)  # the 8-prompt profile (or the largest <= 8)
        for b in self.budgets:
            self.add(b, "default", "default (no calibration)", MeanCacheConfig(budget=b, learn=False), 0)
            for k, s in slices:
                label = f"profile k={k}" + (f" [gens {s}..{s + k - 1}]" if s else "")
                self.add(b, "profile", label, MeanCacheConfig(profile=self.profiles[(k, s)], budget=b), n * k,
                         dict(k=k, start=s, draw=s // k))
            for t in self.tune_ts:
                starts = list(range(0, len(self.tune_p) - t + 1, t)) if self.draws else [0]
                for s in starts:
                    sched, cost, extra = self.tune(self.profiles[(k_tune, 0)], b, self.tune_p[s:s + t],
                                                   F.TUNE_SEED + s)
                    extra.update(t=t, start=s, draw=s // t, profile_k=k_tune)
                    label = f"tune T={t}" + (f" [prompts {s}..{s + t - 1}]" if s else "")
                    self.add(b, "tune", label, MeanCacheConfig(schedule=sched), n * k_tune + cost, extra)
            for t in (min(self.tune_ts), max(self.tune_ts)):  # the cheapest profile with tuning
                sched, cost, extra = self.tune(self.profiles[(1, 0)], b, self.tune_p[:t], F.TUNE_SEED)
                extra.update(t=t, start=0, draw=0, profile_k=1)
                self.add(b, "cal1+tune", f"cal 1 + tune T={t}", MeanCacheConfig(schedule=sched), n + cost, extra)
        return dict(model=self.key, label=LABELS[self.key], n=n, budgets=self.budgets, eval_prompts=self.eval_p,
                    tuning_prompts=self.tune_p, calibration_set=self.cal_set, calibration_seed=F.CAL_SEED,
                    tuning_seed=F.TUNE_SEED, profile_for_tuning=k_tune,
                    calibration_secs={f"{k}@{s}": v for (k, s), v in self.cal_secs.items()}, rows=self.rows)


# ------------------------------------------------------------------------------------------------ diagnosis
def diagnose(data: dict, log) -> list[dict]:
    """Tuning's own measure against the evaluation's, for the default rule and the ``tune T=8`` pick of every model
    and budget: the geometric-mean relative RMSE of the final latents (tuning's metric, in dB) and the mean PSNR of
    the decoded images (the evaluation's), each on the tuning prompts and on the evaluation prompts. The pick is
    rebuilt by name from the candidates of a profile recalibrated exactly as in the run (deterministic)."""
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, calibrate_pipeline, remove_mean_cache
    from meancache_kernels.diffusers.loading import load_pipeline
    from meancache_kernels.metrics import per_sample_errors, psnr
    from meancache_kernels.tuning import DEFAULT_RULE_NAME, candidate_schedules

    out = []
    for st in data["studies"]:
        pipe, kw = load_pipeline(MODELS[st["model"]])
        pipe.set_progress_bar_config(disable=True)
        n, k = st["n"], st["profile_for_tuning"]
        profile = calibrate_pipeline(pipe, st["calibration_set"][:k], n, max_span=6, max_skip=12, batch_size=k,
                                     seed=st["calibration_seed"], progress=False, **kw)
        sets = {"tuning": (st["tuning_prompts"], st["tuning_seed"]), "evaluation": (st["eval_prompts"], 0)}

        def run(prompts, seed, kind, schedule=None, pipe=pipe, kw=kw, n=n):
            gens = [torch.Generator().manual_seed(seed + j) for j in range(len(prompts))]
            if schedule is not None:
                apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
            try:
                o = pipe(prompts, num_inference_steps=n, generator=gens, output_type=kind, **kw)
            finally:
                if schedule is not None:
                    remove_mean_cache(pipe)
            return o[0].detach().float().cpu() if kind == "latent" else np.asarray(o.images, np.float64)

        refs = {name: (run(*v, "latent"), run(*v, "np")) for name, v in sets.items()}
        for b in st["budgets"]:
            pick = next((r["pick"] for r in st["rows"] if r["budget"] == b and r["kind"] == "tune"
                         and r.get("t") == max(TUNE_TS) and not r.get("draw", 0) and r["status"] == "ok"), None)
            if pick is None:
                continue
            cands = candidate_schedules(profile, b)
            for name in dict.fromkeys((DEFAULT_RULE_NAME, pick)):
                rec = dict(model=st["model"], budget=b, schedule=name)
                for set_name, (prompts, seed) in sets.items():
                    lat = run(prompts, seed, "latent", cands[name])
                    img = run(prompts, seed, "np", cands[name])
                    e = np.asarray(per_sample_errors(lat, refs[set_name][0]), np.float64)
                    rec[f"{set_name}_latent_db"] = float(20 * np.mean(np.log10(np.maximum(e, 1e-300))))
                    rec[f"{set_name}_psnr"] = float(np.mean([psnr(a, r) for a, r in zip(img, refs[set_name][1])]))
                out.append(rec)
                log(f"  diagnose {st['model']} B={b} {name}: {rec}")
    return out


def _diagnosis_lines(diag: list[dict]) -> list[str]:
    if not diag:
        return []
    lines = ["## Diagnosis: tuning's measure against the evaluation's", "",
             "For the default rule and the `tune T=8` pick: tuning's metric, the geometric-mean relative RMSE of "
             "the final latents against the uncached 50-step latents, as 20 log10 (dB, lower is better), and the "
             "evaluation's, the mean PSNR of the decoded images (dB, higher is better), each on the 8 tuning prompts "
             "and on the 8 evaluation prompts (`python -m bench.studies.cheap_calibration --diagnose`).", "",
             "| model | B | schedule | latent error, tuning prompts | latent error, eval prompts | PSNR, tuning "
             "prompts | PSNR, eval prompts |", "|---|---|---|---|---|---|---|"]
    for r in diag:
        lines.append(f"| {r['model']} | {r['budget']} | {r['schedule']} | {r['tuning_latent_db']:.2f} | "
                     f"{r['evaluation_latent_db']:.2f} | {r['tuning_psnr']:.2f} | {r['evaluation_psnr']:.2f} |")
    return lines + [""]


# ------------------------------------------------------------------------------------------------ report
def _f(x, fmt="{:.2f}"):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _paired(row, base):
    """Mean per-prompt PSNR difference to the default row, with its standard error (dB)."""
    d = np.asarray(row["psnr"]) - np.asarray(base["psnr"])
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), float(se)


def _cost_cells(calls: int) -> str:
    secs = calls * SEC_PER_FORWARD
    return f"{calls} | {secs / 60:.1f} min" if secs >= 60 else f"{calls} | {secs:.0f} s"


def _headline(data: dict) -> list[str]:
    """One table over every model and budget: mean / worst PSNR of the headline slice of each option."""
    cols, order = [], []
    for st in data["studies"]:
        short = "shipped" if st["model"] == "shipped" else "second"
        for b in st["budgets"]:
            rb = {r["label"]: r for r in st["rows"] if r["budget"] == b and not r.get("draw", 0)}
            cols.append((f"{short} B={b}", rb))
            order += [label for label in rb if label not in order]
    if not cols:
        return []
    cost = {}
    for _, rb in cols:
        for label, r in rb.items():
            if r["status"] == "ok" and r["kind"] in ("default", "profile"):
                cost.setdefault(label, r["cost_calls"])
    out = ["## Headline", "",
           "Mean / worst-prompt PSNR [dB] against the uncached 50-step output on the 8 evaluation prompts (first "
           "slice of each prompt count). Calibration cost is per model and N; tuning cost (per B) is in the "
           "per-budget tables.", "",
           "| option | calibration calls | " + " | ".join(c for c, _ in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
    for label in order:
        cells = []
        for _, rb in cols:
            r = rb.get(label)
            cells.append("" if r is None else (r["status"] if r["status"] != "ok" else
                                                f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f}"))
        out.append(f"| {label} | {cost.get(label, '')} | " + " | ".join(cells) + " |")
    return out + [""]


def report(data: dict) -> str:
    lines = [
        "# Cheap calibration: how many calibration and tuning prompts MeanCache's upgrade path needs", "",
        f"`{data['command']}`, machine {data['machine']}, {data['date']}, git {data['git']}, {data['seconds']:.0f} s.",
        "",
        "Protocol (bench/studies/cheap_calibration.py's docstring has the details): bench.frontier's three disjoint "
        "prompt sets; 8 evaluation prompts (noise seeds 0..7) batched; PSNR [dB] of the decoded images against the "
        "uncached N-step output, mean over prompts and worst prompt; `Δ default`: mean per-prompt PSNR difference "
        "to the calibration-free default row ± its standard error over the 8 prompts (paired). Every MeanCache row "
        "ran exactly B transformer calls per generation (checked from the stats). `profile k`: "
        "`MeanCacheConfig(profile=P_k, budget=B)` (PSSP), P_k from `calibrate_pipeline(max_span=6, max_skip=12)` "
        "on the first k generations of the calibration set (8 prompts x 4 noise seeds; k = 32 repeats the 8 "
        "prompts with other seeds, the shipped profile's recipe). `tune T`: `tune_pipeline` with default "
        "candidates and margin on the first T tuning prompts (noise seeds 200..) with the 8-prompt profile; "
        "`pick` is the chosen candidate ('default rule' = kept the calibration-free default). `cal 1 + tune T`: "
        "the same with the 1-prompt profile.", "",
        "Cost (setup, once per model and N, and per B for tuning): transformer calls as counted by the library "
        "(calibration: 50 per generation; tuning: 50 per tuning prompt for its references + B per candidate per "
        "prompt; the tuning rows include the 50 x 8 calls of the profile they use). For FLUX.1-dev (guidance-"
        "distilled: one transformer call per step, no CFG branch) the same counts hold; the time column assumes "
        f"{SEC_PER_FORWARD:.3f} s per 1024x1024 transformer forward on one H100 (an ASSUMPTION taken from a "
        "third-party end-to-end measurement, 7.11 s for 28 bf16 steps incl. text encoders and VAE, "
        "github.com/varadrane1707/BenchmarkFlux README; not measured here, no GPU was lent). A pipeline with "
        "true CFG (two transformer calls per step) doubles every count.", ""]
    lines += _headline(data)
    for st in data["studies"]:
        rows = st["rows"]
        lines += [f"## {st['label']}, N = {st['n']}", ""]
        secs = st.get("calibration_secs", {})
        if secs:
            lines += ["Calibration wall time on this machine (shared CPU, indicative only): " + ", ".join(
                f"k={k.split('@')[0]}: {v:.0f} s" for k, v in secs.items() if k.endswith("@0")) + ".", ""]
        for b in st["budgets"]:
            rb = [r for r in rows if r["budget"] == b]
            base = next((r for r in rb if r["kind"] == "default" and r["status"] == "ok"), None)
            lines += [f"### B = {b}", "",
                      "| option | mean PSNR | worst PSNR | Δ default [dB] | pick | setup calls (FLUX.1-dev) | "
                      "setup time, assumed H100 |", "|---|---|---|---|---|---|---|"]
            for r in rb:
                if r.get("draw", 0):
                    continue  # draws are summarised below
                if r["status"] != "ok":
                    lines.append(f"| {r['label']} | {r['status']} | | | | | |")
                    continue
                d = _paired(r, base) if base is not None and r is not base else None
                dd = f"{d[0]:+.2f} ± {d[1]:.2f}" if d else ""
                pick = r.get("pick", "") + (" (kept default)" if r.get("kept_default") and r.get("pick") != "default "
                                            "rule" else "")
                lines.append(f"| {r['label']} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} | {dd} | {pick} | "
                             f"{_cost_cells(r['cost_calls'])} |")
            lines.append("")
            spread = []
            for kind, key, name in (("profile", "k", "profile k"), ("tune", "t", "tune T")):
                for val in sorted({r[key] for r in rb if r["kind"] == kind and r["status"] == "ok"}):
                    grp = [r for r in rb if r["kind"] == kind and r.get(key) == val and r["status"] == "ok"]
                    if len(grp) < 2:
                        continue
                    means = [r["psnr_mean"] for r in grp]
                    deltas = [_paired(r, base)[0] for r in grp] if base is not None else []
                    beat = sum(x > 0 for x in deltas)
                    picks = ""
                    if kind == "tune":
                        kept = sum(r.get("pick") == "default rule" for r in grp)
                        picks = f" | {kept}/{len(grp)}"
                    spread.append(f"| {name}={val} | {len(grp)} | {np.mean(means):.2f} | {min(means):.2f} .. "
                                  f"{max(means):.2f} | {np.mean(deltas):+.2f} | {beat}/{len(grp)}{picks or ' | '} |")
            if spread:
                lines += ["Spread over disjoint slices (draws) of the prompts: mean PSNR over draws, its range, "
                          "mean Δ default, draws whose mean PSNR beats the default, and for tuning how often the "
                          "default rule was kept:", "",
                          "| option | draws | mean of mean PSNR | range | mean Δ default [dB] | beat default | "
                          "kept default |", "|---|---|---|---|---|---|---|", *spread, ""]
    lines += _diagnosis_lines(data.get("diagnosis", []))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="N = 8, B = 5 / 3, 2 evaluation prompts (< 1 min)")
    ap.add_argument("--models", default="shipped", help="comma list of shipped, seed1 (default: shipped)")
    ap.add_argument("--budgets", default=None, help="comma list (default 25,17,10)")
    ap.add_argument("--no-draws", action="store_true", help="only the first slice of each prompt count")
    ap.add_argument("--report", default=None, metavar="JSON", help="only the report, from an earlier run's JSON")
    ap.add_argument("--out", default=str(OUT), help="output stem (.json, .md)")
    ap.add_argument("--add-to", action="store_true",
                    help="keep the studies of the existing OUT.json and add this run's (commands joined)")
    ap.add_argument("--diagnose", action="store_true",
                    help="add the latent-error / PSNR diagnosis to an existing OUT.json (and rewrite OUT.md)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on the shared 2-core machine 2 threads ran up to 10x slower)")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    if args.diagnose:
        data = json.loads(Path(args.out + ".json").read_text())
        t0 = time.perf_counter()
        data["diagnosis"] = diagnose(data, lambda s: print(s, flush=True))
        data["diagnosis_seconds"] = time.perf_counter() - t0
        Path(args.out + ".json").write_text(json.dumps(data, indent=1) + "\n")
        text = report(data)
        Path(args.out + ".md").write_text(text)
        print("\n".join(_diagnosis_lines(data["diagnosis"])))
        return 0
    t0 = time.perf_counter()
    if args.smoke:
        n, budgets, n_eval, n_tune, n_cal, repeats = F.SMOKE_N, F.SMOKE_BUDGETS, 2, 2, 2, 1
        cal_ks, tune_ts = (1, 2), (1, 2)
    else:
        n, budgets, n_eval, n_tune, n_cal, repeats = F.N, F.BUDGETS, 8, 8, 8, CAL_REPEATS
        cal_ks, tune_ts = CAL_KS, TUNE_TS
    if args.budgets:
        budgets = tuple(int(x) for x in args.budgets.split(","))

    def log(s):
        print(s, flush=True)

    import meancache_kernels

    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    data = dict(command=f"python -m bench.studies.cheap_calibration {args_text}".strip(),
                machine=f"cpu-2c, 2 cores shared ({os.cpu_count()} visible), torch {torch.__version__}, "
                        f"{args.threads} torch thread(s)",
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git=_git(),
                library=getattr(meancache_kernels, "__version__", "?"), seconds=0.0,
                sec_per_forward_assumed=SEC_PER_FORWARD, studies=[])
    if args.add_to and not args.smoke and Path(args.out + ".json").is_file():
        old = json.loads(Path(args.out + ".json").read_text())
        done = {st["model"] for st in old["studies"]}
        data["studies"] = old["studies"]
        for key in ("command", "date", "git"):
            data[key] = f"{old[key]}; then {data[key]}"
        data["seconds_before"] = old.get("seconds", 0.0) + old.get("seconds_before", 0.0)
        if done & {k.strip() for k in args.models.split(",")}:
            raise SystemExit(f"{args.out}.json already holds {sorted(done)}")
    for key in args.models.split(","):
        st = Study(key.strip(), n, budgets, n_eval, n_tune, n_cal, repeats, cal_ks, tune_ts,
                   draws=not args.no_draws and not args.smoke, log=log)
        data["studies"].append(st.run())
        data["seconds"] = time.perf_counter() - t0 + data.get("seconds_before", 0.0)
        text = report(data)
        if not args.smoke:  # written after every model: a stopped run keeps the models it finished
            Path(args.out + ".json").write_text(json.dumps(data, indent=1) + "\n")
            Path(args.out + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
