"""Choose and check the calibration-free default schedule (meancache_kernels.default_rule).

    python -m bench.zero_config              # selection + held-out evaluation, writes bench/results/zero_config.*
    python -m bench.zero_config --smoke      # tiny version of every stage (< 1 min), writes to a temp folder

A candidate rule (meancache_kernels.default_rule.Rule) says, from N, B and the sigmas only, which steps run the
model (warm-up steps, spacing evenly in a blend of step index and sigma, optional warp, last step computed or not)
and which polynomial estimator each skipped step uses (by the length of its gap). The run has two disjoint halves:

SELECTION (chooses the constants):
  - analytic flows GaussianMixtureFlow.random with seeds 100..102 (dims 16/64/32), shifts 1, 3, 6, N = 50 and 28,
    32 latents each; quality = -20 log10(relative RMSE of the final latent vs the N-step Euler output) [dB];
  - the shipped tiny FluxPipeline on 8 SELECTION prompts (noise seeds 300..), N = 50 and 28; quality = mean PSNR of
    the decoded images vs the uncached N-step output.
  Score of a rule = min(mean dB gain over uniform taylorc2 on the flow settings, the same on the pipeline settings):
  a rule must gain on both kinds of data, not trade one for the other. Stage 1 scores every spacing with taylorc2 on
  the flows; a shortlist (the 2 best per alpha, and evenly spaced steps with warm-up / warp) is scored on the
  pipeline too; stage 2 picks the estimator (per gap length) for the chosen spacing, once over every polynomial
  estimator and once over taylor1/taylor2 only (the preference used where the corrector is not
  allowed).

EVALUATION (never used for choosing): the 8 flows of bench/results/frontier.md and frontier_flows_heldout.md (seeds 0,
1, 11..16, their 256 evaluation latents, so numbers compare with those files' rows) at N = 50, 28, 20; the shipped
model on bench/frontier's 8 evaluation prompts (seeds 0..7) and the second model bench/tiny_flux_seed1 (never
seen in selection), N = 50, 28, 20. The rule evaluated is the one this run's selection picked; the report says whether
the package's DEFAULT_RULE equals it (tests/core/test_default_schedule.py checks that the shipped DEFAULT_RULE is
the one recorded in bench/results/zero_config.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels.default_rule import DEFAULT_RULE, Rule, rule_schedule
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECOND_MODEL = ROOT / "bench" / "tiny_flux_seed1"
# alpha 0, no warp, no warm-up, last step computed, taylorc2: exactly Schedule.uniform(N, B, "taylorc2")
BASELINE = Rule()

# ---------------------------------------------------------------------------------------------------- settings
SEL_FLOWS = [dict(dim=d, components=c, shift=sh, seed=s)
             for (d, c, s) in ((16, 4, 100), (64, 6, 101), (32, 3, 102)) for sh in (1.0, 3.0, 6.0)]
SEL_FLOW_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7, 5)}
SEL_PIPE_BUDGETS = {50: (17, 10, 6), 28: (14, 7)}
EVAL_FLOWS = [  # bench/results/frontier.md's two flows and frontier_flows_heldout.md's six
    dict(dim=64, components=6, shift=3.0, seed=0, file="frontier.md"),
    dict(dim=128, components=4, shift=2.0, seed=1, file="frontier.md"),
    dict(dim=16, components=3, shift=1.0, seed=11, file="frontier_flows_heldout.md"),
    dict(dim=32, components=8, shift=1.5, seed=12, file="frontier_flows_heldout.md"),
    dict(dim=256, components=10, shift=3.0, seed=13, file="frontier_flows_heldout.md"),
    dict(dim=64, components=2, shift=6.0, seed=14, file="frontier_flows_heldout.md"),
    dict(dim=8, components=12, shift=2.0, seed=15, file="frontier_flows_heldout.md"),
    dict(dim=128, components=6, shift=4.5, seed=16, file="frontier_flows_heldout.md"),
]
EVAL_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7, 5), 20: (10, 7, 4)}
EVAL_PIPE_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7), 20: (10, 7, 4)}
FRONTIER_PIPE_FILES = {("shipped", 50): "frontier.md", ("shipped", 28): "frontier_n28.md",
                       ("seed1", 50): "frontier_tiny_flux_seed1.md", ("seed1", 28): "frontier_tiny_flux_seed1_n28.md"}

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WARPS = (0.8, 1.0, 1.25)
WARMUPS = (1, 2, 3)
LASTS = (True, False)
FULL_SINGLE = ("taylorc2", "taylorc1", "taylor1", "taylor2", "mean2")
FULL_MIXED = (("taylorc2", "taylorc1"), ("taylorc1", "taylorc2"), ("taylorc2", "taylor1"))
TAYLOR_SINGLE = ("taylor1", "taylor2")
TAYLOR_MIXED = (("taylor2", "taylor1"),)
GAPS = (1, 3)

SMOKE = dict(sel_flows=[dict(dim=8, components=3, shift=3.0, seed=100)], sel_flow_budgets={12: (6, 3)},
             sel_pipe_budgets={8: (3,)}, eval_flows=[dict(dim=8, components=12, shift=2.0, seed=15, file=None)],
             eval_budgets={12: (6, 3)}, eval_pipe_budgets={8: (3,)}, alphas=(0.0, 1.0), warps=(1.0,),
             warmups=(1,), lasts=(True,), prompts=2, full_single=("taylorc2", "taylor1"), full_mixed=(),
             taylor_single=("taylor1", "taylor2"), taylor_mixed=())


def spacing(rule: Rule) -> tuple:
    return (rule.alpha, rule.warp, rule.warmup, rule.last)


def with_spacing(sp: tuple, **est) -> Rule:
    return Rule(alpha=sp[0], warp=sp[1], warmup=sp[2], last=sp[3], **est)


def db(rel: float) -> float:
    return -20.0 * math.log10(max(rel, 1e-300))


# ---------------------------------------------------------------------------------------------------- flows
class FlowSetting:
    def __init__(self, spec: dict, n: int, n_latents: int, offset: int):
        self.spec, self.n = spec, n
        self.flow = GaussianMixtureFlow.random(spec["dim"], components=spec["components"], seed=spec["seed"])
        self.sigmas = flow_sigmas(n, shift=spec["shift"])
        self.sig_list = self.sigmas.tolist()
        g = torch.Generator().manual_seed(1000 * spec["seed"] + offset)  # bench/frontier's eval latents: offset 1
        self.z = torch.randn(n_latents, spec["dim"], generator=g, dtype=torch.float64)
        self.ref = mck.sample(self.flow, self.z, self.sigmas, mck.Schedule.full(n))

    def rel(self, schedule) -> float:
        out = mck.sample(self.flow, self.z, self.sigmas, schedule)
        return ((out - self.ref).pow(2).mean().sqrt() / self.ref.pow(2).mean().sqrt()).item()

    def label(self) -> str:
        s = self.spec
        return f"flow d{s['dim']} c{s['components']} shift {s['shift']:g} seed {s['seed']}, N={self.n}"


# ---------------------------------------------------------------------------------------------------- pipelines
def _tiny_flux_data():
    spec = importlib.util.spec_from_file_location("tiny_flux_data", ROOT / "python" / "tools" / "tiny_flux_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def eval_prompts(n: int) -> list[str]:
    """bench/frontier's evaluation prompts (seeds 0..), so the numbers compare with bench/results/frontier*.md."""
    data = _tiny_flux_data()
    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    return [data.prompt_for(colours[(k + 2) % 6], data.SHAPES[(k + 1) % 3], positions[k % 5],
                            (None, "large", "small")[k % 3]) for k in range(n)]


