"""The markdown report of the zero-config study, with the frontier files' rows beside the rule's."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from meancache_kernels.default_rule import Rule

from .settings import (
    ALPHAS,
    BASELINE,
    EVAL_FLOWS,
    FRONTIER_PIPE_FILES,
    FULL_MIXED,
    FULL_SINGLE,
    GAPS,
    RESULTS,
    ROOT,
    SEL_FLOW_BUDGETS,
    SEL_PIPE_BUDGETS,
    WARMUPS,
    WARPS,
    db,
)


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


def json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Rule):
        return dict(asdict(x), name=x.name)
    if isinstance(x, dict):
        return {(k.name if isinstance(k, Rule) else str(k)): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


