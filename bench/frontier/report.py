"""Outputs: the markdown report (NAME.md: headline tables, every row, best per budget), the plot (NAME.png: each
family's best variant at each budget) and strict JSON (no NaN / Infinity, :func:`json_safe`)."""

from __future__ import annotations

import math
from pathlib import Path

from .common import FAMILIES, TUNE_SEED, Row
from .methods import ONE_LINE


def _fmt(x, spec=".2f"):
    if x is None:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


RECOMMENDED = "MeanCache tuned (recommended)"
ZERO_CONFIG = "MeanCache default rule (zero-config)"
ADAPTIVE = "MeanCache adaptive (budget)"
PAPER = ("MeanCache PSSP jvp (paper)", "MeanCache PSSP (paper)")


def best_rows(rows, key, higher=True):
    """{budget: (best row, best MeanCache row, best non-MeanCache row, recommended row)} among unmarked, measured
    rows (the recommended row: the tuned schedule, None when the library has no tuning)."""
    out = {}
    for b in sorted({r.budget for r in rows}, reverse=True):
        ok = [r for r in rows if r.budget == b and r.status == "ok" and not r.marked]
        pick = max if higher else min

        def best(rs):
            return pick(rs, key=lambda r: r.metrics[key]) if rs else None

        out[b] = (best(ok), best([r for r in ok if r.family == "MeanCache"]),
                  best([r for r in ok if r.family != "MeanCache"]), best([r for r in ok if r.method == RECOMMENDED]))
    return out


def _versus(row, alt, key, unit, higher) -> str:
    if higher:
        return f"{row.metrics[key] - alt.metrics[key]:+.2f} {unit}"
    return f"{row.metrics[key] / alt.metrics[key]:.2g}x the error"


