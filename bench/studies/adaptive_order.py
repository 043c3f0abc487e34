"""Per-prompt error control without moving the computed steps: does choosing the estimator's order online, from the
free error estimate, lift the worst prompt of the one-line default (`MeanCacheConfig(budget=B)`)?

    python -m bench.studies.adaptive_order                  # shipped model, N = 50, B = 10, 16 selection prompts
    python -m bench.studies.adaptive_order --model bench/tiny_flux_seed1 --budget 17
    python -m bench.studies.adaptive_order --smoke          # N = 8, B = 3, 2 prompts (< 1 min), prints only

The computed steps are the default's (evenly spaced); only the estimator of each skipped segment changes.

1. **Oracle** (an upper bound, not a method): the default (uniform taylorc2) and uniform taylorc1 / taylor2 / taylor1,
   each static for the whole generation; per prompt the best of them, picked with the reference in hand.
2. **Online order selection**: at each computed step j (from the third on) the velocity v_j is predicted from the
   previous computed velocities by the Lagrange polynomial in sigma of each order q (1 and 2), the same free estimate
   `meancache_kernels.adaptive` reads; the next segment uses the family's estimator of the order whose prediction
   was closer ("min"), or the higher order unless its error exceeds 1.5x the lower one's ("ratio 1.5"). One host
   read per computed step (the errors), one decision for the whole batch: each prompt is generated alone (batch 1),
   as per-prompt control would run.

Data: the zero-config study's SELECTION prompts (bench.zero_config.measure.selection_prompts, noise seeds 300..),
disjoint from bench.frontier's evaluation prompts: this decides whether to build the method, it does not report it.
Quality: PSNR of the decoded image against the uncached N-step output, mean and worst prompt.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import meancache_kernels as mck
from meancache_kernels import estimators as _est
from meancache_kernels import ops
from meancache_kernels.adaptive import AdaptiveState
from meancache_kernels.metrics import psnr

from ..zero_config.measure import PipeBench, selection_prompts
from . import study_args

STATIC = ("taylorc2", "taylorc1", "taylor2", "taylor1")


class OrderSelect(AdaptiveState):
    """The default's computed steps; the estimator order of each segment picked online (module docstring, item 2)."""

    def __init__(self, sigmas, budget: int, family: str, rule: str, ratio: float = 1.5):
        super().__init__(sigmas, budget=budget, estimator=f"{family}2", record_errors=True)
        self._plan = list(mck.Schedule.uniform(self.num_steps, budget, f"{family}2").compute)
        self.family, self.rule, self.ratio = family, rule, ratio
        self.chosen: dict[int, int] = {}

    def _measure(self, i: int, v: torch.Tensor) -> float:
        orders = [q for q in (1, 2) if q <= len(self._nodes) - 1]
        if not orders:
            return 0.0
        acc = torch.float64 if v.dtype == torch.float64 else torch.float32
        errs = []
        for q in orders:
            prev = self._nodes[-(q + 1):]
            w = _est.lagrange_weights([self.sigmas[k] for k, _ in prev], self.sigmas[i])
            _, diff = ops.combine_step(v, [vk for _, vk in prev], w, -1.0, backend=self.backend)
            errs.append(torch.linalg.vector_norm(diff, dtype=acc))
        e = dict(zip(orders, (torch.stack(errs) / torch.linalg.vector_norm(v, dtype=acc)).tolist()))  # one read
        if len(e) == 2:
            q = min(e, key=e.get) if self.rule == "min" else (2 if e[2] <= self.ratio * e[1] else 1)
            self.estimator = _est.get(self.family, q)
            self.chosen[i] = q
        return e[max(e)]


def per_prompt(model, prompts, n: int, run_one) -> list[float]:
    """PSNR of each prompt generated alone by ``run_one(pipe_bench)`` against its uncached N-step output."""
    out = []
    for k, p in enumerate(prompts):
        one = PipeBench(model, "one", [p], 300 + k)
        ref, _ = one.reference(n)
        out.append(psnr(run_one(one)[0], ref[0]))
    return out


def main(argv=None) -> None:
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache
    from meancache_kernels.diffusers import context as hooks  # where the adaptive state of a generation is made

    def extra(ap):
        ap.add_argument("--budget", type=int, default=10)
        ap.add_argument("--prompts", type=int, default=16)

    args = study_args(__doc__, argv, extra)
    n, b, m = (8, 3, 2) if args.smoke else (50, args.budget, args.prompts)
    prompts = selection_prompts(m)
    t0 = time.perf_counter()
    print(f"{args.model or 'shipped'} N={n} B={b}, {m} selection prompts (seeds 300..), each generated alone")

    def static(est):
        def run(one):
            apply_mean_cache(one.pipe, MeanCacheConfig(schedule=mck.Schedule.uniform(n, b, est)))
            try:
                return one.generate(n)
            finally:
                remove_mean_cache(one.pipe)
        return run

    def online(family, rule):
        def run(one):
            original = hooks.adaptive_state
            hooks.adaptive_state = lambda config, host, allowed: OrderSelect(host, b, family, rule)
            apply_mean_cache(one.pipe, MeanCacheConfig(budget=b, adaptive=True))
            try:
                return one.generate(n)
            finally:
                remove_mean_cache(one.pipe)
                hooks.adaptive_state = original
        return run

    rows = {f"static {e}" + (" (the default)" if e == "taylorc2" else ""): static(e) for e in STATIC}
    rows.update({f"online {f} order, {r}": online(f, r) for f in ("taylorc", "taylor") for r in ("min", "ratio 1.5")})
    got = {}
    for name, run in rows.items():
        got[name] = per_prompt(args.model, prompts, n, run)
        print(f"  {name:32s} mean {np.mean(got[name]):6.2f}  worst {np.min(got[name]):6.2f}", flush=True)
    oracle = np.max([got[k] for k in got if k.startswith("static")], axis=0)
    print(f"  {'oracle of the static rows':32s} mean {oracle.mean():6.2f}  worst {oracle.min():6.2f}")
    print(f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
