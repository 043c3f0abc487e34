"""Quality of solved MeanCache schedules on the analytic Gaussian-mixture flow (no model, exact velocities).

    python bench/quality_analytic.py [--dim 64] [--cal 64] [--eval 256] [--seed 0]

Calibrates a profile on `--cal` samples (N = 50, flow_sigmas shift 3, K_max = 6, every edge), then, on `--eval`
DIFFERENT held-out samples, measures the final error (RMSE against the full-step result, 50 model calls) of:
  * meancache-pssp   the schedule solved for B (gamma = 2) with its per-edge spans K
  * reuse-pssp       the same computed steps with plain reuse (K = 1 everywhere)
  * pssp-k1          the schedule solved with k_range = (1, 1): the best plain-reuse schedule for this profile
  * meancache-preset the published Qwen-Image schedule for B (its own K per interval)
  * euler-B          plain Euler with B steps on flow_sigmas(B, 3) (B model calls, no caching)
Prints a markdown table (model calls = B for every row but the reference).
"""

from __future__ import annotations

import argparse
import time

import torch

import meancache_kernels as mck
from meancache_kernels import presets
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

N = 50
SHIFT = 3.0
BUDGETS = (10, 17, 25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--components", type=int, default=6)
    ap.add_argument("--cal", type=int, default=64, help="calibration samples")
    ap.add_argument("--eval", type=int, default=256, help="held-out evaluation samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gamma", type=float, default=2.0)
    args = ap.parse_args()

    flow = GaussianMixtureFlow.random(args.dim, components=args.components, seed=args.seed)
    sigmas = flow_sigmas(N, shift=SHIFT)
    z_cal = torch.randn(args.cal, args.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed + 1))
    z_eval = torch.randn(args.eval, args.dim, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(args.seed + 2))

    t0 = time.perf_counter()
    profile = mck.calibrate(flow, z_cal, sigmas, max_span=6, max_skip=None, progress=False, batch_size=32,
                            meta={"model": f"GaussianMixtureFlow(dim={args.dim}, seed={args.seed})"})
    t_cal = time.perf_counter() - t0
    st = profile.meta["stability"]

    ref = mck.sample(flow, z_eval, sigmas, mck.Schedule.full(N))
    scale = ref.pow(2).mean().sqrt().item()

    def rmse(out: torch.Tensor) -> float:
        return (out - ref).pow(2).mean().sqrt().item()

    rows = []
    for b in BUDGETS:
        solved = mck.solve(profile, b, gamma=args.gamma)
        solved_k1 = mck.solve(profile, b, gamma=args.gamma, k_range=(1, 1))
        preset = presets.get("qwen-image", b)
        reuse = mck.Schedule.from_compute_steps(solved.compute_steps, N, span=1)
        results = {
            "meancache-pssp": rmse(mck.sample(flow, z_eval, sigmas, solved)),
            "reuse-pssp": rmse(mck.sample(flow, z_eval, sigmas, reuse)),
            "pssp-k1": rmse(mck.sample(flow, z_eval, sigmas, solved_k1)),
            "meancache-preset": rmse(mck.sample(flow, z_eval, sigmas, preset)),
            f"euler-{b}": rmse(mck.sample(flow, z_eval, flow_sigmas(b, shift=SHIFT), mck.Schedule.full(b))),
        }
        rows.append((b, solved, solved_k1, results))

    print(f"analytic GaussianMixtureFlow dim={args.dim} components={args.components} seed={args.seed}; N={N}, "
          f"flow_sigmas shift {SHIFT}; calibration {args.cal} samples ({t_cal:.1f} s, K_max=6, every edge), "
          f"evaluation {args.eval} held-out samples; gamma={args.gamma}; RMS of the full-step result {scale:.3f}")
    print(f"profile stability: mean pairwise Spearman {st['rank_correlation']:.3f}, per-edge CV median "
          f"{st['cv_median']:.3f} (mean {st['cv_mean']:.3f}, max {st['cv_max']:.3f})")
    print()
    print("| B | speedup | meancache-pssp | reuse-pssp (K=1) | pssp-k1 | meancache-preset (Qwen-Image) | euler-B |")
    print("|---|---|---|---|---|---|---|")
    for b, _, _, r in rows:
        cells = [r["meancache-pssp"], r["reuse-pssp"], r["pssp-k1"], r["meancache-preset"], r[f"euler-{b}"]]
        best = min(cells)
        txt = [f"**{c:.2e}**" if c == best else f"{c:.2e}" for c in cells]
        print(f"| {b} | {N / b:.2f}x | " + " | ".join(txt) + " |")
    print()
    for b, s, s1, _ in rows:
        steps, ks = s.to_official()
        print(f"B={b} solved: steps {steps}, K {ks}, objective {s.meta['objective']:.3e}")
        print(f"B={b} solved K=1: steps {s1.compute_steps}")


if __name__ == "__main__":
    main()
