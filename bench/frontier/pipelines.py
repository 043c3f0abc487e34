"""The pipeline part: every method of the registry run on a FluxPipeline (default the shipped tiny one) with the same
evaluation prompts and noise seeds, batched in one call, judged by PSNR / SSIM against the uncached N-step output and
against 4N Euler steps, at a cost counted in the transformer (:class:`Counter`)."""

from __future__ import annotations

import contextlib
import io
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from . import methods as M
from .common import CAL_SEED, TOLERANCE, TUNE_SEED, N, Row, calibration_prompts, eval_prompts, tuning_prompts


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
            "learn": (self.cal_prompts[:1], CAL_SEED),  # the one line's learning generation: one prompt
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
        from meancache_kernels.diffusers import (
            MeanCacheConfig,
            apply_mean_cache,
            get_mean_cache_stats,
            remove_mean_cache,
        )

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
        with contextlib.redirect_stdout(buf), self.cache(M.mag_cache_calibration(n)):
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
        skip_cost = {}
        for _, lite, _order in M.TAYLOR_MODES:
            if lite in skip_cost:
                continue
            w, k = 1, n  # one computed step: equiv = 1 + f (N - 1)
            with self.cache(M.taylor_config(lite, 1, w, k)):
                self.generate(which="tune")
            c = M.taylor_computed(n, w, k)
            skip_cost[lite] = (self.equiv() - c) / (n - c)

        def taylor(lite, order, b):
            def fn():
                w, k = M.taylor_pick(n, skip_cost[lite], b)
                with self.cache(M.taylor_config(lite, order, w, k)):
                    imgs, wall = self.generate()
                return imgs, wall, f"disable_cache_before_step {w}, cache_interval {k}"
            return fn

        def with_scheduler(make, steps):
            def fn():
                with self.scheduler(make()):
                    imgs, wall = self.generate(steps)
                return imgs, wall, f"{steps} steps"
            return fn

        def mean_cache(make_schedule):
            def fn():
                sched = make_schedule()
                apply_mean_cache(self.pipe, MeanCacheConfig(schedule=sched))
                try:
                    imgs, wall = self.generate()
                finally:
                    remove_mean_cache(self.pipe)
                return imgs, wall, M.describe(sched)
            return fn

        def one_line(b):
            def fn():  # MeanCacheConfig(budget=B): its learning generation (one calibration prompt), then the eval
                apply_mean_cache(self.pipe, MeanCacheConfig(budget=b))
                try:
                    self.generate(which="learn")
                    learnt = get_mean_cache_stats(self.pipe).learnt
                    imgs, wall = self.generate()
                    sched = get_mean_cache_stats(self.pipe).schedule
                finally:
                    remove_mean_cache(self.pipe)
                return imgs, wall, (f"{M.describe(sched)}; learnt from 1 calibration prompt ({learnt['calls']} calls): "
                                    f"{learnt['choice']}, {learnt['regime']}, early share {learnt['early_share']:.2f}")
            return fn

        tune = self.tuner()
        for b in self.budgets:
            self.attempt("MeanCache", M.ONE_LINE, b, one_line(b))
            self.attempt("Euler", "Euler, B steps", b, with_scheduler(lambda: self.euler, b))
            for order in M.UNIPC_ORDERS:
                self.attempt("UniPC", f"UniPC order {order}, B steps", b,
                             with_scheduler(lambda o=order: M.unipc(o), b))
            for order in M.DPM_ORDERS:
                self.attempt("DPM", f"DPM-Solver++ {order}M, B steps", b, with_scheduler(lambda o=order: M.dpm(o), b))
            self.attempt("Heun", "FlowMatchHeun, (B+1)//2 steps", b,
                         with_scheduler(lambda: M.heun_scheduler(self.euler), M.heun_steps(b)))
            for order in M.ADAMS_ORDERS:
                self.attempt("Adams", f"Adams order {order} (this library), B steps", b,
                             with_scheduler(M.adams(self.euler, order), b))
            self.attempt("FirstBlockCache", "FirstBlockCache", b, cached(M.first_block_cache, *M.FIRST_BLOCK_RANGE, b))
            self.attempt("MagCache", "MagCache", b,
                         cached(lambda t: M.mag_cache(t, n, mag_ratios), *M.MAG_RANGE, b))
            for name, lite, order in M.TAYLOR_MODES:
                self.attempt("TaylorSeer", name, b, taylor(lite, order, b))
            for name, make in M.meancache_methods(self.profile, b, n, tune):
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
    from meancache_kernels.metrics import psnr as _psnr

    return _psnr(a, b)


def ssim(a, b):
    from meancache_kernels.metrics import ssim as _ssim

    return _ssim(a, b)

