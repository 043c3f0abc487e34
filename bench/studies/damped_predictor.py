"""A damped quadratic predictor: is TaylorSeer's second-order term a better skipped-step estimate than Lagrange's?

    python -m bench.studies.damped_predictor                            # shipped model
    python -m bench.studies.damped_predictor --model bench/tiny_flux_seed1
    python -m bench.studies.damped_predictor --smoke                    # N = 8, 2 prompts (< 1 min), prints only

diffusers' TaylorSeer (lite: the velocity at ``proj_out``) extrapolates with backward differences in step index and
a second-order term ``o^2 / 2 * D2`` where the Newton (Lagrange) quadratic through the same three points has
``o (o + h) / 2 * D2`` (o: offset from the newest computed step, h: the last gap). Its prediction is the linear one
plus the fraction ``lam = o / (o + h)`` of the quadratic correction. Here that damping is applied to the library's
order-2 estimators in sigma: ``w = w_1 + lam (w_2 - w_1)`` (``taylor2 damped``, and the predictor of ``taylorc2
damped``; the corrector is unchanged and subtracts the same predictor), with ``lam = o / (o + h)`` measured in sigma.

Measured, on uniform computed steps (the default rule's spacing), N = 50:

- under the Euler scheduler: taylorc2 (the default), taylorc2 damped, taylorc1, taylor2, taylor2 damped, taylor1 at
  B = 25 / 17 / 10, against the uncached 50-step output;
- under UniPC order 2 and DPM-Solver++ 2M (flow sigmas, dynamic shift; where the corrector is not allowed, so the
  damped taylor2 would compete with taylor1): B steps of the scheduler, taylor1, taylor2, taylor2 damped at B = 17 /
  10, against the same scheduler's 50-step output.

Data: the zero-config study's SELECTION prompts (noise seeds 300..), 16 of them batched, disjoint from bench.frontier's
evaluation prompts: this decides whether to build the estimator, it does not report it. Mean and worst-prompt PSNR of
the decoded images.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels import estimators as _est
from meancache_kernels.metrics import psnr

from ..frontier import methods as M
from ..zero_config.measure import PipeBench, selection_prompts
from . import study_args


def damped_weights(nodes, s_i: float) -> list[float]:
    """Weights of the damped quadratic through the three newest ``nodes`` (sigmas, oldest first) at ``s_i``."""
    nodes = list(nodes)[-3:]
    w2 = _est.lagrange_weights(nodes, s_i)
    w1 = [0.0] + _est.lagrange_weights(nodes[1:], s_i)
    o, h = abs(s_i - nodes[-1]), abs(nodes[-1] - nodes[-2])
    lam = o / (o + h)
    return [a + lam * (b - a) for a, b in zip(w1, w2)]


@contextlib.contextmanager
def damped(on: bool):
    """Order-2 taylor / taylorc estimators use :func:`damped_weights` inside the block (a study-only patch)."""
    original = _est.PolynomialEstimator.weights

    def weights(self, nodes, s_i, s_next):
        used = list(nodes)[-(self.param + 1):]
        if self.param == 2 and len(used) == 3 and self.family in ("taylor", "taylorc"):
            return damped_weights(used, s_i)
        return original(self, nodes, s_i, s_next)

    if on:
        _est.PolynomialEstimator.weights = weights
    try:
        yield
    finally:
        _est.PolynomialEstimator.weights = original


def main(argv=None) -> None:
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache

    args = study_args(__doc__, argv)
    n, m = (8, 2) if args.smoke else (50, 16)
    euler_budgets, other_budgets = ((5, 3), (3,)) if args.smoke else ((25, 17, 10), (17, 10))
    t0 = time.perf_counter()
    pb = PipeBench(args.model, "study", selection_prompts(m), seed0=300)
    euler = pb.pipe.scheduler
    print(f"{args.model or 'shipped'} N={n}, {m} selection prompts (seeds 300..) batched")

    def report(label, imgs, ref):
        ps = [psnr(a, b) for a, b in zip(imgs, ref)]
        print(f"  {label:44s} mean {np.mean(ps):6.2f}  worst {np.min(ps):6.2f}", flush=True)

    def cached(est, on, b):
        with damped(on):
            apply_mean_cache(pb.pipe, MeanCacheConfig(schedule=mck.Schedule.uniform(n, b, est)))
            try:
                return pb.generate(n)
            finally:
                remove_mean_cache(pb.pipe)

    ref = pb.generate(n)
    variants = [("taylorc2", False), ("taylorc2", True), ("taylorc1", False), ("taylor2", False), ("taylor2", True),
                ("taylor1", False)]
    for b in euler_budgets:
        for est, on in variants:
            report(f"Euler B={b} {est}{' damped' if on else ''}", cached(est, on, b), ref)
    for name, make in (("UniPC order 2", lambda: M.unipc(2)), ("DPM-Solver++ 2M", lambda: M.dpm(2))):
        pb.pipe.scheduler = make()
        try:
            own = pb.generate(n)
            for b in other_budgets:
                report(f"{name} B={b} {b} steps", pb.generate(b), own)
                for est, on in (("taylor1", False), ("taylor2", False), ("taylor2", True)):
                    report(f"{name} B={b} {est}{' damped' if on else ''}", cached(est, on, b), own)
        finally:
            pb.pipe.scheduler = euler
    print(f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
