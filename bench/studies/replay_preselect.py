"""Tuning at a real model's price (issue 22, item 3), measured before building: rank tune()'s candidates by replay on
the tuning samples' recorded full-step trajectories (no model call), run only the top k for real, and compare the
pick with full tuning, in quality and in model calls.

    python -m bench.studies.replay_preselect [--smoke]      # analytic flows, ~3 min on 2 cores

Per flow and budget: the profile from 8 calibration latents; ``mck.tuning.candidate_schedules`` (the calibration-free
rule included); full tuning = every candidate run on the 8 tuning latents (B calls each), the pick by mean error;
pre-selected = the k candidates with the lowest replayed error, then the same real evaluation among them. Judged on
16 evaluation latents (dB of the final latent's relative error, mean). Calls = model calls of the selection
(candidates x tuning latents x B), the references (8 N) excluded as both need them.
"""

from __future__ import annotations

import argparse

import torch

import meancache_kernels as mck
from meancache_kernels.calibration import profile_from_trajectories
from meancache_kernels.learning import replay
from meancache_kernels.testing import flow_sigmas, realistic_flow
from meancache_kernels.tuning import candidate_schedules

KS = (3, 6)


def _db(x, ref):
    e = (x - ref).reshape(x.shape[0], -1).norm(dim=1) / ref.reshape(ref.shape[0], -1).norm(dim=1)
    return float((-20 * torch.log10(e.clamp_min(1e-15))).mean())


def trajectory(f, z, s):
    zs, vs = [z], []
    mck.sample(f, z, s, mck.Schedule.full(len(s) - 1), backend="torch",
               callback=lambda i, zn, v, c: (zs.append(zn), vs.append(v)))
    return torch.stack(zs), torch.stack(vs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.replay_preselect")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    flows = ("power-mild",) if args.smoke else ("power-flux", "power-strong", "power-mild", "late-mixture")
    settings = ((12, (6,)),) if args.smoke else ((50, (25, 17, 10)), (28, (14, 9, 6)))
    print("| flow | N/B | candidates | full tuning: dB / calls | " + " | ".join(
        f"top {k} by replay: dB / calls" for k in KS) + " |")
    print("|---|---|---|---|" + "---|" * len(KS))
    for name in flows:
        f = realistic_flow(name)
        for n, budgets in settings:
            s = flow_sigmas(n, 3.0)
            g = torch.Generator().manual_seed(7)
            z_cal, z_tune, z_eval = (torch.randn(k, f.dim, generator=g, dtype=torch.float64) for k in (8, 8, 16))
            cal, tune_traj = trajectory(f, z_cal, s), trajectory(f, z_tune, s)
            ref_eval = mck.sample(f, z_eval, s, mck.Schedule.full(n), backend="torch")
            profile = profile_from_trajectories([cal], s)
            for b in budgets:
                cands = candidate_schedules(profile, b)
                cands["default rule"] = mck.default_schedule(s, b)
                real = {k: _db(mck.sample(f, z_tune, s, c, backend="torch"), tune_traj[0][-1])
                        for k, c in cands.items()}
                replayed = {k: _db(replay(c, *tune_traj, s, backend="torch"), tune_traj[0][-1])
                            for k, c in cands.items()}
                order = sorted(cands, key=replayed.get, reverse=True)

                def pick_among(names):
                    best = max(names, key=real.get)
                    return _db(mck.sample(f, z_eval, s, cands[best], backend="torch"), ref_eval)

                cells = [f"{pick_among(list(cands)):.1f} / {len(cands) * 8 * b}"]
                cells += [f"{pick_among(order[:k]):.1f} / {k * 8 * b}" for k in KS]
                print(f"| {name} | {n}/{b} | {len(cands)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
