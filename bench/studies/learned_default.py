"""The one line that sees the model (issue 22) on analytic flows with real models' dynamics, against every
alternative that runs on a velocity function.

    python -m bench.studies.learned_default            # -> bench/results/learned_default.{md,json} (~15 min, 2 cores)
    python -m bench.studies.learned_default --smoke    # one small flow, N = 12 (CI)

Flows (float64, exact velocity; :mod:`meancache_kernels.testing`): the four of ``REALISTIC_FLOWS`` (used to choose
the rule of :mod:`meancache_kernels.learning`: *selection*) and three more power-law / late-decision flows with other
sizes, spectra and seeds (*held out*: never looked at while choosing). Each flow's dynamics signature at N = 28 is
reported beside FLUX.1's published one. At N = 50 (B = 25, 17, 10) and N = 28 (B = 14, 9, 6), shift 3, every method
is judged on 16 evaluation latents by the final latent's error against the N-step Euler output, in dB
(-20 log10 of the relative L2 error; mean and worst latent). Methods at B model calls per sample:

- ``one line (learnt ...)``: ``MeanCache(budget=B)`` after its learning generation (N calls, once) on ONE other
  latent, done four times with four latents (each row, their mean and their worst), and once on a batch of the four
  (one generation of batch 4);
- ``one line (blind, learn=False)``: the calibration-free even rule (the one line before issue 22);
- ``paper (PSSP jvp, 8 cal)``: the paper's method, profile calibrated on 8 calibration latents (8 N calls);
- ``tuned (8 cal + 8 tune)``: ``mck.tune`` over its candidates (its extra calls are in the JSON);
- Euler / UniPC 1-3 / DPM-Solver++ 2M, 3M / Adams 1-2 with B steps, Heun with (B + 1) // 2 steps;
- ``TaylorSeer (emulated)``: diffusers' TaylorSeer schedule (warm-up w, interval k: ``methods.taylor_pick``) with its
  finite-difference Taylor prediction in the step index of the model output, orders 1 and 2;
- ``MagCache (emulated, own ratios)``: MagCache's skip rule (accumulated |1 - ratio| below a threshold, at most 8
  skips in a row, the first 10 % of the steps computed) on the flow's own magnitude ratios calibrated on the 8
  calibration latents, reusing the last output; the threshold bisected to B calls on the calibration latents.

The two caches are emulations of their rules on a velocity function (the real hooks need a transformer); the
pipeline frontier (``python -m bench.frontier``) runs the real ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import meancache_kernels as mck
from meancache_kernels.calibration import profile_from_trajectories
from meancache_kernels.dynamics import FLUX1, measure_signature
from meancache_kernels.testing import flow_sigmas, late_decision_flow, power_law_flow, realistic_flow

from ..frontier import methods as M
from ..frontier.common import RESULTS
from ..frontier.flows import drive_scheduler, heun

SELECTION = ("power-flux", "power-strong", "power-mild", "late-mixture")
HELD_OUT = {
    "held-out power 768/4000/1.4": lambda: power_law_flow(768, 4000.0, 1.4, coarse=6, modes=12, seed=3),
    "held-out power 256/1500/1.6": lambda: power_law_flow(256, 1500.0, 1.6, coarse=3, modes=5, decided=0.8, seed=5),
    "held-out late 32/16": lambda: late_decision_flow(32, 16, spread=0.8, width=0.01, seed=2),
}
SETTINGS = ((50, (25, 17, 10)), (28, (14, 9, 6)))
LEARNINGS = 4  # learning latents: the one line learns from one of them at a time, or from all four as one batch
LEARNT = "one line (learnt; mean of 4 learnings)"
LEARNT_MIN = "one line (learnt; worst of 4 learnings)"
SHIFT = 3.0


def _db(x, ref) -> torch.Tensor:
    e = (x - ref).reshape(x.shape[0], -1).norm(dim=1) / ref.reshape(ref.shape[0], -1).norm(dim=1)
    return -20 * torch.log10(e.clamp_min(1e-15))


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, z, s):
        self.calls += 1
        return self.f(z, s)


def taylor_seer(f, z, sig, budget, order):
    """TaylorSeer's schedule and prediction on a velocity function (module docstring)."""
    n = len(sig) - 1
    w, k = M.taylor_pick(n, 0.0, budget)
    hist: list[tuple[int, torch.Tensor]] = []
    for i in range(n):
        if i < w or (i - w - 1) % k == 0 or not hist:
            v = f(z, float(sig[i]))
            hist = (hist + [(i, v)])[-(order + 1):]
        else:
            (i0, v0), d = hist[-1], i - hist[-1][0]
            v = v0.clone()
            if len(hist) >= 2:
                (i1, v1) = hist[-2]
                d1 = (v0 - v1) / (i0 - i1)
                v = v + d * d1
                if order >= 2 and len(hist) >= 3:
                    (i2, v2) = hist[-3]
                    d1b = (v1 - v2) / (i1 - i2)
                    v = v + 0.5 * d * d * (d1 - d1b) / (0.5 * (i0 - i2))
        z = z + (float(sig[i + 1]) - float(sig[i])) * v
    return z