def selection_prompts(n: int) -> list[str]:
    """Prompts disjoint from the evaluation prompts (and, with seeds 300.., from every seed bench/frontier uses)."""
    data = _tiny_flux_data()
    taken = set(eval_prompts(64))
    specs = data.all_prompt_specs()
    out = []
    for k in range(len(specs)):
        p = data.prompt_for(*specs[k * 53 % len(specs)])  # 53 is coprime with the 270 specs
        if p not in taken and p not in out:
            out.append(p)
        if len(out) == n:
            break
    return out


_LOADED: dict = {}


class PipeBench:
    def __init__(self, model, name: str, prompts: list[str], seed0: int):
        from meancache_kernels.diffusers.loading import load_pipeline

        self.name, self.prompts, self.seed0 = name, prompts, seed0
        key = str(model)
        if key not in _LOADED:  # one load per model and run (selection and evaluation share it)
            _LOADED[key] = load_pipeline(model)
            _LOADED[key][0].set_progress_bar_config(disable=True)
        self.pipe, self.kw = _LOADED[key]
        self.refs: dict[int, tuple[np.ndarray, list[float]]] = {}

    def generate(self, n: int) -> np.ndarray:
        gens = [torch.Generator().manual_seed(self.seed0 + k) for k in range(len(self.prompts))]
        out = self.pipe(self.prompts, num_inference_steps=n, generator=gens, output_type="np", **self.kw).images
        return np.asarray(out, np.float64)

    def reference(self, n: int):
        if n not in self.refs:
            imgs = self.generate(n)
            sig = self.pipe.scheduler.sigmas.detach().cpu().double().tolist()  # the generation's N + 1 sigmas
            if len(sig) != n + 1:
                raise RuntimeError(f"{self.name}: expected {n + 1} sigmas after a {n}-step call, got {len(sig)}")
            self.refs[n] = (imgs, sig)
        return self.refs[n]

    def psnrs(self, n: int, schedule) -> list[float]:
        from meancache_kernels.diffusers import (
            MeanCacheConfig,
            apply_mean_cache,
            get_mean_cache_stats,
            remove_mean_cache,
        )
        from meancache_kernels.metrics import psnr

        ref, _ = self.reference(n)
        apply_mean_cache(self.pipe, MeanCacheConfig(schedule=schedule))
        try:
            imgs = self.generate(n)
            calls = get_mean_cache_stats(self.pipe).steps_computed
        finally:
            remove_mean_cache(self.pipe)
        if calls != schedule.budget:
            raise RuntimeError(f"{self.name}: {calls} transformer calls for a schedule of budget {schedule.budget}")
        return [psnr(a, b) for a, b in zip(imgs, ref)]


