"""Quality per transformer call: MeanCache against every alternative a user has, at matched work, in one run.

    python bench/frontier.py                      # shipped tiny FluxPipeline + two analytic flows -> bench/frontier.*
    python bench/frontier.py --model bench/tiny_flux_seed1 --no-flows --name frontier_seed1
    python bench/frontier.py --smoke              # 1 prompt, N = 8, 2 budgets, every method once (CI, < 1 min)

Pipeline part (a FluxPipeline written by python/tools/train_tiny_flux.py; default the shipped one), N steps (50),
budgets B (25, 17, 10): every method is run on the same evaluation prompts and noise seeds (seeds 0..), batched in
one call, and judged by PSNR / SSIM on [0, 1] pixels (mean and worst prompt) against

- the uncached N-step Euler output of the same prompt and seed (the headline: what a user compares with), and
- a converged reference: the same pipeline with 4N Euler steps.

Methods at matched transformer work:

- fewer steps: Euler with B steps; UniPC with B steps, solver_order 1, 2, 3; DPM-Solver++ (2M, 3M) with B steps;
  UniPC and DPM-Solver++ use diffusers' flow sigmas (``use_flow_sigmas=True`` and the pipeline's dynamic shift
  ``mu``: FluxPipeline then passes no ``sigmas``, which DPMSolverMultistepScheduler does not take); FlowMatchHeun
  with (B + 1) // 2 steps (2 evaluations per step but the last: 2n - 1 calls), run on the pipeline's own Euler sigmas
  through a subclass whose ``set_timesteps`` takes FluxPipeline's ``sigmas`` and ``mu``; the library's own few-step
  solver ``FlowMatchAdamsScheduler`` (orders 1 and 2, B steps on the pipeline's Euler sigmas), counted as an
  alternative to MeanCache like the others;
- caches, all through ``transformer.enable_cache``: FirstBlockCache and MagCache (thresholds bisected so that the
  counted cost on the TUNING prompts is closest to B; MagCache first calibrates its magnitude ratios on the
  calibration prompts; max_skip_steps 8 and retention_ratio 0.1 so that small budgets are reachable); TaylorSeer lite
  (max_order 1 and 2) and full mode (the attention outputs of every block Taylor-predicted; max_order 1 and 2): its
  schedule is fixed (``disable_cache_before_step`` w, ``cache_interval`` k), so (w, k) is picked from a cost model of
  its computed-step count, the default w = 3 preferred on ties;
- MeanCache: every schedule source and estimator the library offers (:func:`meancache_methods`): the paper's PSSP
  schedule, the published presets for this N and B, and, when ``meancache_kernels.estimators`` exists, PSSP and
  uniform schedules for every estimator in ``estimators.available()``, the library default and the tuned schedule.

Cost is counted, not assumed: ``forwards`` (``fwd``) = transformer calls, counted at proj_out (the diffusers caches
skip work inside a call, so they show N; fewer steps and MeanCache make fewer calls); ``equiv`` =
multiply-accumulates of every Linear layer of the transformer divided by those of one full forward (a cache's
always-computed first block or embedders included), the measure every method is matched on. A row whose ``equiv``
misses B by more than 10 % is marked ``*`` and takes no part in "best per budget".

Data: evaluation prompts (seeds 0..), tuning prompts (seeds 200..; cache thresholds, MeanCache tuning) and
calibration prompts (seeds 100..; MeanCache profile, MagCache ratios) are three disjoint prompt sets. The shipped
model's profile was calibrated on the calibration prompts by python/tools/calibrate_tiny_flux.py and is used when it
holds costs for every estimator the library offers; any other model (``--model``), or a shipped profile without some
estimator, is calibrated in the run on the calibration prompts, as a user would.

Analytic part (meancache_kernels.testing.GaussianMixtureFlow, float64, exact velocity): Euler-B, UniPC-B and
DPM-Solver++-B driven directly on the velocity function (their sigmas replaced by the same shifted flow sigmas as
Euler's), Heun with (B + 1) // 2 steps, the library's FlowMatchAdamsScheduler (driven the same way), and MeanCache
(profile calibrated and schedules tuned on latents disjoint from the evaluation latents). Relative RMSE of the final
latent against the N-step Euler output (headline) and against a converged reference (classical RK4, 400 steps on the
same shifted sigma curve).

Outputs: a markdown report (``NAME.md``), strict JSON (``NAME.json``, no NaN/Infinity: an identical image has PSNR
null) and a plot (``NAME.png``: PSNR against equiv, one line per method family, the family's best variant at each
budget).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python" / "tools"))

N = 50
BUDGETS = (25, 17, 10)
SMOKE_N = 8
SMOKE_BUDGETS = (5, 3)
FAMILIES = ("Euler", "UniPC", "DPM", "Heun", "Adams", "FirstBlockCache", "MagCache", "TaylorSeer", "MeanCache")
FLOWS = (  # the two analytic flows of the default run
    dict(dim=64, components=6, shift=3.0, seed=0),
    dict(dim=128, components=4, shift=2.0, seed=1),
)
SMOKE_FLOWS = (dict(dim=8, components=3, shift=3.0, seed=0),)
TOLERANCE = 0.10  # a row whose counted cost misses the budget by more than this fraction is marked
CAL_SEED, TUNE_SEED = 100, 200  # noise seeds of the calibration and tuning prompts (evaluation: 0..)


# ---------------------------------------------------------------------------------------------------- prompts
def eval_prompts(n: int) -> list[str]:
    """The evaluation prompts (bench/quality.py's, so earlier tables stay comparable)."""
    import tiny_flux_data as data

    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    return [data.prompt_for(colours[(k + 2) % 6], data.SHAPES[(k + 1) % 3], positions[k % 5],
                            (None, "large", "small")[k % 3]) for k in range(n)]


def tuning_prompts(n: int) -> list[str]:
    """Prompts for threshold bisection and MeanCache tuning: disjoint from the evaluation and calibration prompts."""
    import tiny_flux_data as data
    from calibrate_tiny_flux import CALIBRATION_PROMPTS

    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    taken = set(eval_prompts(64)) | set(CALIBRATION_PROMPTS)
    out = []
    specs = data.all_prompt_specs()
    for k in range(len(specs)):
        p = data.prompt_for(*specs[k * 37 % len(specs)])  # 37 is coprime with the 270 specs: every one, mixed
        if p not in taken:
            out.append(p)
        if len(out) == n:
            return out
    raise RuntimeError(f"fewer than {n} tuning prompts disjoint from the others ({colours}, {positions})")


def calibration_prompts(n: int | None = None) -> list[str]:
    from calibrate_tiny_flux import CALIBRATION_PROMPTS

    return list(CALIBRATION_PROMPTS[:n] if n else CALIBRATION_PROMPTS)


# ---------------------------------------------------------------------------------------------------- counting
class Counter:
    """Counts real work in a transformer: calls (at proj_out's pre-hook, which fires even when a cache replaces
    proj_out's forward), evaluated blocks, Linear MACs (the cost measure)."""

    def __init__(self, tr):
        self.handles = []
        self.forwards = self.blocks = self.macs = 0

        def on_proj(*_):
            self.forwards += 1

        def on_block(*_):
            self.blocks += 1

        def on_linear(mod, args):
            self.macs += args[0].numel() // mod.in_features * mod.in_features * mod.out_features

        self.handles.append(tr.proj_out.register_forward_pre_hook(on_proj))
        for blk in list(tr.transformer_blocks) + list(tr.single_transformer_blocks):
            # the attention's query projection runs once per evaluated block; a cache that skips the block replaces
            # its forward, so the children are not called
            self.handles.append(blk.attn.to_q.register_forward_pre_hook(on_block))
        for mod in tr.modules():
            if isinstance(mod, torch.nn.Linear):
                self.handles.append(mod.register_forward_pre_hook(on_linear))

    def reset(self):
        self.forwards = self.blocks = self.macs = 0

    def remove(self):
        for h in self.handles:
            h.remove()


@dataclass
class Row:
    """One method at one budget. Pipeline rows carry image metrics, flow rows relative RMSE."""

    family: str
    method: str
    budget: int
    setting: str = ""
    status: str = "ok"  # "ok" or "n/a: <reason>"
    equiv: float | None = None
    forwards: int | None = None
    wall: float | None = None
    marked: bool = False
    metrics: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- MeanCache
def uniform_steps(num_steps: int, budget: int) -> list[int]:
    """Evenly spaced computed steps round(k N / B), step 0 first."""
    return sorted({int(round(k * num_steps / budget)) for k in range(budget)})


def meancache_methods(profile, budget: int, num_steps: int, tune: Callable | None = None) -> list[tuple[str, Callable]]:
    """Every MeanCache schedule the library offers at ``budget``: ``[(name, make_schedule), ...]``.

    The paper's PSSP schedule first, then (with ``meancache_kernels.estimators``) the library default
    (``solve(profile, B)``), PSSP over every estimator (``estimators="all"``), PSSP restricted to each estimator,
    uniform computed steps with each estimator, and the tuned schedule (``tune(budget)``, tuned on tuning data);
    without it, plain reuse and uniform steps at fixed spans. Presets where the published N and B match.
    ``make_schedule()`` may raise (a profile without costs for an estimator): the row is then reported as not
    applicable with the message.
    """
    import meancache_kernels as mck

    out: list[tuple[str, Callable]] = []
    estimators = getattr(mck, "estimators", None)
    if estimators is not None:
        out.append(("MeanCache PSSP jvp (paper)", lambda: mck.solve(profile, budget, estimators=("jvp",))))
        out.append(("MeanCache PSSP, library default", lambda: mck.solve(profile, budget)))
        out.append(("MeanCache PSSP, estimators='all'", lambda: mck.solve(profile, budget, estimators="all")))
        for name in estimators.available():
            if name != "jvp":  # PSSP with jvp alone is the paper's row above
                out.append((f"MeanCache PSSP {name}", lambda e=name: mck.solve(profile, budget, estimators=(e,))))
            out.append((f"MeanCache uniform {name}",
                        lambda e=name: mck.Schedule.uniform(num_steps, budget, estimator=e)))
        if tune is not None:
            out.append(("MeanCache tuned (recommended)", lambda: tune(budget)))
    else:
        out.append(("MeanCache PSSP (paper)", lambda: mck.solve(profile, budget)))
        out.append(("MeanCache PSSP K=1 (plain reuse)", lambda: mck.solve(profile, budget, k_range=(1, 1))))
        steps = uniform_steps(num_steps, budget)
        for k in sorted({2, 3, profile.k_max}):
            out.append((f"MeanCache uniform K={k}",
                        lambda k=k: mck.Schedule.from_compute_steps(steps, num_steps, span=k)))
    if num_steps == mck.presets.NUM_STEPS:
        for model, budgets in mck.presets.available().items():
            if budget in budgets:
                out.append((f"MeanCache preset {model}", lambda m=model: mck.presets.get(m, budget)))
    return out


def describe(schedule) -> str:
    """Computed steps of a schedule, and its estimators when the schedule records them."""
    txt = "steps " + ",".join(str(s) for s in schedule.compute_steps)
    meta = schedule.meta or {}
    est = meta.get("estimators")
    tuned = meta.get("tune", {}).get("best") if isinstance(meta.get("tune"), dict) else None
    return txt + (f"; estimators {est}" if est else "") + (f"; tuned: {tuned}" if tuned else "")


# ---------------------------------------------------------------------------------------------------- pipeline
def heun_scheduler(euler):
    """FlowMatchHeunDiscreteScheduler on the sigmas ``euler`` (the pipeline's FlowMatchEulerDiscreteScheduler) would
    use for the same call: FluxPipeline passes ``sigmas`` and ``mu`` to ``set_timesteps``, which FlowMatchHeun does
    not take, so this subclass builds Heun's doubled timesteps from the Euler grid."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    grid = copy.deepcopy(euler)

    class FlowMatchHeunOnEulerGrid(FlowMatchHeunDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
            grid.set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)
            s = grid.sigmas.detach().to("cpu", torch.float32)  # n + 1 values, the last 0
            self.num_inference_steps = len(s) - 1
            t = s[:-1] * self.config.num_train_timesteps
            self.timesteps = torch.cat([t[:1], t[1:].repeat_interleave(2)]).to(device)
            self.sigmas = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
            self.prev_derivative = None
            self.dt = None
            self._step_index = None
            self._begin_index = None

    return FlowMatchHeunOnEulerGrid(num_train_timesteps=euler.config.num_train_timesteps)


ADAMS_ORDERS = (1, 2)  # FlowMatchAdamsScheduler orders run (the library's default, 1, and one more)


def adams(euler, order: int):
    """``make() -> FlowMatchAdamsScheduler`` with the Euler scheduler's config (None: diffusers' defaults); raises
    ImportError (an n/a row) when the library has no such scheduler."""
    from meancache_kernels.diffusers import FlowMatchAdamsScheduler

    def make():
        if euler is None:
            return FlowMatchAdamsScheduler(adams_order=order)
        return FlowMatchAdamsScheduler.from_config(euler.config, adams_order=order)
    return make


def heun_steps(budget: int) -> int:
    """Heun steps for a budget of model calls: n steps cost 2n - 1 calls (the last step is Euler)."""
    return max(1, (budget + 1) // 2)


def taylor_computed(num_steps: int, warmup: int, interval: int) -> int:
    """Computed steps of diffusers' TaylorSeer: i < warmup, or (i - warmup - 1) % interval == 0."""
    return sum(1 for i in range(num_steps) if i < warmup or (i - warmup - 1) % interval == 0)