def mag_cache(f, z, sig, ratios, threshold, max_skip=8, retention=0.1):
    """MagCache's skip rule on a velocity function, reusing the last computed output (module docstring)."""
    n = len(sig) - 1
    acc_ratio, acc_err, skips, last = 1.0, 0.0, 0, None
    for i in range(n):
        skip = False
        if last is not None and i >= int(retention * n):
            acc_ratio *= ratios[i]
            acc_err += abs(1 - acc_ratio)
            skip = acc_err < threshold and skips < max_skip
        if skip:
            v, skips = last, skips + 1
        else:
            v = f(z, float(sig[i]))
            last, acc_ratio, acc_err, skips = v, 1.0, 0.0, 0
        z = z + (float(sig[i + 1]) - float(sig[i])) * v
    return z


def mag_threshold(f, z_cal, sig, ratios, budget):
    """The threshold whose call count on the calibration latents is closest to ``budget`` (bisection in log)."""
    lo, hi = math.log(1e-4), math.log(10.0)
    best = (math.inf, 1e-4)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        c = Counting(f)
        mag_cache(c, z_cal, sig, ratios, math.exp(mid))
        best = min(best, (abs(c.calls - budget), math.exp(mid)))
        if c.calls > budget:
            lo = mid
        else:
            hi = mid
    return best[1]


