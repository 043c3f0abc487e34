"""``meancache demo``: MeanCache on a real diffusers pipeline, against the uncached output, in one command.

By default it runs the small text-conditioned FluxPipeline shipped in ``meancache_kernels/assets/tiny_flux``
(trained by ``python/tools/train_tiny_flux.py`` on rendered shapes): for a few prompts it generates at N steps
without caching and with MeanCache at budgets B, then reports transformer calls (the primary cost), wall time,
speedup and the image error (PSNR, SSIM, max abs difference) against the uncached output, and writes an image grid
and a plot. The MeanCache rows are the one line ``MeanCacheConfig(budget=B)`` (the calibration-free default rule, no
setup); ``schedule="pssp"`` runs the paper's solver on a calibration profile instead (the shipped one for the
shipped model at N = 50, else calibrated first). With ``compare=True`` it adds the alternatives a user has at the
same number of transformer calls: UniPC with B steps and diffusers' TaylorSeer cache.

Timing on a shared machine: runs are interleaved (full, cached, full, cached, ...); each speedup is the median of the
paired ratios (each run against the full run just before it) with their min-max spread, beside the same ratio of
process CPU time, and the demo says when the spread is too wide to trust.

Layering: diffusers is imported only inside functions (and by :mod:`meancache_kernels.diffusers`, imported lazily
inside :func:`run_demo`): ``import meancache_kernels`` stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._assets import SHIPPED_MODEL_DIR, SHIPPED_PROFILE
from .metrics import _ssim_numpy, psnr, ssim  # noqa: F401  (re-exported: demo.psnr / demo.ssim)

__all__ = ["SHIPPED_MODEL_DIR", "SHIPPED_PROFILE", "DEFAULT_PROMPTS", "DEFAULT_BUDGETS", "DemoRow", "psnr", "ssim",
           "run_demo"]

DEFAULT_PROMPTS = (
    "a red circle at the top left",
    "a large blue square in the center",
    "a small yellow triangle at the bottom right",
    "a green circle at the top right",
)
DEFAULT_BUDGETS = (25, 17, 10)
SCHEDULES = ("default", "pssp")  # the MeanCache rows: MeanCacheConfig(budget=B), or solve() on a profile
# A paired-ratio spread (max - min) / median above this is too wide to trust on this machine.
SPREAD_WARN = 0.25
# UniPC order of the --compare rows: measured best of 1, 2, 3 on the shipped model at B = 17 and 10 (4 demo prompts,
# PSNR vs the uncached 50-step output; docs/guide.md, "The main job").
UNIPC_ORDER = 1
TAYLORSEER_WARMUP = 3  # TaylorSeerCacheConfig.disable_cache_before_step of the --compare rows


def _generators(device: str, seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed + k) for k in range(n)]


def _run(pipe, prompts, steps: int, call_kwargs: dict, seed: int, device: str, **extra) -> np.ndarray:
    out = pipe(
        list(prompts), num_inference_steps=steps, generator=_generators(device, seed, len(prompts)),
        output_type="np", **call_kwargs, **extra,
    ).images
    return np.asarray(out, dtype=np.float64)


def _timed(fn):
    """Run ``fn`` once; returns its result, the wall time and the process CPU time (all threads) it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------------------------------- demo
@dataclass
class DemoRow:
    """One line of the demo table (metrics averaged over prompts; max_abs_diff is the maximum).

    ``transformer_calls`` (real forwards of one run, counted inside the model) is the primary cost. ``speedup`` is
    the median over the ``repeats`` interleaved pairs of (full run wall time / this run's wall time, the full run
    made just before it), ``speedup_min``/``speedup_max`` their spread; ``cpu_speedup`` the same median for process
    CPU time. ``wall_s``/``cpu_s``: medians of this configuration's runs. ``psnr`` is ``inf`` for the full run (it is
    the reference); results.json writes it as null with a ``note``.
    """

    label: str
    budget: int
    transformer_calls: int
    wall_s: float
    speedup: float
    psnr: float
    ssim: float
    max_abs_diff: float
    schedule: list[int] = field(default_factory=list)
    speedup_min: float = 1.0
    speedup_max: float = 1.0
    cpu_s: float = 0.0
    cpu_speedup: float = 1.0
    num_steps: int = 0
    note: str = ""


