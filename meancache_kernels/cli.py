"""The ``meancache`` command.

Subcommands:
    compare   MeanCache vs plain reuse vs full steps on the analytic Gaussian-mixture flow (no model needed)
"""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main"]


# ---------------------------------------------------------------------------------------------------- compare
def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare MeanCache, plain reuse and full steps on the analytic Gaussian-mixture flow",
        description="Integrates the exact rectified flow of a random Gaussian mixture with every step computed, "
        "with MeanCache on published preset schedules, and with plain reuse (K=1) on the same computed steps; "
        "prints the final error against the full-step result and the number of model calls.",
    )
    p.add_argument("--preset", default="qwen-image", help="preset model whose schedules are used (default qwen-image)")
    p.add_argument("--dim", type=int, default=64, help="data dimension (default 64)")
    p.add_argument("--samples", type=int, default=64, help="number of trajectories (default 64)")
    p.add_argument("--shift", type=float, default=3.0, help="sigma shift of the flow-matching schedule (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import torch

    from . import presets
    from .cache import sample
    from .schedule import Schedule
    from .testing import GaussianMixtureFlow, flow_sigmas

    if args.dim < 1 or args.samples < 1:
        raise SystemExit("meancache compare: --dim and --samples must be >= 1")
    budgets = presets.available().get(presets._canonical(args.preset))
    n = presets.NUM_STEPS
    flow = GaussianMixtureFlow.random(args.dim, components=6, seed=args.seed)
    sigmas = flow_sigmas(n, shift=args.shift)
    z = torch.randn(args.samples, args.dim, generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64)

    calls = [0]

    def model(x, s):
        calls[0] += 1
        return flow(x, s)

    t0 = time.perf_counter()
    ref = sample(model, z, sigmas, Schedule.full(n))
    rows = [("full", n, calls[0], 0.0, time.perf_counter() - t0)]
    for b in sorted(budgets, reverse=True):
        sched = presets.get(args.preset, b)
        for name, s in (
            (f"meancache B={b}", sched),
            (f"plain reuse B={b}", Schedule.from_compute_steps(sched.compute_steps, n, span=1)),
            (f"euler {b} steps", None),
        ):
            calls[0] = 0
            t0 = time.perf_counter()
            if s is None:  # plain Euler with B steps on the same shifted sigmas
                out = sample(model, z, flow_sigmas(b, shift=args.shift), Schedule.full(b))
            else:
                out = sample(model, z, sigmas, s)
            err = (out - ref).pow(2).mean().sqrt().item()
            rows.append((name, b, calls[0], err, time.perf_counter() - t0))
    print(f"analytic Gaussian-mixture flow: dim={args.dim}, samples={args.samples}, N={n}, shift={args.shift}, "
          f"schedules: {args.preset} presets")
    print(f"{'method':<22}{'B':>4}{'model calls':>13}{'RMSE vs full':>15}{'time [s]':>10}")
    for name, b, c, err, dt in rows:
        print(f"{name:<22}{b:>4}{c:>13}{err:>15.3e}{dt:>10.3f}")
    return 0


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meancache", description="MeanCache for flow-matching generation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_compare(sub)
    return parser


DEFAULT_COMMAND = "compare"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = [DEFAULT_COMMAND, *argv]
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