def run_flow(name, flow, n, budgets, n_eval, n_cal, log):
    sig = flow_sigmas(n, SHIFT)
    g = torch.Generator().manual_seed(1000)
    z_eval = torch.randn(n_eval, flow.dim, generator=g, dtype=torch.float64)
    z_cal = torch.randn(n_cal, flow.dim, generator=g, dtype=torch.float64)
    z_tune = torch.randn(n_cal, flow.dim, generator=g, dtype=torch.float64)
    z_learn = torch.randn(LEARNINGS, flow.dim, generator=g, dtype=torch.float64)
    ref = mck.sample(flow, z_eval, sig, mck.Schedule.full(n), backend="torch")
    cal = [z_cal]
    zs, vs = [z_cal], []
    mck.sample(flow, z_cal, sig, mck.Schedule.full(n), backend="torch",
               callback=lambda i, zn, v, c: (zs.append(zn), vs.append(v)))
    profile = profile_from_trajectories([(torch.stack(zs), torch.stack(vs))], sig)
    norms = torch.stack([v.reshape(v.shape[0], -1).norm(dim=1) for v in vs])
    ratios = [1.0] + (norms[1:] / norms[:-1]).mean(1).tolist()  # MagCache's calibration, on the 8 cal latents
    del cal
    rows = []
    for b in budgets:
        def add(method, fn, extra_calls=0, note=""):
            c = Counting(flow)
            t0 = time.perf_counter()
            out = fn(c)
            d = _db(out, ref)
            rows.append(dict(flow=name, N=n, B=b, method=method, calls=c.calls / 1.0, mean_db=float(d.mean()),
                             worst_db=float(d.min()), extra_calls=extra_calls, note=note,
                             seconds=time.perf_counter() - t0))
            log(f"  {name} N={n} B={b} {method:<34} calls {c.calls:>3} mean {float(d.mean()):6.2f} worst "
                f"{float(d.min()):6.2f} dB {note}")

        learnt = []
        for k in range(LEARNINGS):
            mc = mck.MeanCache(b, backend="torch")
            mc.sample(flow, z_learn[k:k + 1], sig)
            info = next(iter(mc.learned.values())).info
            add(f"one line (learnt from latent {k})", lambda c: mc.sample(c, z_eval, sig), n,
                f"{info['choice']} (share {info['early_share']:.2f})")
            learnt.append(rows[-1])
        rows.append(dict(learnt[0], method=LEARNT, mean_db=sum(r["mean_db"] for r in learnt) / LEARNINGS,
                         worst_db=sum(r["worst_db"] for r in learnt) / LEARNINGS,
                         note=", ".join(r["note"].split(" (")[0] for r in learnt)))
        rows.append(dict(learnt[0], method=LEARNT_MIN, mean_db=min(r["mean_db"] for r in learnt),
                         worst_db=min(r["worst_db"] for r in learnt), note=""))
        mc = mck.MeanCache(b, backend="torch")
        mc.sample(flow, z_learn, sig)
        info = next(iter(mc.learned.values())).info
        add(f"one line (learnt from a batch of {LEARNINGS})", lambda c: mc.sample(c, z_eval, sig), n, info["choice"])
        add("one line (blind, learn=False)", lambda c: mck.sample(c, z_eval, sig, mck.default_schedule(sig, b),
                                                                 backend="torch"))
        add("paper (PSSP jvp, 8 cal)", lambda c: mck.sample(c, z_eval, sig, mck.solve(profile, b, estimators=("jvp",)),
                                                           backend="torch"), n * n_cal)
        tuned = mck.tune(flow, z_tune, sig, profile, b, progress=False)
        add("tuned (8 cal + 8 tune)", lambda c: mck.sample(c, z_eval, sig, tuned, backend="torch"),
            n * n_cal + int(tuned.meta["tune"].get("model_calls", 0)))
        bs = flow_sigmas(b, SHIFT)
        add("Euler, B steps", lambda c: mck.sample(c, z_eval, bs, mck.Schedule.full(b), backend="torch"))
        for o in M.UNIPC_ORDERS:
            add(f"UniPC order {o}, B steps", lambda c, o=o: drive_scheduler(M.unipc(o, SHIFT), c, z_eval, bs)[0])
        for o in M.DPM_ORDERS:
            add(f"DPM-Solver++ {o}M, B steps", lambda c, o=o: drive_scheduler(M.dpm(o, SHIFT), c, z_eval, bs)[0])
        for o in M.ADAMS_ORDERS:
            add(f"Adams order {o}, B steps", lambda c, o=o: drive_scheduler(M.adams(None, o)(), c, z_eval, bs)[0])
        add("Heun, (B+1)//2 steps", lambda c: heun(c, z_eval, flow_sigmas(M.heun_steps(b), SHIFT))[0])
        for o in (1, 2):
            add(f"TaylorSeer order {o} (emulated)", lambda c, o=o: taylor_seer(c, z_eval, sig, b, o))
        thr = mag_threshold(flow, z_cal, sig, ratios, b)
        add("MagCache (emulated, own ratios)", lambda c: mag_cache(c, z_eval, sig, ratios, thr), n * n_cal,
            f"threshold {thr:.3g}")
    return rows


