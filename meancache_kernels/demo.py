"""``meancache demo``: MeanCache on a real diffusers pipeline, against the uncached output, in one command.

By default it runs the small text-conditioned FluxPipeline shipped in ``meancache_kernels/assets/tiny_flux`` (trained
by ``python/tools/train_tiny_flux.py`` on rendered shapes) with the calibration profile shipped beside it: for a few
prompts it generates at N steps without caching and with MeanCache at budgets B (schedules solved with PSSP from the
profile), then reports transformer calls, wall time, speedup and the image error (PSNR, SSIM, max abs difference)
against the uncached output, and writes an image grid and a plot.

Layering: this module never imports diffusers itself; loading, calibration and the cache come from
:mod:`meancache_kernels.diffusers`, imported lazily inside :func:`run_demo` (``import meancache_kernels`` stays cheap).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._assets import SHIPPED_MODEL_DIR, SHIPPED_PROFILE

__all__ = ["SHIPPED_MODEL_DIR", "SHIPPED_PROFILE", "DEFAULT_PROMPTS", "DemoRow", "psnr", "ssim", "run_demo"]

DEFAULT_PROMPTS = (
    "a red circle at the top left",
    "a large blue square in the center",
    "a small yellow triangle at the bottom right",
    "a green circle at the top right",
)
DEFAULT_BUDGETS = (25, 17, 10)


def _generators(device: str, seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed + k) for k in range(n)]


def _run(pipe, prompts, steps: int, call_kwargs: dict, seed: int, device: str, **extra) -> np.ndarray:
    out = pipe(
        list(prompts), num_inference_steps=steps, generator=_generators(device, seed, len(prompts)),
        output_type="np", **call_kwargs, **extra,
    ).images
    return np.asarray(out, dtype=np.float64)


def _timed(calls: list[int], repeats: int, fn):
    """Run ``fn`` ``repeats`` times (identical, deterministic generations); returns the last result, the minimum
    wall time and the transformer calls of one run. The minimum filters out other load on a shared machine."""
    best = math.inf
    for _ in range(repeats):
        calls[0] = 0
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best, calls[0]


# ---------------------------------------------------------------------------------------------------- metrics
def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of image ``a`` against reference ``b`` (inf when identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of two (H, W, C) images with a 7x7 uniform window (Wang et al. 2004, K1 = 0.01,
    K2 = 0.03, sample covariances), averaged over channels: scikit-image's when installed, else the same formula in
    numpy (:func:`_ssim_numpy`)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return _ssim_numpy(a, b, data_range, win)
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=win))


def _ssim_numpy(a: np.ndarray, b: np.ndarray, data_range: float, win: int) -> float:
    from numpy.lib.stride_tricks import sliding_window_view

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = win * win
    vals = []
    for ch in range(a.shape[-1]):
        x = sliding_window_view(a[..., ch], (win, win))
        y = sliding_window_view(b[..., ch], (win, win))
        mx, my = x.mean((-1, -2)), y.mean((-1, -2))
        vx = x.var((-1, -2)) * n / (n - 1)
        vy = y.var((-1, -2)) * n / (n - 1)
        cxy = ((x - mx[..., None, None]) * (y - my[..., None, None])).sum((-1, -2)) / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


# ---------------------------------------------------------------------------------------------------- demo
@dataclass
class DemoRow:
    """One line of the demo table (metrics averaged over prompts; max_abs_diff is the maximum)."""

    label: str
    budget: int
    transformer_calls: int
    wall_s: float
    speedup: float
    psnr: float
    ssim: float
    max_abs_diff: float
    schedule: list[int] = field(default_factory=list)


def _solve(profile, budget: int, gamma: float):
    from . import solve

    return solve(profile, budget, gamma=gamma)


def _count_calls(transformer):
    """Count real forwards of ``transformer``: a pre-hook on its output projection (``proj_out``), which runs once
    per forward that is not answered from a cache (a hook on the transformer itself would also fire on skipped
    calls, whose forward is replaced)."""
    calls = [0]
    target = getattr(transformer, "proj_out", None)
    if not isinstance(target, torch.nn.Module):
        target = transformer

    def hook(*_):
        calls[0] += 1

    return calls, target.register_forward_pre_hook(hook)


def _grid_png(path: Path, prompts, columns: list[tuple[str, np.ndarray]], scale: int) -> None:
    from PIL import Image, ImageDraw

    h, w = columns[0][1].shape[1:3]
    ch, cw = h * scale, w * scale
    pad, head = 4, 16
    label_w = 8 * max(len(p) for p in prompts) // 2 + 8
    canvas = Image.new("RGB", (label_w + len(columns) * (cw + pad) + pad, head + len(prompts) * (ch + pad) + pad),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (title, imgs) in enumerate(columns):
        x0 = label_w + pad + c * (cw + pad)
        draw.text((x0, 2), title, fill=(0, 0, 0))
        for r, img in enumerate(imgs):
            tile = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
            if scale != 1:
                tile = tile.resize((cw, ch), Image.NEAREST)
            canvas.paste(tile, (x0, head + pad + r * (ch + pad)))
    for r, p in enumerate(prompts):
        words, lines, cur = p.split(), [], ""
        for wd in words:  # wrap the prompt into the label column
            if len(cur) + len(wd) + 1 > label_w // 6:
                lines.append(cur)
                cur = wd
            else:
                cur = f"{cur} {wd}".strip()
        lines.append(cur)
        for k, line in enumerate(lines):
            draw.text((4, head + pad + r * (ch + pad) + 2 + 11 * k), line, fill=(0, 0, 0))
    canvas.save(path)


def _plot_png(path: Path, rows: list[DemoRow], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cached = [r for r in rows if r.label != "full"]
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=100)
    ax.plot([r.speedup for r in cached], [r.psnr for r in cached], "o-", color="tab:blue", label="MeanCache")
    for r in cached:
        ax.annotate(f"B={r.budget}", (r.speedup, r.psnr), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("measured speedup (wall time, full / cached)")
    ax.set_ylabel("PSNR vs uncached [dB]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def format_table(rows: list[DemoRow]) -> str:
    head = f"{'run':<12}{'B':>4}{'calls':>7}{'wall [s]':>10}{'speedup':>9}{'PSNR [dB]':>11}{'SSIM':>8}{'max|diff|':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        p = "inf" if math.isinf(r.psnr) else f"{r.psnr:.2f}"
        lines.append(f"{r.label:<12}{r.budget:>4}{r.transformer_calls:>7}{r.wall_s:>10.3f}{r.speedup:>9.2f}"
                     f"{p:>11}{r.ssim:>8.4f}{r.max_abs_diff:>11.4f}")
    return "\n".join(lines)


def run_demo(
    model: str | None = None,
    *,
    prompts=DEFAULT_PROMPTS,
    budgets=DEFAULT_BUDGETS,
    steps: int = 50,
    device: str = "cpu",
    out: str | os.PathLike = "meancache_out",
    seed: int = 0,
    gamma: float = 2.0,
    profile_path: str | os.PathLike | None = None,
    progress: bool = True,
    repeats: int = 3,
    log=print,
) -> list[DemoRow]:
    """Run the demo; returns the table rows (first row: the uncached run) and writes into ``out``:
    ``table.txt``, ``results.json``, ``grid.png`` and ``psnr_vs_speedup.png`` (when matplotlib is installed).

    The profile: ``profile_path`` if given, else the shipped one for the shipped model; when none is given or its
    number of steps differs from ``steps``, the pipeline is calibrated first on full-step runs with other seeds than
    the evaluated ones (the schedules are never fitted on the images they are judged on).
    """
    from tqdm.auto import tqdm

    from .calibrate import Profile

    try:
        from .diffusers import (
            MeanCacheConfig,
            apply_mean_cache,
            calibrate_pipeline,
            get_mean_cache_stats,
            remove_mean_cache,
        )
        from .diffusers.loading import load_pipeline
    except ImportError as e:
        raise ImportError(
            f"meancache demo needs diffusers and transformers: pip install 'meancache_kernels[demo]' ({e})"
        ) from e

    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    budgets = sorted({int(b) for b in budgets}, reverse=True)
    bad = [b for b in budgets if not 1 <= b <= steps]
    if not budgets or bad:
        raise ValueError(f"budget must be in 1..steps={steps}, got {bad or budgets}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    pipe, call_kwargs = load_pipeline(model, device=device)
    pipe.set_progress_bar_config(disable=True)
    name = "shipped tiny FluxPipeline" if model is None else str(model)

    profile = None
    if profile_path is not None:
        profile = Profile.load(profile_path)
    elif model is None and SHIPPED_PROFILE.is_file():
        profile = Profile.load(SHIPPED_PROFILE)
    if profile is None or profile.num_steps != steps:
        why = "no profile given" if profile is None else f"the profile has N={profile.num_steps}, not {steps}"
        log(f"calibrating on full {steps}-step runs ({why}; seeds {seed + 1000}.., not the evaluated ones)")
        profile = calibrate_pipeline(pipe, prompts, steps, max_span=6, max_skip=min(12, steps - 1),
                                     batch_size=len(prompts), seed=seed + 1000, progress=progress,
                                     meta={"model": name}, **call_kwargs)

    calls, handle = _count_calls(pipe.transformer)
    bar = tqdm(total=len(budgets) + 2, desc="meancache demo", unit="run", disable=not progress)
    try:
        _run(pipe, prompts[:1], 2, call_kwargs, seed, device)  # warm-up (first-call overheads)
        bar.update(1)
        ref, t_full, n_calls = _timed(calls, repeats, lambda: _run(pipe, prompts, steps, call_kwargs, seed, device))
        rows = [DemoRow("full", steps, n_calls, t_full, 1.0, math.inf, 1.0, 0.0, list(range(steps)))]
        columns = [(f"full N={steps}", ref)]
        bar.update(1)
        for b in budgets:
            sched = _solve(profile, b, gamma)
            apply_mean_cache(pipe, MeanCacheConfig(schedule=sched))
            try:
                imgs, dt, n_calls = _timed(
                    calls, repeats, lambda: _run(pipe, prompts, steps, call_kwargs, seed, device)
                )
                stats = get_mean_cache_stats(pipe)
            finally:
                remove_mean_cache(pipe)
            if stats.transformer_calls != n_calls:
                raise RuntimeError(f"stats report {stats.transformer_calls} transformer calls, {n_calls} were made")
            ps = [psnr(x, y) for x, y in zip(imgs, ref)]
            ss = [ssim(x, y) for x, y in zip(imgs, ref)]
            rows.append(DemoRow("MeanCache", b, n_calls, dt, t_full / dt, float(np.mean(ps)), float(np.mean(ss)),
                                float(np.abs(imgs - ref).max()), list(sched.compute_steps)))
            columns.append((f"B={b}", imgs))
            bar.update(1)
    finally:
        handle.remove()
        bar.close()

    table = format_table(rows)
    header = (f"{name}: {len(prompts)} prompts, N={steps} steps, device={device}, batch of {len(prompts)} per call; "
              f"wall time: fastest of {repeats} runs; metrics vs the uncached output, averaged over prompts (max|diff| "
              "on [0,1] pixels)")
    log(header)
    log(table)
    (out / "table.txt").write_text(header + "\n" + table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"model": name, "steps": steps, "device": device, "prompts": prompts, "seed": seed, "gamma": gamma,
         "profile": profile.meta.get("model", None) if isinstance(profile.meta, dict) else None,
         "rows": [asdict(r) for r in rows]}, indent=2, default=str) + "\n")
    scale = max(1, 128 // ref.shape[1])
    _grid_png(out / "grid.png", prompts, columns, scale)
    plotted = _plot_png(out / "psnr_vs_speedup.png", rows, f"{name}, N={steps}")
    log(f"wrote {out / 'table.txt'}, {out / 'results.json'}, {out / 'grid.png'}"
        + (f", {out / 'psnr_vs_speedup.png'}" if plotted else " (no plot: matplotlib missing)"))
    return rows
