"""Measuring rules: flows and pipelines, the selection (chooses the rule) and the held-out evaluation."""

from __future__ import annotations

import importlib.util
import itertools
import time

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels.default_rule import Rule, rule_schedule
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

from .settings import BASELINE, GAPS, ROOT, SECOND_MODEL, db, spacing, with_spacing


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