def signature_row(name, flow):
    z = torch.randn(8, flow.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = measure_signature(flow, z, flow_sigmas(28, SHIFT), name)
    return dict(flow=name, early5=s.early5, prod10=s.prod10, regime=s.regime,
                ratios=[round(r, 4) for r in s.ratios])


def report(result) -> str:
    lines = [f"# The one line that sees the model, on analytic flows ({result['date']}, {result['machine']})", "",
             f"Command: `{result['command']}`; {result['library']}. Error of the final latent against the N-step "
             "Euler output, in dB (higher is better), mean / worst of the evaluation latents. Shift 3.", "",
             "## Dynamics signatures at N = 28", "",
             "| flow | early5 | prod10 | regime |", "|---|---|---|---|",
             f"| FLUX.1-dev (published) | {FLUX1.early5:.2f} | {FLUX1.prod10:.2f} | {FLUX1.regime} |"]
    for s in result["signatures"]:
        lines.append(f"| {s['flow']} | {s['early5']:.2f} | {s['prod10']:.2f} | {s['regime']} |")
    rows = result["rows"]
    for flow in dict.fromkeys(r["flow"] for r in rows):
        lines += ["", f"## {flow}", ""]
        settings = list(dict.fromkeys((r["N"], r["B"]) for r in rows if r["flow"] == flow))
        lines.append("| method | " + " | ".join(f"{n}/{b}" for n, b in settings) + " |")
        lines.append("|---|" + "---|" * len(settings))
        for method in dict.fromkeys(r["method"] for r in rows if r["flow"] == flow):
            cells = []
            for n, b in settings:
                (r,) = [r for r in rows if r["flow"] == flow and r["N"] == n and r["B"] == b and r["method"] == method]
                cells.append(f"{r['mean_db']:.1f} / {r['worst_db']:.1f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("| one line's choices | " + " | ".join(
            next(r["note"] for r in rows if r["flow"] == flow and r["N"] == n and r["B"] == b
                 and r["method"] == LEARNT) for n, b in settings) + " |")
    lines += ["", "## The one line against the rest (mean dB; + = the one line ahead)", "",
              "The one line's column is the mean over its 4 single-latent learnings; 'worst latent' compares the mean "
              "over those learnings of the worst evaluation latent with the paper's worst.", "",
              "| flow | N/B | learnt | blind | paper | best alternative | learnt - paper | learnt - best alt. | "
              "worst latent: learnt - paper |", "|---|---|---|---|---|---|---|---|---|"]
    alt_methods = {r["method"] for r in rows if not r["method"].startswith("one line")} - {
        "paper (PSSP jvp, 8 cal)", "tuned (8 cal + 8 tune)"}
    for flow in dict.fromkeys(r["flow"] for r in rows):
        for n, b in dict.fromkeys((r["N"], r["B"]) for r in rows if r["flow"] == flow):
            rs = {r["method"]: r for r in rows if r["flow"] == flow and r["N"] == n and r["B"] == b}
            lo, bl, pa = rs[LEARNT], rs["one line (blind, learn=False)"], rs["paper (PSSP jvp, 8 cal)"]
            alt = max((rs[m] for m in alt_methods), key=lambda r: r["mean_db"])
            lines.append(f"| {flow} | {n}/{b} | {lo['mean_db']:.1f} | {bl['mean_db']:.1f} | {pa['mean_db']:.1f} | "
                         f"{alt['mean_db']:.1f} {alt['method']} | {lo['mean_db'] - pa['mean_db']:+.1f} | "
                         f"{lo['mean_db'] - alt['mean_db']:+.1f} | {lo['worst_db'] - pa['worst_db']:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.learned_default", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="one small flow, N = 12, B = 6 / 4 (CI)")
    ap.add_argument("--out-dir", default=None, help="default bench/results (--smoke: no files written)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.smoke:
        flows = {"smoke power": lambda: power_law_flow(64, 500.0, 1.5, seed=1)}
        settings, n_eval, n_cal = ((12, (6, 4)),), 4, 2
    else:
        flows = {name: (lambda name=name: realistic_flow(name)) for name in SELECTION}
        flows.update(HELD_OUT)
        settings, n_eval, n_cal = SETTINGS, 16, 8
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = dict(command="python -m bench.studies.learned_default" + (" --smoke" if args.smoke else ""),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"cpu-{__import__('os').cpu_count()}c, torch {torch.__version__}",
                  library=f"meancache_kernels {mck.__version__}, git {head}", signatures=[], rows=[])
    for name, make in flows.items():
        flow = make()
        result["signatures"].append(signature_row(name, flow))
        for n, budgets in settings:
            result["rows"] += run_flow(name, flow, n, budgets, n_eval, n_cal, lambda s: print(s, flush=True))
    result["seconds"] = time.perf_counter() - t0
    text = report(result)
    print(text)
    if not args.smoke or args.out_dir:
        out = Path(args.out_dir) if args.out_dir else RESULTS
        out.mkdir(parents=True, exist_ok=True)
        (out / "learned_default.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "learned_default.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