def headline_table(rows, key, higher, fmt) -> list[str]:
    """One line per family (its best variant per budget, unmarked rows first) and the MeanCache lines of the plot."""
    budgets = sorted({r.budget for r in rows}, reverse=True)
    lines = ["| method | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for label, want in _series_selectors().items():
        cells = []
        for b in budgets:
            rs = [r for r in rows if want(r) and r.budget == b and r.status == "ok"]
            rs = [r for r in rs if not r.marked] or rs
            if not rs:
                cells.append("")
                continue
            r = (max if higher else min)(rs, key=lambda r: r.metrics[key])
            cells.append(format(r.metrics[key], fmt) + ("*" if r.marked else ""))
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def pipeline_report(rows, meta, title) -> str:
    lines = [
        f"### {title}", "",
        f"{meta['model']}, 32x32 ({meta['tokens']} image tokens), N = {meta['num_steps']}, {len(meta['prompts'])} "
        f"evaluation prompts batched (seeds 0..{len(meta['prompts']) - 1}); {len(meta['tuning_prompts'])} tuning "
        f"prompts (seeds {TUNE_SEED}..); MeanCache profile: {meta['profile']}. Uncached N-step call "
        f"{meta['full_wall']:.2f} s. PSNR [dB] / SSIM mean and worst prompt against the uncached N-step output "
        "(headline) and against 4N Euler steps (conv"
        + (f"; the uncached N-step output itself is at {meta['full_vs_conv_psnr']:.2f} dB from it"
           if "full_vs_conv_psnr" in meta else "") + "). `*`: counted equiv misses B by more than 10 %.", "",
        "Headline: mean PSNR [dB] against the uncached N-step output, each family's best variant per budget (picked on "
        "the evaluation data; `*`: no variant of the family reaches the budget within 10 %):", "",
        *headline_table(rows, "psnr_mean", True, ".2f"), "",
        "Same against the converged reference (4N Euler steps):", "",
        *headline_table(rows, "conv_psnr_mean", True, ".2f"), "",
        "All rows:", "",
        "| B | family | method | equiv | fwd | PSNR | worst | SSIM | worst | PSNR conv | worst | SSIM conv | setting |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.budget} | {r.family} | {r.method} | | | {r.status} | | | | | | | |")
            continue
        m = r.metrics
        lines.append(
            f"| {r.budget} | {r.family} | {r.method}{'*' if r.marked else ''} | {r.equiv:.1f} | {r.forwards} | "
            f"{_fmt(m['psnr_mean'])} | {_fmt(m['psnr_min'])} | {m['ssim_mean']:.4f} | {m['ssim_min']:.4f} | "
            f"{_fmt(m['conv_psnr_mean'])} | {_fmt(m['conv_psnr_min'])} | {m['conv_ssim_mean']:.4f} | {r.setting} |")
    lines += ["", summary(rows, "psnr_mean", "dB", True), "", summary(rows, "conv_psnr_mean", "dB", True,
                                                                           label="against the converged reference")]
    return "\n".join(lines) + "\n"


def summary(rows, key, unit, higher, label="against the N-step output") -> str:
    """Best method per budget; the recommended MeanCache path and the best MeanCache variant (picked on the
    evaluation data, like the best alternative) against the best alternative."""
    parts = []
    fmt = ".2f" if higher else ".3e"
    for b, (top, mc, alt, rec) in best_rows(rows, key, higher).items():
        if top is None:
            continue
        txt = f"B={b}: **{top.method}** ({format(top.metrics[key], fmt)}{' ' + unit if unit else ''})"
        if alt is not None:
            txt += f"; best alternative {alt.method} ({format(alt.metrics[key], fmt)})"
            zero = next((r for r in rows if r.budget == b and r.method == ZERO_CONFIG and r.status == "ok"), None)
            if zero is not None:
                txt += f"; zero-config default {_versus(zero, alt, key, unit, higher)}"
            if rec is not None:
                txt += f"; recommended MeanCache (tuned) {_versus(rec, alt, key, unit, higher)}"
            if mc is not None and mc is not rec:
                txt += f"; best MeanCache variant, {mc.method}, {_versus(mc, alt, key, unit, higher)}"
        parts.append(txt)
    return f"Best per budget ({label}): " + "; ".join(parts) + "."


def flow_report(rows, meta) -> str:
    lines = [
        f"### Gaussian-mixture flow: dim {meta['dim']}, {meta['components']} components, shift {meta['shift']:g}, "
        f"seed {meta['seed']}", "",
        f"N = {meta['num_steps']}, float64; {meta['eval']} evaluation latents, profile calibrated on {meta['cal']} "
        f"other latents ({meta['calibration_s']:.1f} s), tuning on {meta['tune']} others. Relative RMSE of the final "
        f"latent against the N-step Euler output (headline) and against RK4 with 400 steps (conv; Euler-N itself is "
        f"{meta['euler_n_vs_conv']:.2e} from it, RK4-400 vs RK4-800 {meta['conv_400_vs_800']:.1e}). `calls` = "
        "velocity evaluations per sample. UniPC and DPM-Solver++ are diffusers' schedulers stepping on the exact "
        f"velocity with their sigmas set to the same flow_sigmas(B, {meta['shift']:g}) as Euler (first sigma "
        "1 - 1e-6: they take log(1 - sigma)); DPM-Solver++'s step() rounds the sample to float32 (diffusers), about "
        "1e-7 relative per step, far below the errors compared.", "",
        "Headline: relative RMSE against the N-step Euler output, each family's best variant per budget:", "",
        *headline_table(rows, "rel_rmse", False, ".2e"), "",
        "Same against the converged reference:", "",
        *headline_table(rows, "conv_rel_rmse", False, ".2e"), "",
        "All rows:", "",
        "| B | family | method | calls | rel. RMSE | rel. RMSE conv | setting |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.budget} | {r.family} | {r.method} | | {r.status} | | |")
            continue
        lines.append(f"| {r.budget} | {r.family} | {r.method}{'*' if r.marked else ''} | {r.forwards} | "
                     f"{r.metrics['rel_rmse']:.3e} | {r.metrics['conv_rel_rmse']:.3e} | {r.setting} |")
    lines += ["", summary(rows, "rel_rmse", "", False),
              "", summary(rows, "conv_rel_rmse", "", False, label="against the converged reference")]
    return "\n".join(lines) + "\n"


def _series_selectors() -> dict:
    """Each family; for MeanCache the paper's schedule, the recommended (tuned) one and the best variant apart."""
    select = {fam: (lambda r, fam=fam: r.family == fam) for fam in FAMILIES if fam != "MeanCache"}
    select["MeanCache, paper (PSSP jvp)"] = lambda r: r.method in PAPER
    select["MeanCache, one line (learnt from its first generation)"] = lambda r: r.method == ONE_LINE
    select["MeanCache, blind rule (learn=False)"] = lambda r: r.method == ZERO_CONFIG
    select["MeanCache, adaptive (budget)"] = lambda r: r.method == ADAPTIVE
    select["MeanCache, recommended (tuned)"] = lambda r: r.method == RECOMMENDED
    select["MeanCache, best variant"] = lambda r: r.family == "MeanCache"
    return select


def plot_series(rows, key, higher=True):
    """{label: [(equiv, value), ...]}: each series' best variant at each budget (for the plot)."""
    out = {}
    for label, want in _series_selectors().items():
        pts = []
        for b in sorted({r.budget for r in rows}):
            rs = [r for r in rows if want(r) and r.budget == b and r.status == "ok"]
            if rs:
                r = (max if higher else min)(rs, key=lambda r: r.metrics[key])
                pts.append((r.equiv, r.metrics[key]))
        if pts:
            out[label] = sorted(pts)
    return out


def plot(panels, path) -> None:
    """panels: [(title, rows, key, ylabel, higher)]"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), dpi=90, squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {fam: dict(color=cycle[k % len(cycle)], ls="--", lw=1.2) for k, fam in enumerate(FAMILIES[:-1])}
    style["MeanCache, paper (PSSP jvp)"] = dict(color="0.55", ls=":", lw=1.6)
    style["MeanCache, recommended (tuned)"] = dict(color="black", ls="-", lw=2.4)
    style["MeanCache, one line (learnt from its first generation)"] = dict(color="tab:red", ls="-", lw=2.4)
    style["MeanCache, blind rule (learn=False)"] = dict(color="tab:red", ls=":", lw=1.4)
    style["MeanCache, adaptive (budget)"] = dict(color="tab:orange", ls="--", lw=1.4)
    style["MeanCache, best variant"] = dict(color="0.35", ls="-.", lw=1.4)
    for ax, (title, rows, key, ylabel, higher) in zip(axes[0], panels):
        for label, pts in plot_series(rows, key, higher).items():
            ax.plot(*zip(*pts), marker="o", ms=4, label=label, **style[label])
        if not higher:
            ax.set_yscale("log")
        ax.set_xlabel("transformer work (equiv full forwards)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6.5)
    fig.suptitle("each family: its best variant at each budget (picked on the evaluation data)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x



def write_outputs(result: dict, out_dir: Path, name: str) -> str:
    """NAME.md and NAME.png from a result (as written to NAME.json); returns the markdown."""
    sections, panels = [], []
    for part in result["pipelines"]:
        rows, meta = [Row(**r) for r in part["rows"]], part["meta"]
        sections.append(pipeline_report(rows, meta, f"Pipeline: {meta['model']}"))
        label = Path(str(meta["model_dir"])).name if meta.get("model_dir") else "shipped model"
        panels += [(f"{label}: vs uncached N-step", rows, "psnr_mean", "PSNR [dB], mean over prompts", True),
                   (f"{label}: vs converged (4N Euler)", rows, "conv_psnr_mean", "PSNR [dB]", True)]
    for part in result["flows"]:
        rows, meta = [Row(**r) for r in part["rows"]], part["meta"]
        sections.append(flow_report(rows, meta))
        panels.append((f"flow dim {meta['dim']} seed {meta['seed']}: vs Euler-N", rows, "rel_rmse",
                       "relative RMSE", False))
    head = (f"Measured on {result['machine']}, {result['date']}, {result.get('library', '')}, "
            f"`{result['command']}` ({result['seconds']:.0f} s).\n\n")
    text = head + "\n".join(sections)
    (out_dir / f"{name}.md").write_text(text)
    if panels:
        plot(panels, out_dir / f"{name}.png")
    return text
