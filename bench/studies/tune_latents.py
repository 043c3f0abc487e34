"""Tuning at a real model's price, the cheap way (issue 22, item 3): ``mck.tune`` on fewer tuning latents.

    python -m bench.studies.tune_latents      # -> stdout; bench/results/tune_latents.md (~1 min on 2 cores)

On three realistic analytic flows (power-flux, power-mild, late-mixture; shift 3) at 17 and 10 of 50 and 9 of 28:
the paper's PSSP jvp on an 8-latent calibration, and tune() on 8, 2 and 1 tuning latents (its extra model calls
counted, per sample, as ``tuned.meta["tune"]["model_calls"]``), judged on 16 evaluation latents by the final
latent's error against the N-step Euler output in dB (mean / worst).
"""

import time

import torch

import meancache_kernels as mck
from meancache_kernels.calibration import profile_from_trajectories
from meancache_kernels.testing import flow_sigmas, realistic_flow


def db(out, ref) -> tuple[float, float]:
    """Mean and worst dB of the final latents' relative error."""
    a, b = out.reshape(out.shape[0], -1), ref.reshape(ref.shape[0], -1)
    d = -20 * torch.log10((a - b).norm(dim=1) / b.norm(dim=1))
    return d.mean().item(), d.min().item()


def main() -> int:
    torch.set_num_threads(1)
    for fname in ("power-flux", "power-mild", "late-mixture"):
        flow = realistic_flow(fname)
        for n, b in ((50, 17), (50, 10), (28, 9)):
            sig = flow_sigmas(n, 3.0)
            g = torch.Generator().manual_seed(1000)
            z_eval = torch.randn(16, flow.dim, generator=g, dtype=torch.float64)
            z_cal = torch.randn(8, flow.dim, generator=g, dtype=torch.float64)
            z_tune = torch.randn(8, flow.dim, generator=g, dtype=torch.float64)
            ref = mck.sample(flow, z_eval, sig, mck.Schedule.full(n), backend="torch")
            zs, vs = [z_cal], []
            mck.sample(flow, z_cal, sig, mck.Schedule.full(n), backend="torch",
                       callback=lambda i, zn, v, c: (zs.append(zn), vs.append(v)))
            prof = profile_from_trajectories([(torch.stack(zs), torch.stack(vs))], sig)
            paper = db(mck.sample(flow, z_eval, sig, mck.solve(prof, b, estimators=("jvp",)), backend="torch"), ref)
            line = f"{fname} {n}/{b} paper {paper[0]:.1f}/{paper[1]:.1f}"
            for k in (8, 2, 1):
                t = time.time()
                tuned = mck.tune(flow, z_tune[:k], sig, prof, b, progress=False)
                calls = int(tuned.meta["tune"].get("model_calls", 0))
                q = db(mck.sample(flow, z_eval, sig, tuned, backend="torch"), ref)
                line += f" | tune{k}: {q[0]:.1f}/{q[1]:.1f} calls {calls} ({time.time()-t:.0f}s)"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