class PipelineBench:
    def __init__(self, model, n_eval: int, n_tune: int, num_steps: int, budgets, profile_path=None, smoke=False,
                 log=print):
        from meancache_kernels.diffusers.loading import load_pipeline

        self.log = log
        self.model = model
        self.num_steps = num_steps
        self.budgets = list(budgets)
        self.smoke = smoke
        self.pipe, self.kw = load_pipeline(model)
        self.pipe.set_progress_bar_config(disable=True)
        self.euler = self.pipe.scheduler
        self.tr = self.pipe.transformer
        self.counter = Counter(self.tr)
        self.prompts = eval_prompts(n_eval)
        self.tune_prompts = tuning_prompts(n_tune)
        self.cal_prompts = calibration_prompts(2 if smoke else None)
        self.bisect_iters = 4 if smoke else 9
        self.profile_path = profile_path
        self.profile = None
        self.rows: list[Row] = []
        self.meta: dict = {}

    # ---------------------------------------------------------------- generation
    def generate(self, steps=None, which="eval"):
        prompts, seed0 = {
            "eval": (self.prompts, 0), "tune": (self.tune_prompts, TUNE_SEED), "cal": (self.cal_prompts, CAL_SEED),
        }[which]
        gens = [torch.Generator().manual_seed(seed0 + k) for k in range(len(prompts))]
        self.counter.reset()
        t0 = time.perf_counter()
        out = self.pipe(prompts, num_inference_steps=steps or self.num_steps, generator=gens, output_type="np",
                        **self.kw).images
        return np.asarray(out, np.float64), time.perf_counter() - t0

    @contextlib.contextmanager
    def scheduler(self, sched):
        self.pipe.scheduler = sched
        try:
            yield
        finally:
            self.pipe.scheduler = self.euler

    @contextlib.contextmanager
    def cache(self, config):
        self.tr.enable_cache(config)
        try:
            yield
        finally:
            self.tr.disable_cache()

    def equiv(self) -> float:
        return self.counter.macs / self.macs_full

    # ---------------------------------------------------------------- profile
    def load_profile(self):
        """The shipped profile for the shipped model at N = 50 (or ``--profile``) when it holds costs for every
        estimator the library offers; otherwise a profile calibrated in the run on the calibration prompts."""
        import meancache_kernels as mck
        from meancache_kernels import Profile
        from meancache_kernels._assets import SHIPPED_PROFILE
        from meancache_kernels.diffusers import calibrate_pipeline

        wanted = set(mck.estimators.available()) if hasattr(mck, "estimators") else {"jvp"}
        note = ""
        if self.profile_path is not None or (self.model is None and self.num_steps == N):
            path = self.profile_path or SHIPPED_PROFILE
            prof = Profile.load(path)
            have = set(getattr(prof, "estimators", ("jvp",)))
            if self.profile_path is not None or wanted <= have:
                self.profile = prof
                self.meta["profile"] = f"loaded {Path(path).name} (estimators {sorted(have)})"
                return
            note = f"{Path(path).name} holds costs for {sorted(have)} only; "
        t0 = time.perf_counter()
        seeds = 1 if self.smoke else 4
        self.profile = calibrate_pipeline(
            self.pipe, self.cal_prompts * seeds, self.num_steps, max_span=6, max_skip=12,
            batch_size=len(self.cal_prompts), seed=CAL_SEED, progress=False, **self.kw,
        )
        secs = time.perf_counter() - t0
        have = sorted(getattr(self.profile, "estimators", ("jvp",)))
        self.meta["profile"] = (f"{note}calibrated in the run on {len(self.cal_prompts) * seeds} generations of the "
                                f"calibration prompts (seeds {CAL_SEED}..; estimators {have}), {secs:.0f} s")
        self.log(f"  profile: {self.meta['profile']}")

    # ---------------------------------------------------------------- evaluation
    def add(self, family, method, budget, imgs, wall, setting):
        m = {}
        for key, ref in (("", self.ref), ("conv_", self.conv)):
            p = [psnr(a, b) for a, b in zip(imgs, ref)]
            s = [ssim(a, b) for a, b in zip(imgs, ref)]
            m[f"{key}psnr_mean"] = float(np.mean(p))
            m[f"{key}psnr_min"] = float(np.min(p))
            m[f"{key}ssim_mean"] = float(np.mean(s))
            m[f"{key}ssim_min"] = float(np.min(s))
            m[f"{key}psnr_prompts"] = [float(x) for x in p]
        eq = self.equiv()
        row = Row(family, method, budget, setting, "ok", eq, self.counter.forwards, wall,
                  abs(eq - budget) > TOLERANCE * budget, m)
        self.rows.append(row)
        self.log(f"  B={budget:>3} {family:<15} {method:<45} equiv {eq:5.1f}{'*' if row.marked else ' '} "
                 f"PSNR {m['psnr_mean']:6.2f} (worst {m['psnr_min']:6.2f}) conv {m['conv_psnr_mean']:6.2f}  {setting}")
        return row

    def na(self, family, method, budget, reason):
        self.rows.append(Row(family, method, budget, status=f"n/a: {reason}"))
        self.log(f"  B={budget:>3} {family:<15} {method:<45} n/a: {reason}")

    def attempt(self, family, method, budget, fn):
        """fn() -> (imgs, wall, setting), run on the evaluation prompts last; an exception becomes an n/a row."""
        try:
            imgs, wall, setting = fn()
        except Exception as e:  # reported, never hidden: the row says why the method did not run
            self.na(family, method, budget, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            return None
        return self.add(family, method, budget, imgs, wall, setting)

    def run(self):
        from diffusers import (
            DPMSolverMultistepScheduler,
            FirstBlockCacheConfig,
            MagCacheConfig,
            TaylorSeerCacheConfig,
            UniPCMultistepScheduler,
        )

        from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache

        n = self.num_steps
        self.generate(2)  # warm-up
        self.ref, t_full = self.generate()
        self.macs_full = self.counter.macs / n
        self.meta.update(full_wall=t_full, forwards_full=self.counter.forwards,
                         blocks_per_forward=self.counter.blocks // n)
        self.conv, _ = self.generate(4 * n)
        self.meta["full_vs_conv_psnr"] = float(np.mean([psnr(a, b) for a, b in zip(self.ref, self.conv)]))
        self.load_profile()

        # MagCache: its own calibration run on the calibration prompts (ratios printed by diffusers)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), self.cache(MagCacheConfig(calibrate=True, num_inference_steps=n)):
            self.generate(which="cal")
        found = re.findall(r"\[([0-9eE.,\s+-]+)\]", buf.getvalue())
        if not found:
            raise RuntimeError(f"MagCache calibration printed no ratios: {buf.getvalue()!r}")
        mag_ratios = [float(x) for x in found[-1].split(",")]

        def bisect(make_config, target, lo, hi):
            """Geometric bisection of a threshold on the TUNING prompts: counted equiv closest to ``target``."""
            best = None
            for _ in range(self.bisect_iters):
                mid = math.sqrt(lo * hi)
                with self.cache(make_config(mid)):
                    self.generate(which="tune")
                eq = self.equiv()
                if best is None or abs(eq - target) < best[0]:
                    best = (abs(eq - target), mid, eq)
                if eq > target:  # too much computed: a larger threshold skips more
                    lo = mid
                else:
                    hi = mid
            return best[1], best[2]

        def cached(make_config, lo, hi, b):
            def fn():
                thr, eq_tune = bisect(make_config, b, lo, hi)
                with self.cache(make_config(thr)):
                    imgs, wall = self.generate()
                return imgs, wall, f"threshold {thr:.3g} (tuning prompts: equiv {eq_tune:.1f})"
            return fn

        # TaylorSeer: per-step cost model equiv = c + f (N - c) for c computed steps, f measured once per mode
        taylor_modes = [("TaylorSeer lite, order 1", True, 1), ("TaylorSeer lite, order 2", True, 2),
                        ("TaylorSeer full, order 1", False, 1), ("TaylorSeer full, order 2", False, 2)]

        def taylor_config(lite, order, warmup, interval):
            return TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                                         taylor_factors_dtype=torch.float32, use_lite_mode=lite)

        skip_cost = {}
        for _, lite, _order in taylor_modes:
            if lite in skip_cost:
                continue
            w, k = 1, n  # one computed step: equiv = 1 + f (N - 1)
            with self.cache(taylor_config(lite, 1, w, k)):
                self.generate(which="tune")
            c = taylor_computed(n, w, k)
            skip_cost[lite] = (self.equiv() - c) / (n - c)

        def taylor_pick(lite, b):
            f = skip_cost[lite]
            cands = []
            for w in range(1, min(n, 8) + 1):
                for k in range(1, n + 1):
                    c = taylor_computed(n, w, k)
                    cands.append((abs(c + f * (n - c) - b), abs(w - 3), k, w))
            _, _, k, w = min(cands)
            return w, k

        def taylor(lite, order, b):
            def fn():
                w, k = taylor_pick(lite, b)
                with self.cache(taylor_config(lite, order, w, k)):
                    imgs, wall = self.generate()
                return imgs, wall, f"disable_cache_before_step {w}, cache_interval {k}"
            return fn

        def with_scheduler(make, steps):
            def fn():
                with self.scheduler(make()):
                    imgs, wall = self.generate(steps)
                return imgs, wall, f"{steps} steps"
            return fn

        def unipc(order):
            return lambda: UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
                time_shift_type="exponential", solver_order=order)

        def dpm(order):
            return lambda: DPMSolverMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
                time_shift_type="exponential", algorithm_type="dpmsolver++", solver_order=order)

        def mean_cache(make_schedule):
            def fn():
                sched = make_schedule()
                apply_mean_cache(self.pipe, MeanCacheConfig(schedule=sched))
                try:
                    imgs, wall = self.generate()
                finally:
                    remove_mean_cache(self.pipe)
                return imgs, wall, describe(sched)
            return fn

        tune = self.tuner()
        for b in self.budgets:
            self.attempt("Euler", "Euler, B steps", b, with_scheduler(lambda: self.euler, b))
            for order in (1, 2, 3):
                self.attempt("UniPC", f"UniPC order {order}, B steps", b, with_scheduler(unipc(order), b))
            for order in (2, 3):
                self.attempt("DPM", f"DPM-Solver++ {order}M, B steps", b, with_scheduler(dpm(order), b))
            self.attempt("Heun", "FlowMatchHeun, (B+1)//2 steps", b,
                         with_scheduler(lambda: heun_scheduler(self.euler), heun_steps(b)))
            for order in ADAMS_ORDERS:
                self.attempt("Adams", f"Adams order {order} (this library), B steps", b,
                             with_scheduler(adams(self.euler, order), b))
            self.attempt("FirstBlockCache", "FirstBlockCache", b,
                         cached(lambda t: FirstBlockCacheConfig(threshold=t), 1e-4, 4.0, b))
            self.attempt("MagCache", "MagCache", b, cached(
                lambda t: MagCacheConfig(threshold=t, max_skip_steps=8, retention_ratio=0.1, num_inference_steps=n,
                                         mag_ratios=mag_ratios), 1e-4, 10.0, b))
            for name, lite, order in taylor_modes:
                self.attempt("TaylorSeer", name, b, taylor(lite, order, b))
            for name, make in meancache_methods(self.profile, b, n, tune):
                self.attempt("MeanCache", name, b, mean_cache(make))
        self.counter.remove()
        self.meta.update(prompts=self.prompts, tuning_prompts=self.tune_prompts, calibration_prompts=self.cal_prompts,
                         tokens=(self.kw.get("height", 0) // 4) * (self.kw.get("width", 0) // 4),
                         taylor_skip_cost=skip_cost, model=str(self.model or "shipped tiny FluxPipeline"))
        return self.rows

    def tuner(self):
        """``tune(budget) -> Schedule`` through ``meancache_kernels.diffusers.tune_pipeline`` on the tuning prompts,
        or None when the library has no tuning yet."""
        import meancache_kernels.diffusers as mcd

        tune_pipeline = getattr(mcd, "tune_pipeline", None)
        if tune_pipeline is None:
            return None

        def tune(budget):
            return tune_pipeline(self.pipe, self.tune_prompts, profile=self.profile, budget=budget,
                                 num_inference_steps=self.num_steps, seed=TUNE_SEED, progress=False, **self.kw)

        return tune


def psnr(a, b):
    from meancache_kernels.demo import psnr as _psnr

    return _psnr(a, b)


def ssim(a, b):
    from meancache_kernels.demo import ssim as _ssim

    return _ssim(a, b)


# ---------------------------------------------------------------------------------------------------- analytic flows
def rk4(f, z, sig):
    for i in range(len(sig) - 1):
        s0, s1 = float(sig[i]), float(sig[i + 1])
        h, sm = s1 - s0, 0.5 * (s0 + s1)
        k1 = f(z, s0)
        k2 = f(z + 0.5 * h * k1, sm)
        k3 = f(z + 0.5 * h * k2, sm)
        k4 = f(z + h * k3, s1)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


def heun(f, z, sig):
    """diffusers' FlowMatchHeun rule: a predictor-corrector step, the last step (to sigma 0) plain Euler."""
    calls = 0
    for i in range(len(sig) - 1):
        s0, s1 = float(sig[i]), float(sig[i + 1])
        v = f(z, s0)
        calls += 1
        if s1 == 0:
            z = z + (s1 - s0) * v
        else:
            v2 = f(z + (s1 - s0) * v, s1)
            calls += 1
            z = z + (s1 - s0) * 0.5 * (v + v2)
    return z, calls


SIGMA_MAX = 1 - 1e-6  # multistep schedulers take log(alpha) = log(1 - sigma): sigma = 1 gives -inf (NaN at order 3)


def drive_scheduler(sched, f, z, sig):
    """Run a diffusers multistep scheduler (UniPC, DPM-Solver++, flow prediction) on the velocity function ``f`` with
    its sigmas replaced by ``sig`` (float64, N + 1 values ending in 0; a first sigma of 1 is lowered to SIGMA_MAX, as
    diffusers' own flow sigmas start at 1 - 1/1000); returns (z, calls)."""
    n = len(sig) - 1
    sched.set_timesteps(n)
    sched.sigmas = sig.clone()
    sched.sigmas[0] = min(float(sig[0]), SIGMA_MAX)
    sched.timesteps = sig[:-1] * sched.config.num_train_timesteps
    calls = 0
    for i in range(n):
        v = f(z, float(sig[i]))
        calls += 1
        z = sched.step(v, sched.timesteps[i], z, return_dict=False)[0]
    return z, calls


class CountingFlow:
    def __init__(self, flow):
        self.flow, self.calls = flow, 0

    def __call__(self, z, sigma):
        self.calls += 1
        return self.flow(z, sigma)


def bench_flow(spec, num_steps, budgets, n_eval, n_cal, n_tune, log=print):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    import meancache_kernels as mck
    from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

    dim, comps, shift, seed = spec["dim"], spec["components"], spec["shift"], spec["seed"]
    flow = CountingFlow(GaussianMixtureFlow.random(dim, components=comps, seed=seed))
    sig = flow_sigmas(num_steps, shift=shift)

    def latents(n, off):
        return torch.randn(n, dim, generator=torch.Generator().manual_seed(1000 * seed + off), dtype=torch.float64)

    z_eval, z_cal, z_tune = latents(n_eval, 1), latents(n_cal, 2), latents(n_tune, 3)
    t0 = time.perf_counter()
    profile = mck.calibrate(flow, z_cal, sig, max_span=6, max_skip=12, progress=False, batch_size=64)
    t_cal = time.perf_counter() - t0
    ref = mck.sample(flow, z_eval, sig, mck.Schedule.full(num_steps))
    conv = rk4(flow, z_eval, flow_sigmas(400, shift=shift))
    conv_check = rk4(flow, z_eval, flow_sigmas(800, shift=shift))

    def rel(a, b):
        return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()

    rows: list[Row] = []

    def add(family, method, b, fn):
        flow.calls = 0
        try:
            out, setting = fn()
        except Exception as e:
            rows.append(Row(family, method, b, status=f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:160]}"))
            log(f"  B={b:>3} {family:<10} {method:<45} {rows[-1].status}")
            return
        calls = flow.calls  # each call evaluates the whole batch: calls per sample
        m = dict(rel_rmse=rel(out, ref), conv_rel_rmse=rel(out, conv))
        row = Row(family, method, b, setting, "ok", float(calls), int(calls), None,
                  abs(calls - b) > TOLERANCE * b, m)
        rows.append(row)
        log(f"  B={b:>3} {family:<10} {method:<45} calls {calls:>3} rel {m['rel_rmse']:.3e} "
            f"conv {m['conv_rel_rmse']:.3e}  {setting}")

    def tune(b):
        return mck.tune(flow, z_tune, sig, profile, b, progress=False)

    def sched_run(make, b):
        def fn():
            s = make()
            bsig = flow_sigmas(b, shift=shift)
            out, _ = drive_scheduler(s, flow, z_eval, bsig)
            return out, f"{b} steps on flow_sigmas({b}, {shift:g})"
        return fn

    for b in budgets:
        add("Euler", "Euler, B steps", b,
            lambda: (mck.sample(flow, z_eval, flow_sigmas(b, shift=shift), mck.Schedule.full(b)), f"{b} steps"))
        for order in (1, 2, 3):
            add("UniPC", f"UniPC order {order}, B steps", b, sched_run(
                lambda o=order: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                        flow_shift=shift, solver_order=o), b))
        for order in (2, 3):
            add("DPM", f"DPM-Solver++ {order}M, B steps", b, sched_run(
                lambda o=order: DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                            flow_shift=shift, algorithm_type="dpmsolver++",
                                                            solver_order=o), b))
        add("Heun", "Heun, (B+1)//2 steps", b,
            lambda: (heun(flow, z_eval, flow_sigmas(heun_steps(b), shift=shift))[0], f"{heun_steps(b)} steps"))
        for order in ADAMS_ORDERS:
            add("Adams", f"Adams order {order} (this library), B steps", b,
                sched_run(lambda o=order: adams(None, o)(), b))
        for name, make in meancache_methods(profile, b, num_steps, tune if hasattr(mck, "tune") else None):
            def fn(make=make):
                s = make()
                flow.calls = 0  # tuning runs the flow on the tuning latents: not part of the sampling cost
                return mck.sample(flow, z_eval, sig, s), describe(s)
            add("MeanCache", name, b, fn)
    meta = dict(spec, num_steps=num_steps, eval=n_eval, cal=n_cal, tune=n_tune, calibration_s=t_cal,
                euler_n_vs_conv=rel(ref, conv), conv_400_vs_800=rel(conv, conv_check))
    return rows, meta