@dataclass
class _Config:
    """A way to generate: ``enter()`` before the run, ``exit()`` after it, with ``steps`` scheduler steps."""

    label: str
    budget: int
    steps: int
    enter: object
    exit: object
    schedule: list[int] = field(default_factory=list)
    note: str = ""
    check_calls: object = None


def _solve(profile, budget: int, gamma: float):
    from . import solve

    return solve(profile, budget, gamma=gamma)


def _count_calls(transformer):
    """Count real forwards of ``transformer``: a pre-hook on the first block's query projection (``attn.to_q``),
    reached once per forward that really runs the model. A hook on the transformer would also fire on calls that
    MeanCache answers from its cache, and one on ``proj_out`` on the steps TaylorSeer-lite predicts. Falls back to
    ``proj_out``, then to the transformer, for models without such a block."""
    calls = [0]
    target = None
    blocks = getattr(transformer, "transformer_blocks", None)
    if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
        target = getattr(getattr(blocks[0], "attn", None), "to_q", None)
    if not isinstance(target, torch.nn.Module):
        target = getattr(transformer, "proj_out", None)
    if not isinstance(target, torch.nn.Module):
        target = transformer

    def hook(*_):
        calls[0] += 1

    return calls, target.register_forward_pre_hook(hook)


def taylorseer_interval(num_steps: int, budget: int, warmup: int = TAYLORSEER_WARMUP) -> tuple[int, int]:
    """The TaylorSeer ``cache_interval`` whose real forwards over ``num_steps`` are closest to ``budget`` (ties: the
    fewer calls), and that number of forwards. Follows diffusers' rule (hooks/taylorseer_cache.py): step s runs the
    model when ``s < warmup`` or ``(s - warmup - 1) % cache_interval == 0``; the demo counts the real forwards too."""

    def calls(k: int) -> int:
        return sum(1 for s in range(num_steps) if s < warmup or (s - warmup - 1) % k == 0)

    best = min(range(1, num_steps + 1), key=lambda k: (abs(calls(k) - budget), calls(k)))
    return best, calls(best)