# ---------------------------------------------------------------------------------------------------- frontier files
def _md_rows(lines: list[str], start: int) -> list[list[str]]:
    rows = []
    for line in lines[start:]:
        if line.startswith("### "):
            break
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def frontier_path(file: str) -> Path | None:
    """bench/results/<file> (or bench/<file>, where the frontier files lived before)."""
    for path in (RESULTS / file, ROOT / "bench" / file):
        if path.is_file():
            return path
    return None


def frontier_rows(file: str, section: str) -> dict[int, dict]:
    """{B: {"alt": (method, value, worst), "tuned": (value, worst), "uniform_taylorc2": (value, worst)}} from the
    "All rows" table of ``section`` in bench/<file>: "alt" is the best non-MeanCache method whose counted cost is
    within 10 % of B (no ``*``). Pipelines: PSNR (higher is better) and worst prompt; flows: rel. RMSE (lower)."""
    path = frontier_path(file)
    if path is None:
        return {}
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == f"### {section}")
        allrows = next(i for i in range(start, len(lines)) if lines[i].startswith("All rows"))
    except StopIteration:
        return {}
    flow = section.startswith("Gaussian")
    out: dict[int, dict] = {}
    for r in _md_rows(lines, allrows + 1):
        if not r[0].isdigit():
            continue
        b, family, method = int(r[0]), r[1], r[2]
        val, worst = (float(r[4]), None) if flow else (float(r[5]), float(r[6]))
        d = out.setdefault(b, {})
        if family != "MeanCache" and "*" not in method:
            best = d.get("alt")
            if best is None or (val < best[1] if flow else val > best[1]):
                d["alt"] = (method, val, worst)
        elif method == "MeanCache tuned (recommended)":
            d["tuned"] = (val, worst)
        elif method == "MeanCache uniform taylorc2":
            d["uniform_taylorc2"] = (val, worst)
    return out


def flow_section(spec: dict) -> str:
    return (f"Gaussian-mixture flow: dim {spec['dim']}, {spec['components']} components, shift {spec['shift']:g}, "
            f"seed {spec['seed']}")


# ---------------------------------------------------------------------------------------------------- selection
def score_rules(rules, flows, pipes, log) -> dict[Rule, dict]:
    """Per rule: per-setting dB on the flows and mean PSNR on the pipeline settings."""
    out = {}
    for rule in rules:
        f = [db(fs.rel(rule_schedule(fs.sig_list, b, rule))) for fs in flows for b in fs.budgets]
        p = []
        for pb, n, b in pipes:
            p.append(float(np.mean(pb.psnrs(n, rule_schedule(pb.reference(n)[1], b, rule)))))
        out[rule] = dict(flows=f, pipes=p)
    return out


def gains(scores: dict[Rule, dict], base: Rule) -> dict[Rule, dict]:
    b = scores[base]
    out = {}
    for rule, s in scores.items():
        fg = [x - y for x, y in zip(s["flows"], b["flows"])]
        pg = [x - y for x, y in zip(s["pipes"], b["pipes"])]
        mf = float(np.mean(fg)) if fg else 0.0
        mp = float(np.mean(pg)) if pg else 0.0
        # maximin over the two kinds of data: a rule must gain on both, not trade one for the other
        out[rule] = dict(flow_gain=mf, pipe_gain=mp, score=min(mf, mp) if pg else mf,
                         flow_min=float(min(fg)) if fg else 0.0, pipe_min=float(min(pg)) if pg else 0.0)
    return out