# ---------------------------------------------------------------------------------------------------- output
def _fmt(x, spec=".2f"):
    if x is None:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


RECOMMENDED = "MeanCache tuned (recommended)"
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


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a train_tiny_flux.py output dir (default: the shipped model)")
    ap.add_argument("--profile", default=None, help="MeanCache profile (default: shipped; calibrated for --model)")
    ap.add_argument("--prompts", type=int, default=8, help="evaluation prompts (default 8)")
    ap.add_argument("--tune-prompts", type=int, default=8, help="tuning prompts (default 8)")
    ap.add_argument("--steps", type=int, default=N)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--no-flows", action="store_true", help="skip the analytic flows")
    ap.add_argument("--no-pipeline", action="store_true", help="only the analytic flows")
    ap.add_argument("--flow", action="append", default=None, type=_flow_spec, metavar="DIM,COMPONENTS,SHIFT,SEED",
                    help="an analytic flow to run instead of the default two (repeatable), e.g. --flow 32,8,1.5,7")
    ap.add_argument("--out-dir", default=None, help="where NAME.md/.json/.png go (default bench/; --smoke: a tmp dir)")
    ap.add_argument("--name", default=None, help="output file stem (default frontier, or frontier_<model dir name>)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --smoke: 1)")
    ap.add_argument("--smoke", action="store_true", help="1 prompt, N = 8, budgets 5 and 3, small flow: CI check")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="only rewrite NAME.md and NAME.png beside an earlier run's NAME.json")
    args = ap.parse_args(argv)
    if args.report:
        path = Path(args.report)
        print(write_outputs(json.loads(path.read_text()), path.parent, path.stem))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads or (1 if args.smoke else 2))
    t_start = time.perf_counter()
    if args.smoke:
        n, budgets, n_eval, n_tune, flows = SMOKE_N, list(SMOKE_BUDGETS), 1, 1, SMOKE_FLOWS
        flow_sizes = dict(n_eval=16, n_cal=16, n_tune=8)
    else:
        n, budgets, n_eval, n_tune, flows = args.steps, [int(b) for b in args.budgets.split(",")], args.prompts, \
            args.tune_prompts, tuple(args.flow) if args.flow else FLOWS
        flow_sizes = dict(n_eval=256, n_cal=64, n_tune=32)
    name = args.name or ("frontier" if args.model is None else f"frontier_{Path(args.model).name}")
    out_dir = Path(args.out_dir) if args.out_dir else (Path(tempfile.mkdtemp()) if args.smoke else ROOT / "bench")
    out_dir.mkdir(parents=True, exist_ok=True)

    result = {"command": "python bench/frontier.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"cpu-{os.cpu_count()}c, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "library": _library_version(),
              "pipelines": [], "flows": []}
    if not args.no_pipeline:
        print(f"pipeline {args.model or 'shipped'}: N = {n}, budgets {budgets}, {n_eval} prompts", flush=True)
        pb = PipelineBench(args.model, n_eval, n_tune, n, budgets, args.profile, smoke=args.smoke,
                           log=lambda s: print(s, flush=True))
        rows = pb.run()
        pmeta = dict(pb.meta, num_steps=n, budgets=budgets, model_dir=args.model)
        result["pipelines"].append(dict(meta=pmeta, rows=[asdict(r) for r in rows]))
    if not args.no_flows:
        for spec in flows:
            print(f"flow {spec}: N = {n}, budgets {budgets}", flush=True)
            rows, fmeta = bench_flow(spec, n, budgets, **flow_sizes, log=lambda s: print(s, flush=True))
            result["flows"].append(dict(meta=fmeta, rows=[asdict(r) for r in rows]))
    result["seconds"] = time.perf_counter() - t_start
    (out_dir / f"{name}.json").write_text(json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    text = write_outputs(result, out_dir, name)
    print()
    print(text)
    print(f"wrote {out_dir / name}.md, .json, .png ({result['seconds']:.0f} s)")
    return 0


def _flow_spec(text: str) -> dict:
    """``"dim,components,shift,seed"`` -> the flow spec of :func:`bench_flow` (argparse type of ``--flow``)."""
    parts = text.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        dim, comps, shift, seed = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
        if dim < 1 or comps < 1 or not shift > 0 or seed < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--flow wants DIM,COMPONENTS,SHIFT,SEED (dim, components >= 1, shift > 0, seed >= 0), got {text!r}"
        ) from None
    return dict(dim=dim, components=comps, shift=shift, seed=seed)


def _library_version() -> str:
    import subprocess

    import meancache_kernels as mck

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "meancache_kernels"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    return f"meancache_kernels {mck.__version__}" + (f", git {head}" if head else "") + (
        " + uncommitted changes in meancache_kernels/" if dirty else "")


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


if __name__ == "__main__":
    raise SystemExit(main())