def _compare_configs(pipe, budgets: list[int], steps: int) -> list[_Config]:
    """UniPC with B steps and TaylorSeer lite at about B real forwards, for every budget (diffusers imported here)."""
    from diffusers import TaylorSeerCacheConfig, UniPCMultistepScheduler

    configs = []
    original = pipe.scheduler
    for b in budgets:
        def enter_unipc():
            pipe.scheduler = UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
                time_shift_type="exponential", solver_order=UNIPC_ORDER)

        def exit_unipc():
            pipe.scheduler = original

        configs.append(_Config("UniPC", b, b, enter_unipc, exit_unipc,
                               note=f"UniPCMultistepScheduler(flow_prediction, solver_order={UNIPC_ORDER}), {b} steps"))
    for b in budgets:
        k, expected = taylorseer_interval(steps, b)
        cfg = TaylorSeerCacheConfig(cache_interval=k, disable_cache_before_step=TAYLORSEER_WARMUP, max_order=1,
                                    taylor_factors_dtype=torch.float32, use_lite_mode=True)
        configs.append(_Config(
            "TaylorSeer", b, steps, lambda cfg=cfg: pipe.transformer.enable_cache(cfg), pipe.transformer.disable_cache,
            note=f"TaylorSeer lite, cache_interval={k}, max_order=1, disable_cache_before_step={TAYLORSEER_WARMUP}: "
                 f"{expected} forwards expected"))
    return configs


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
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=100)
    styles = {"MeanCache": ("o-", "tab:blue"), "UniPC": ("s--", "tab:orange"), "TaylorSeer": ("^:", "tab:green")}
    for label, (marker, colour) in styles.items():
        pts = sorted((r.transformer_calls, r.psnr) for r in rows if r.label == label and math.isfinite(r.psnr))
        if pts:
            ax.plot(*zip(*pts), marker, color=colour, label=label)
    ax.set_xlabel("transformer calls per generation")
    ax.set_ylabel("PSNR vs uncached [dB]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def format_table(rows: list[DemoRow]) -> str:
    head = (f"{'run':<12}{'B':>4}{'calls':>7}{'ideal':>8}{'wall [s]':>10}{'speedup':>9}{'spread':>13}{'CPU x':>7}"
            f"{'PSNR [dB]':>11}{'SSIM':>8}{'max|diff|':>11}")
    lines = [head, "-" * len(head)]
    full_calls = rows[0].transformer_calls if rows else 0
    for r in rows:
        p = "ref" if math.isinf(r.psnr) else f"{r.psnr:.2f}"
        ideal = f"{full_calls / r.transformer_calls:.2f}x" if r.transformer_calls else "-"
        spread = "-" if r is rows[0] else f"{r.speedup_min:.2f}-{r.speedup_max:.2f}"
        lines.append(f"{r.label:<12}{r.budget:>4}{r.transformer_calls:>7}{ideal:>8}{r.wall_s:>10.3f}{r.speedup:>8.2f}x"
                     f"{spread:>13}{r.cpu_speedup:>6.2f}x{p:>11}{r.ssim:>8.4f}{r.max_abs_diff:>11.4f}")
    return "\n".join(lines)


def timing_warnings(rows: list[DemoRow], repeats: int) -> list[str]:
    """What the timing columns cannot be trusted for: a wide spread of the paired ratios, or a speedup above the
    ratio of transformer calls (the cached run does less model work than that ratio says only if the model is not
    the cost, never more: such a number is noise)."""
    out = []
    full_calls = rows[0].transformer_calls
    for r in rows[1:]:
        name = f"{r.label} B={r.budget}"
        if repeats > 1 and r.speedup > 0 and (r.speedup_max - r.speedup_min) / r.speedup > SPREAD_WARN:
            out.append(f"{name}: paired wall-time ratios spread {r.speedup_min:.2f}-{r.speedup_max:.2f}x around "
                       f"{r.speedup:.2f}x, too wide to trust (other load on this machine?)")
        ideal = full_calls / r.transformer_calls if r.transformer_calls else math.inf
        if r.speedup > 1.2 * ideal:
            out.append(f"{name}: measured {r.speedup:.2f}x exceeds the {ideal:.2f}x of the transformer calls: "
                       "timing noise, not a speedup")
    if out:
        out.append("trust the transformer calls (and the CPU-time ratio) over wall time; rerun on an idle machine or "
                   "with more --repeats")
    elif repeats == 1:
        out.append("one timed pair per row (--repeats 1): the spread of the speedups is unknown")
    return out


def _json_safe(rows: list[DemoRow]) -> list[dict]:
    """Rows for strict JSON: non-finite floats become null, and the row's note says why."""
    out = []
    for r in rows:
        d = asdict(r)
        for key, value in d.items():
            if isinstance(value, float) and not math.isfinite(value):
                d[key] = None
                if key == "psnr" and value == math.inf:
                    why = "psnr is null: this run is the reference (identical images, infinite PSNR)"
                else:
                    why = f"{key} is null: not finite ({value})"
                d["note"] = f"{d['note']}; {why}" if d["note"] else why
        out.append(d)
    return out


def _check_out(out: Path) -> None:
    """Fail before any work when ``out`` cannot become the output folder (it is created only when writing)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"out={str(out)!r}: {parent} is not a writable folder")


def run_demo(
    model: str | None = None,
    *,
    prompts=DEFAULT_PROMPTS,
    budgets=None,
    steps: int = 50,
    device: str = "cpu",
    out: str | os.PathLike = "meancache_out",
    seed: int = 0,
    gamma: float = 2.0,
    profile_path: str | os.PathLike | None = None,
    progress: bool = True,
    repeats: int = 3,
    compare: bool = False,
    schedule: str | None = None,
    log=print,
) -> list[DemoRow]:
    """Run the demo; returns the table rows (first row: the uncached run) and writes into ``out`` (created when the
    results are written, so a run that fails early leaves nothing): ``table.txt``, ``results.json`` (strict JSON),
    ``grid.png`` and ``psnr_vs_calls.png`` (when matplotlib is installed).

    ``budgets``: None for the defaults (25, 17, 10). ``repeats``: interleaved timed pairs (full run, then the
    configuration) per row. ``compare``: also UniPC with B steps and TaylorSeer lite at about B real forwards.

    ``schedule``: ``"default"`` (``MeanCacheConfig(budget=B)``, nothing to calibrate) or ``"pssp"`` (``solve`` on a
    profile with exponent ``gamma``); None: ``"pssp"`` when ``profile_path`` is given, else ``"default"``. The
    profile of ``"pssp"``: ``profile_path`` if given, else the shipped one for the shipped model; when none is given
    or its number of steps differs from ``steps``, the pipeline is calibrated first on full-step runs with other seeds
    than the evaluated ones (the schedules are never fitted on the images they are judged on).
    """
    from tqdm.auto import tqdm

    from .profile import Profile

    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    defaults = budgets is None
    budgets = sorted({int(b) for b in (DEFAULT_BUDGETS if defaults else budgets)}, reverse=True)
    bad = [b for b in budgets if not 1 <= b <= steps]
    if defaults and bad:
        raise ValueError(f"the default budgets {', '.join(map(str, DEFAULT_BUDGETS))} do not fit steps={steps} "
                         f"(a budget must be in 1..steps); give budgets that do (meancache demo --budget B)")
    if not budgets or bad:
        raise ValueError(f"budget must be in 1..steps={steps}, got {bad or budgets}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if schedule is None:
        schedule = "default" if profile_path is None else "pssp"
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if schedule == "default" and profile_path is not None:
        raise ValueError("profile_path is read only with schedule='pssp' (the default rule needs no profile)")
    out = Path(out)
    _check_out(out)

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

    pipe, call_kwargs = load_pipeline(model, device=device)
    pipe.set_progress_bar_config(disable=True)
    name = "shipped tiny FluxPipeline" if model is None else str(model)

    profile = None
    if schedule == "pssp":
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

    configs = []
    for b in budgets:
        config = MeanCacheConfig(budget=b) if profile is None else MeanCacheConfig(schedule=_solve(profile, b, gamma))

        def check(n_calls, b=b):
            stats = get_mean_cache_stats(pipe)
            if stats.transformer_calls != n_calls:
                raise RuntimeError(f"stats report {stats.transformer_calls} transformer calls, {n_calls} were made")
            row_steps[b] = list(stats.schedule.compute_steps)

        configs.append(_Config("MeanCache", b, steps, lambda config=config: apply_mean_cache(pipe, config),
                               lambda: remove_mean_cache(pipe), check_calls=check))
    if compare:
        configs += _compare_configs(pipe, budgets, steps)

    row_steps: dict[int, list[int]] = {}  # the computed steps of each MeanCache row, read from its stats
    learning: dict[int, int] = {}  # transformer calls of each one line's learning generation, by budget

    def generate(n_steps):
        return _run(pipe, prompts, n_steps, call_kwargs, seed, device)

    calls, handle = _count_calls(pipe.transformer)
    bar = tqdm(total=1 + repeats * len(configs), desc="meancache demo", unit="pair", disable=not progress)
    full_t, full_c, full_calls, ref = [], [], None, None
    pairs = {id(c): [] for c in configs}
    images, counted = {}, {}
    try:
        _run(pipe, prompts, 2, call_kwargs, seed, device)  # warm-up: first-call overheads at this batch size
        for c in configs:  # MeanCacheConfig(budget=B) learns in its first generation (every step computed), untimed
            if c.label == "MeanCache" and profile is None:
                c.enter()
                try:
                    calls[0] = 0
                    generate(c.steps)
                    learning[c.budget] = calls[0]
                finally:
                    c.exit()
        bar.update(1)
        for _ in range(repeats):  # interleaved: full, config, full, config, ...
            for c in configs:
                calls[0] = 0
                imgs, t_f, c_f = _timed(lambda: generate(steps))
                full_calls = calls[0]
                if ref is None:
                    ref = imgs
                full_t.append(t_f)
                full_c.append(c_f)
                c.enter()
                try:
                    calls[0] = 0
                    imgs, t, cpu = _timed(lambda c=c: generate(c.steps))
                    if c.check_calls is not None:
                        c.check_calls(calls[0])
                finally:
                    c.exit()
                if counted.setdefault(id(c), calls[0]) != calls[0]:
                    raise RuntimeError(f"{c.label} B={c.budget}: {calls[0]} transformer calls, "
                                       f"{counted[id(c)]} in an earlier identical run")
                images.setdefault(id(c), imgs)
                pairs[id(c)].append((t_f, c_f, t, cpu))
                bar.update(1)
    finally:
        handle.remove()
        bar.close()

    med = statistics.median
    rows = [DemoRow("full", steps, full_calls, med(full_t), 1.0, math.inf, 1.0, 0.0, list(range(steps)),
                    cpu_s=med(full_c), num_steps=steps, note="the reference: uncached, every step computed")]
    columns = [(f"full N={steps}", ref)]
    for c in configs:
        imgs = images[id(c)]
        ratios = [tf / t for tf, _, t, _ in pairs[id(c)]]
        cpu_ratios = [cf / cpu for _, cf, _, cpu in pairs[id(c)] if cpu > 0]
        ps = [psnr(x, y) for x, y in zip(imgs, ref)]
        ss = [ssim(x, y) for x, y in zip(imgs, ref)]
        rows.append(DemoRow(
            c.label, c.budget, counted[id(c)], med([t for _, _, t, _ in pairs[id(c)]]), med(ratios),
            float(np.mean(ps)), float(np.mean(ss)), float(np.abs(imgs - ref).max()),
            row_steps.get(c.budget, []) if c.label == "MeanCache" else c.schedule,
            speedup_min=min(ratios), speedup_max=max(ratios), cpu_s=med([cpu for _, _, _, cpu in pairs[id(c)]]),
            cpu_speedup=med(cpu_ratios) if cpu_ratios else math.nan, num_steps=c.steps,
            note=c.note or (f"after one learning generation ({learning[c.budget]} calls, untimed)"
                            if c.budget in learning and c.label == "MeanCache" else "")))
        columns.append((f"{c.label} B={c.budget}" if c.label != "MeanCache" else f"B={c.budget}", imgs))

    table = format_table(rows)
    source = ("MeanCacheConfig(budget=B), learnt from its first generation" if profile is None
              else f"MeanCacheConfig(schedule=solve(profile, B, gamma={gamma:g})), the paper's PSSP")
    header = (f"{name}: {len(prompts)} prompts, N={steps} steps, device={device}, batch of {len(prompts)} per call; "
              f"MeanCache rows: {source}; "
              f"calls = real transformer forwards per generation (the cost), ideal = full calls / calls; speedup = "
              f"median of {repeats} interleaved pairs (full run, then this one) of wall-time ratios, spread = their "
              "min-max, CPU x = the same median for process CPU time; metrics vs the uncached output, averaged over "
              "prompts (max|diff| on [0,1] pixels)")
    warnings = timing_warnings(rows, repeats)
    notes = [f"{r.label} B={r.budget}: {r.note}; counted {r.transformer_calls} transformer calls per run"
             for r in rows[1:] if r.label != "MeanCache"]
    log(header)
    log(table)
    for line in notes:
        log(line)
    for line in warnings:
        log(f"WARNING: {line}" if not line.startswith("one timed pair") else f"note: {line}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text("\n".join([header, table, *notes, *warnings]) + "\n")
    text = json.dumps(
        {"model": name, "steps": steps, "device": device, "prompts": prompts, "seed": seed, "schedule": schedule,
         "gamma": gamma if profile is not None else None, "repeats": repeats,
         "profile": (profile.meta.get("model", None) if profile is not None and isinstance(profile.meta, dict)
                     else None),
         "warnings": warnings, "rows": _json_safe(rows)}, indent=2, default=str, allow_nan=False)
    (out / "results.json").write_text(text + "\n")
    scale = max(1, 128 // ref.shape[1])
    _grid_png(out / "grid.png", prompts, columns, scale)
    plotted = _plot_png(out / "psnr_vs_calls.png", rows, f"{name}, N={steps}")
    log(f"wrote {out / 'table.txt'}, {out / 'results.json'}, {out / 'grid.png'}"
        + (f", {out / 'psnr_vs_calls.png'}" if plotted else " (no plot: matplotlib missing)"))
    return rows