def select(cfg, log) -> dict:
    t0 = time.perf_counter()
    flows = []
    for spec in cfg["sel_flows"]:
        for n, budgets in cfg["sel_flow_budgets"].items():
            fs = FlowSetting(spec, n, 32, offset=7)
            fs.budgets = budgets
            flows.append(fs)
    log(f"selection: {len(flows)} flow grids ({sum(len(f.budgets) for f in flows)} settings)")
    grid = [Rule(alpha=a, warp=w, warmup=wu, last=la)
            for a, w, wu, la in itertools.product(cfg["alphas"], cfg["warps"], cfg["warmups"], cfg["lasts"])]
    if BASELINE not in grid:
        grid.insert(0, BASELINE)
    s1 = score_rules(grid, flows, [], log)
    g1 = gains(s1, BASELINE)
    ranked = sorted(grid, key=lambda r: -g1[r]["score"])
    log(f"  stage 1 (flows, {len(grid)} spacings, taylorc2): best {ranked[0].name} +{g1[ranked[0]]['score']:.2f} dB "
        f"({time.perf_counter() - t0:.0f} s)")
    shortlist = [BASELINE]
    for a in cfg["alphas"]:  # the 2 best spacings per alpha (flows), and step-even ones with warm-up / warp
        shortlist += [r for r in ranked if r.alpha == a][:2]
    shortlist += [Rule(warmup=w, warp=wp) for w in cfg["warmups"] for wp in cfg["warps"] if wp >= 1.0]
    shortlist = list(dict.fromkeys(shortlist))
    pb = PipeBench(None, "shipped", selection_prompts(cfg["prompts"]), seed0=300)
    pipes = [(pb, n, b) for n, budgets in cfg["sel_pipe_budgets"].items() for b in budgets]
    log(f"  stage 1b: {len(shortlist)} spacings on the shipped model ({len(pipes)} settings, "
        f"{len(pb.prompts)} selection prompts)")
    s1b = score_rules(shortlist, flows, pipes, log)
    g1b = gains(s1b, BASELINE)
    for r in shortlist:
        log(f"    {r.name:<40} flows {g1b[r]['flow_gain']:+6.2f}  pipeline {g1b[r]['pipe_gain']:+6.2f} dB")
    chosen = max(shortlist, key=lambda r: (g1b[r]["score"], -shortlist.index(r)))
    sp = spacing(chosen)
    log(f"  spacing chosen: {chosen.name} score +{g1b[chosen]['score']:.2f} dB ({time.perf_counter() - t0:.0f} s)")

    def options(single, mixed):
        opts = [with_spacing(sp, short=(e,)) for e in single]
        opts += [with_spacing(sp, short=(a,), long=(b,), long_gap=g) for a, b in mixed for g in GAPS]
        return opts

    full_opts = options(cfg["full_single"], cfg["full_mixed"])
    taylor_opts = options(cfg["taylor_single"], cfg["taylor_mixed"])
    allr = list(dict.fromkeys([BASELINE, *full_opts, *taylor_opts]))
    s2 = score_rules(allr, flows, pipes, log)
    g2 = gains(s2, BASELINE)
    for r in allr:
        log(f"    {r.name:<40} flows {g2[r]['flow_gain']:+6.2f}  pipeline {g2[r]['pipe_gain']:+6.2f} dB")
    best_full = max(full_opts, key=lambda r: (g2[r]["score"], -full_opts.index(r)))
    # the taylor-only preference must share the full option's gap threshold (one long_gap per rule)
    compatible = [r for r in taylor_opts if r.long is None or best_full.long is None or
                  r.long_gap == best_full.long_gap]
    best_taylor = max(compatible, key=lambda r: (g2[r]["score"], -compatible.index(r)))
    long_full = best_full.long[0] if best_full.long else best_full.short[0]
    long_taylor = best_taylor.long[0] if best_taylor.long else best_taylor.short[0]
    mixed = best_full.long is not None or best_taylor.long is not None
    gap = best_full.long_gap if best_full.long is not None else best_taylor.long_gap
    selected = with_spacing(sp, short=(best_full.short[0], best_taylor.short[0]),
                            long=(long_full, long_taylor) if mixed else None, long_gap=gap if mixed else 1)
    log(f"  estimators: full set {best_full.name} (+{g2[best_full]['score']:.2f}), taylor-only {best_taylor.name} "
        f"(+{g2[best_taylor]['score']:.2f}); selected rule {selected} ({time.perf_counter() - t0:.0f} s)")
    return dict(flow_budgets={n: list(b) for n, b in cfg["sel_flow_budgets"].items()},
                pipe_budgets={n: list(b) for n, b in cfg["sel_pipe_budgets"].items()}, stage1=g1, stage1b=g1b,
                stage2=g2, grid=grid, shortlist=shortlist, full_opts=full_opts,
                taylor_opts=taylor_opts, chosen_spacing=chosen, best_full=best_full, best_taylor=best_taylor,
                selected=selected, flows=[f.label() + f" B={b}" for f in flows for b in f.budgets],
                pipes=[f"shipped N={n} B={b}" for _, n, b in pipes], prompts=pb.prompts,
                seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------- evaluation
def eval_methods(rule: Rule):
    """(label, schedule factory) of every method evaluated; factories take (sigmas, N, B)."""
    return [
        ("default", lambda s, n, b: rule_schedule(s, b, rule)),
        ("uniform taylorc2", lambda s, n, b: mck.Schedule.uniform(n, b, "taylorc2")),
        ("default taylor-only", lambda s, n, b: rule_schedule(s, b, rule, estimators=("taylor1", "taylor2"))),
        ("uniform taylor1", lambda s, n, b: mck.Schedule.uniform(n, b, "taylor1")),
        ("uniform taylor2", lambda s, n, b: mck.Schedule.uniform(n, b, "taylor2")),
    ]


def evaluate(cfg, rule: Rule, log) -> dict:
    t0 = time.perf_counter()
    methods = eval_methods(rule)
    flow_rows = []
    for spec in cfg["eval_flows"]:
        for n, budgets in cfg["eval_budgets"].items():
            fs = FlowSetting(spec, n, 256 if not cfg.get("smoke") else 16, offset=1)
            for b in budgets:
                row = dict(setting=fs.label(), dim=spec["dim"], components=spec["components"], shift=spec["shift"],
                           seed=spec["seed"], N=n, B=b)
                for label, make in methods:
                    sched = make(fs.sig_list, n, b)
                    row[label] = fs.rel(sched)
                    if label == "default":
                        row["default_steps"] = sched.compute_steps
                        row["default_estimators"] = sorted({e for e in sched.estimator_names() if e})
                flow_rows.append(row)
    log(f"evaluation: {len(flow_rows)} flow settings ({time.perf_counter() - t0:.0f} s)")
    pipe_rows = []
    models = [("shipped", None)] + ([("seed1", SECOND_MODEL)] if not cfg.get("smoke") else [])
    for name, model in models:
        pb = PipeBench(model, name, eval_prompts(cfg["prompts"]), seed0=0)
        for n, budgets in cfg["eval_pipe_budgets"].items():
            _, sig = pb.reference(n)
            for b in budgets:
                row = dict(model=name, N=n, B=b)
                for label, make in methods:
                    sched = make(sig, n, b)
                    p = pb.psnrs(n, sched)
                    row[label] = dict(mean=float(np.mean(p)), worst=float(np.min(p)))
                    if label == "default":
                        row["default_steps"] = sched.compute_steps
                        row["default_estimators"] = sorted({e for e in sched.estimator_names() if e})
                pipe_rows.append(row)
                log(f"  {name} N={n} B={b}: default {row['default']['mean']:.2f} / {row['default']['worst']:.2f}, "
                    f"uniform taylorc2 {row['uniform taylorc2']['mean']:.2f} / {row['uniform taylorc2']['worst']:.2f}")
    return dict(flows=flow_rows, pipes=pipe_rows, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------- report
def attach_frontier(ev: dict) -> None:
    """Add the frontier files' rows (best alternative, tuned, uniform taylorc2) to the evaluation rows, in place."""
    files = {(s["dim"], s["components"], s["shift"], s["seed"]): s["file"] for s in EVAL_FLOWS}
    for r in ev["flows"]:
        file = files.get((r["dim"], r["components"], r["shift"], r["seed"]))
        fr = frontier_rows(file, flow_section(r)) if file and r["N"] == 50 else {}
        if r["B"] in fr:
            r["frontier_file"] = str(frontier_path(file).relative_to(ROOT))
            r["frontier"] = fr[r["B"]]
    for r in ev["pipes"]:
        file = FRONTIER_PIPE_FILES.get((r["model"], r["N"]))
        section = ("Pipeline: shipped tiny FluxPipeline" if r["model"] == "shipped"
                   else "Pipeline: bench/tiny_flux_seed1")
        fr = frontier_rows(file, section) if file else {}
        if r["B"] in fr:
            r["frontier_file"] = str(frontier_path(file).relative_to(ROOT))
            r["frontier"] = fr[r["B"]]


def _f(x, fmt=".2f"):
    return "n/a" if x is None else format(x, fmt)


def report(data: dict) -> str:
    """The markdown report, from the JSON-shaped results (so ``--render-only`` can redo it from zero_config.json)."""
    meta, sel, ev = data["meta"], data["selection"], data["evaluation"]
    rule = data["selected_rule"]
    attach_frontier(ev)
    L = [f"Measured on {meta['machine']}, torch {meta['torch']}, {meta['date']}, git {meta['git']}, "
         f"`{meta['command']}` ({meta['seconds']:.0f} s)"
         + (f"; this report re-rendered from zero_config.json with `--render-only` on {meta['rendered']} (frontier "
            "columns read from bench/results/ then)." if meta.get("rendered") else "."), "",
         "# Calibration-free default schedule (`MeanCacheConfig(budget=B)` without a profile)", "",
         f"**Rule selected by this run (evaluated below as `default`)**: `{rule['name']}`: "
         + ", ".join(f"{k}={rule[k]}" for k in ("alpha", "warp", "warmup", "last", "short", "long", "long_gap"))
         + ".", "",
         f"`DEFAULT_RULE` in meancache_kernels/default_rule.py when this ran: `{meta['default_rule_at_run']}` -> "
         + ("the same." if meta["default_equals_selected"] else "different (a placeholder; the package was then set "
            "to the selected rule, which tests/core/test_default_schedule.py checks against zero_config.json)."), "",
         "Definition (meancache_kernels/default_rule.py, pure host code, no model call): given the N + 1 sigmas "
         "and B, compute steps 0..W-1 (W = warm-up), then place the other computed steps evenly in "
         "u_i = (1 - alpha) i / N + alpha (s_0 - s_i) / s_0 (alpha = 0: evenly in steps; 1: evenly in sigma) over "
         "[u_{W-1}, u_{N-1}] (last step computed) or [u_{W-1}, u_N] (last gap open), with the warp exponent, rounded "
         "to the nearest step (ties: half to even), made strictly increasing. Every skipped step of a gap uses the "
         "first allowed name of the `short` preference when the gap skips <= long_gap steps, else of `long`. With "
         "alpha = 0, warp 1, W = 1, last computed and taylorc2 it is exactly `Schedule.uniform(N, B, \"taylorc2\")` "
         "(the baseline below).", "",
         "## How it was chosen (selection data only)", "",
         *(["**SMOKE RUN**: reduced settings (plumbing check only; the numbers below mean nothing).", ""]
           if meta["command"].endswith("--smoke") else []),
         f"- flows: {len(sel['flows'])} settings: GaussianMixtureFlow.random, "
         + "; ".join(sorted({lbl.split(', N=')[0] for lbl in sel['flows']})) + "; budgets "
         f"{sel.get('flow_budgets', SEL_FLOW_BUDGETS)}, "
         "32 latents each (noise seeds 1000*seed+7); quality -20 log10(rel. RMSE vs the N-step Euler output);",
         f"- shipped tiny FluxPipeline: {len(sel['pipes'])} settings ({sel.get('pipe_budgets', SEL_PIPE_BUDGETS)}) on "
         f"{len(sel['prompts'])} selection prompts (noise seeds 300..) disjoint from the evaluation prompts: "
         + "; ".join(f"\"{p}\"" for p in sel["prompts"]) + ";",
         "- score = min(mean dB gain over the baseline (uniform taylorc2) on the flows, mean PSNR gain on the "
         "pipeline settings): the rule must gain on both kinds of data (the first criterion tried, 0.5 x flows + 0.5 "
         "x pipeline, picked evenly-in-sigma spacing (alpha = 1): +17 dB on the flows but -2.6 to -5 dB mean PSNR on "
         "the shipped model's selection prompts at N = 50, B = 17 and 10, so the flows' large gains bought pipeline "
         "losses; the criterion was changed to the maximin before any evaluation data was looked at);",
         f"- stage 1: {len(sel['stage1'])} spacings (alpha {list(ALPHAS)}, warp {list(WARPS)}, warm-up "
         f"{list(WARMUPS)}, last computed or open) with taylorc2 on the flows; stage 1b: the 2 best per "
         "alpha (flows) and evenly spaced steps with warm-up 1..3 and warp >= 1, scored on flows + pipeline, the best "
         "kept; stage 2: estimator per gap length on that spacing: "
         f"singles {list(FULL_SINGLE)}, mixes (short, long) {[list(m) for m in FULL_MIXED]} with long_gap "
         f"{list(GAPS)}; separately taylor1/taylor2 only (the preference used when the corrector is not allowed).",
         ""]
    g1, g1b, g2 = sel["stage1"], sel["stage1b"], sel["stage2"]
    L += ["Stage 1 (flows only, taylorc2), 8 best spacings and the baseline: mean / min dB gain over the baseline", "",
          "| spacing | mean gain flows | min gain flows |", "|---|---|---|"]
    base = BASELINE.name
    for r in sorted(g1, key=lambda r: -g1[r]["score"])[:8] + [base]:
        L.append(f"| {r} | {g1[r]['flow_gain']:+.2f} | {g1[r]['flow_min']:+.2f} |")
    L += ["", "Stage 1b (shortlist on flows + shipped model, selection prompts):", "",
          "| spacing | score | mean gain flows | mean gain pipeline | min gain pipeline |", "|---|---|---|---|---|"]
    for r in sorted(g1b, key=lambda r: -g1b[r]["score"]):
        L.append(f"| {r} | {g1b[r]['score']:+.2f} | {g1b[r]['flow_gain']:+.2f} | {g1b[r]['pipe_gain']:+.2f} | "
                 f"{g1b[r]['pipe_min']:+.2f} |")
    L += ["", f"Stage 2 (estimators on spacing {'-'.join(rule['name'].split('-')[:4])}):", "",
          "| rule | score | mean gain flows | mean gain pipeline | min gain pipeline |", "|---|---|---|---|---|"]
    for r in sorted(g2, key=lambda r: -g2[r]["score"]):
        L.append(f"| {r} | {g2[r]['score']:+.2f} | {g2[r]['flow_gain']:+.2f} | {g2[r]['pipe_gain']:+.2f} | "
                 f"{g2[r]['pipe_min']:+.2f} |")
    L += ["", f"Best over every polynomial estimator: `{sel['best_full']['name']}`; best over taylor1/taylor2 "
          f"only: `{sel['best_taylor']['name']}`.", ""]

    # ---- evaluation: pipelines
    L += ["## Held-out evaluation: pipelines", "",
          "PSNR [dB] of the decoded images against the uncached N-step output, mean / worst of bench/frontier's 8 "
          "evaluation prompts (seeds 0..7, batched in one call). `seed1` = bench/tiny_flux_seed1 (not used in "
          "selection at all). N = 20 was not used in selection either. `best alternative` = the best non-MeanCache "
          "method of the frontier file at that budget (solvers with B steps, caches within 10 % of B; picked on "
          "these same evaluation prompts there), `tuned` = the frontier file's `MeanCache tuned (recommended)` "
          "(calibrated + tuned, costs model calls). taylor-only = `default_schedule(..., estimators=(\"taylor1\", "
          "\"taylor2\"))` vs the better of uniform taylor1 / taylor2.", "",
          "| model | N | B | default | uniform taylorc2 | diff | taylor-only | best uniform taylor1/2 | "
          "best alternative (frontier) | tuned (frontier) | source |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ev["pipes"]:
        d, u, t = r["default"], r["uniform taylorc2"], r["default taylor-only"]
        ut = max((r["uniform taylor1"], r["uniform taylor2"]), key=lambda x: x["mean"])
        fr = r.get("frontier", {})
        alt = fr.get("alt")
        tuned = fr.get("tuned")
        L.append(f"| {r['model']} | {r['N']} | {r['B']} | {d['mean']:.2f} / {d['worst']:.2f} | {u['mean']:.2f} / "
                 f"{u['worst']:.2f} | {d['mean'] - u['mean']:+.2f} | {t['mean']:.2f} / {t['worst']:.2f} | "
                 f"{ut['mean']:.2f} / {ut['worst']:.2f} | "
                 + (f"{alt[1]:.2f} / {alt[2]:.2f} ({alt[0]})" if alt else "n/a") + " | "
                 + (f"{tuned[0]:.2f} / {tuned[1]:.2f}" if tuned else "n/a") + " | "
                 + (r.get("frontier_file", "-")) + " |")
    check = [(r, r["frontier"]["uniform_taylorc2"]) for r in ev["pipes"] if "uniform_taylorc2" in r.get("frontier", {})]
    if check:
        dev = max(abs(r["uniform taylorc2"]["mean"] - v[0]) for r, v in check)
        L += ["", f"Consistency check: this run's uniform taylorc2 matches the frontier files' `MeanCache uniform "
              f"taylorc2` rows within {dev:.2f} dB (mean PSNR) on the {len(check)} shared settings."]
    pd = [r["default"]["mean"] - r["uniform taylorc2"]["mean"] for r in ev["pipes"]]
    pw = [r["default"]["worst"] - r["uniform taylorc2"]["worst"] for r in ev["pipes"]]
    L += ["", f"Pipelines, default vs uniform taylorc2 over {len(pd)} settings: mean diff {np.mean(pd):+.2f} dB "
          f"(min {min(pd):+.2f}, max {max(pd):+.2f}); worst-prompt diff mean {np.mean(pw):+.2f} dB; default wins "
          f"{sum(x > 0 for x in pd)}, loses {sum(x < 0 for x in pd)}.", ""]

    # ---- evaluation: flows
    L += ["## Held-out evaluation: analytic flows", "",
          "Relative RMSE of the final latent against the N-step Euler output (256 latents, the frontier files' "
          "evaluation latents). `best alternative` / `tuned` from the frontier file at N = 50 "
          "(bench/results/frontier.md for seeds 0, 1; bench/results/frontier_flows_heldout.md for seeds 11..16).", "",
          "| flow | N | B | default | uniform taylorc2 | gain [dB] | taylor-only | best uniform taylor1/2 | "
          "best alternative (frontier) | tuned (frontier) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in ev["flows"]:
        fr = r.get("frontier", {})
        alt, tuned = fr.get("alt"), fr.get("tuned")
        ut = min(r["uniform taylor1"], r["uniform taylor2"])
        L.append(f"| d{r['dim']} c{r['components']} shift {r['shift']:g} seed {r['seed']} | {r['N']} | {r['B']} | "
                 f"{r['default']:.2e} | {r['uniform taylorc2']:.2e} | "
                 f"{db(r['default']) - db(r['uniform taylorc2']):+.1f} | {r['default taylor-only']:.2e} | {ut:.2e} | "
                 + (f"{alt[1]:.2e} ({alt[0]})" if alt else "n/a") + " | " + (f"{tuned[0]:.2e}" if tuned else "n/a")
                 + " |")
    fd = [db(r["default"]) - db(r["uniform taylorc2"]) for r in ev["flows"]]
    L += ["", f"Flows, default vs uniform taylorc2 over {len(fd)} settings: mean gain {np.mean(fd):+.2f} dB (min "
          f"{min(fd):+.2f}, max {max(fd):+.2f}); default wins {sum(x > 0 for x in fd)}, loses "
          f"{sum(x < 0 for x in fd)}.", ""]

    # ---- losses
    L += ["## Where it loses", ""]

    def items(rows, cond, text):
        return ", ".join(text(r) for r in rows if cond(r)) or "none"

    def pm(r, key):
        return r[key]["mean"]

    def fr(r, key):
        return r.get("frontier", {}).get(key)

    P, F = ev["pipes"], ev["flows"]
    L += ["- pipelines, > 0.25 dB below uniform taylorc2 (mean): " + items(
              P, lambda r: pm(r, "default") < pm(r, "uniform taylorc2") - 0.25,
              lambda r: f"{r['model']} N={r['N']} B={r['B']} ({pm(r, 'default') - pm(r, 'uniform taylorc2'):+.2f})"),
          "- pipelines, worst prompt > 0.25 dB below uniform taylorc2's: " + items(
              P, lambda r: r["default"]["worst"] < r["uniform taylorc2"]["worst"] - 0.25,
              lambda r: f"{r['model']} N={r['N']} B={r['B']} "
                        f"({r['default']['worst'] - r['uniform taylorc2']['worst']:+.2f})"),
          "- pipelines, below the calibrated + tuned schedule (frontier files): " + items(
              P, lambda r: fr(r, "tuned") and pm(r, "default") < fr(r, "tuned")[0],
              lambda r: f"{r['model']} N={r['N']} B={r['B']} ({pm(r, 'default'):.2f} vs {fr(r, 'tuned')[0]:.2f})"),
          "- pipelines, below the best non-MeanCache alternative (frontier files): " + items(
              P, lambda r: fr(r, "alt") and pm(r, "default") < fr(r, "alt")[1],
              lambda r: f"{r['model']} N={r['N']} B={r['B']} ({pm(r, 'default'):.2f} vs {fr(r, 'alt')[1]:.2f} "
                        f"{fr(r, 'alt')[0]})"),
          "- flows, > 0.25 dB worse than uniform taylorc2: " + items(
              F, lambda r: db(r["default"]) < db(r["uniform taylorc2"]) - 0.25,
              lambda r: f"seed {r['seed']} N={r['N']} B={r['B']} "
                        f"({db(r['default']) - db(r['uniform taylorc2']):+.1f})"),
          f"- flows, worse than the tuned schedule (frontier files, N = 50): "
          f"{sum(1 for r in F if fr(r, 'tuned') and r['default'] > fr(r, 'tuned')[0])} of "
          f"{sum(1 for r in F if fr(r, 'tuned'))} settings",
          "- flows, worse than the best non-MeanCache alternative (frontier files): " + items(
              F, lambda r: fr(r, "alt") and r["default"] > fr(r, "alt")[1],
              lambda r: f"seed {r['seed']} B={r['B']} ({r['default']:.2e} vs {fr(r, 'alt')[1]:.2e} "
                        f"{fr(r, 'alt')[0]})")]
    for other in ("uniform taylor1", "uniform taylor2"):
        dp = [pm(r, "default taylor-only") - pm(r, other) for r in P]
        dfl = [db(r["default taylor-only"]) - db(r[other]) for r in F]
        L += [f"- taylor-only variant (`estimators=(\"taylor1\", \"taylor2\")`) vs {other}: pipelines mean "
              f"{np.mean(dp):+.2f} dB (min {min(dp):+.2f}, max {max(dp):+.2f}; loses {sum(x < 0 for x in dp)} of "
              f"{len(dp)}); flows mean {np.mean(dfl):+.2f} dB (loses {sum(x < 0 for x in dfl)} of {len(dfl)})"]
    L += [""]
    return "\n".join(L) + "\n"


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Rule):
        return dict(asdict(x), name=x.name)
    if isinstance(x, dict):
        return {(k.name if isinstance(k, Rule) else str(k)): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run of every stage (< 1 min), not written to bench/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench/results; smoke: a temp one)")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite zero_config.md from the zero_config.json in the output folder")
    args = ap.parse_args(argv)
    if args.render_only:
        out = args.out or RESULTS
        data = json.loads((out / "zero_config.json").read_text())
        data["meta"]["rendered"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (out / "zero_config.md").write_text(report(data))
        print(f"wrote {out / 'zero_config.md'} from {out / 'zero_config.json'}")
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.smoke:
        cfg = dict(SMOKE, smoke=True)
    else:
        cfg = dict(sel_flows=SEL_FLOWS, sel_flow_budgets=SEL_FLOW_BUDGETS, sel_pipe_budgets=SEL_PIPE_BUDGETS,
                   eval_flows=EVAL_FLOWS, eval_budgets=EVAL_BUDGETS, eval_pipe_budgets=EVAL_PIPE_BUDGETS,
                   alphas=ALPHAS, warps=WARPS, warmups=WARMUPS, lasts=LASTS, prompts=8, full_single=FULL_SINGLE,
                   full_mixed=FULL_MIXED, taylor_single=TAYLOR_SINGLE, taylor_mixed=TAYLOR_MIXED)
    out = args.out or (Path(tempfile.mkdtemp(prefix="zero_config_smoke_")) if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    sel = select(cfg, log)
    ev = evaluate(cfg, sel["selected"], log)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    meta = dict(machine=f"{platform.machine()}-{torch.get_num_threads()}t", torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git=git,
                command="python -m bench.zero_config" + (" --smoke" if args.smoke else ""),
                seconds=time.perf_counter() - t0, default_rule_at_run=DEFAULT_RULE.name,
                default_equals_selected=DEFAULT_RULE == sel["selected"])
    data = dict(meta=meta, default_rule=DEFAULT_RULE, selected_rule=sel["selected"],
                selected_equals_default=sel["selected"] == DEFAULT_RULE,
                selection=dict(flows=sel["flows"], pipes=sel["pipes"], prompts=sel["prompts"],
                               flow_budgets=sel["flow_budgets"], pipe_budgets=sel["pipe_budgets"],
                               stage1=sel["stage1"], stage1b=sel["stage1b"], stage2=sel["stage2"],
                               best_full=sel["best_full"], best_taylor=sel["best_taylor"]),
                evaluation=ev)
    data = _json_safe(data)
    (out / "zero_config.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    (out / "zero_config.md").write_text(report(json.loads(json.dumps(data))))
    log(f"wrote {out / 'zero_config.md'} and zero_config.json; selected {sel['selected']}; DEFAULT_RULE at run "
        f"time {DEFAULT_RULE.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
