"""Variable-step Adams in sigma as a B-step solver (meancache_kernels.diffusers.FlowMatchAdamsScheduler, and a
corrector variant that is only a prototype here) against UniPC-B and Euler-B on a trained tiny FluxPipeline. Does
integrating the interpolated velocity exactly get closer to the converged solution than UniPC does?

    python -m bench.studies.adams_prototype         # shipped model, N = 50, B = 25 / 17 / 10 (about 1 min)
    python -m bench.studies.adams_prototype --model bench/tiny_flux_seed1 --steps 28 --budgets 14,10,7
    (bench/results/adams.md: the four runs of bench/RESULTS.md, each with --out bench/results/adams.md)

Every method makes B transformer calls on the pipeline's own B-step sigmas (FluxPipeline's shifted grid; UniPC
uses diffusers' flow sigmas with the same dynamic shift, as in bench.frontier). ``Adams p`` (p = 1, 2, 3; the
library's ``FlowMatchAdamsScheduler(adams_order=p)``): from sigma_i to sigma_{i+1} the state moves by the exact
integral of the Lagrange polynomial through the last p + 1 computed velocities (fewer at the start); ``+c`` (this
file's prototype, not in the library): once v_{i+1} is known, the state at sigma_{i+1} is re-integrated from sigma_i
with the polynomial through the last p + 1 velocities including v_{i+1} (no extra call: v_{i+1} stays the one
evaluated at the predicted state, as in UniPC's corrector). Judged by mean PSNR over bench.frontier's 8
evaluation prompts against the uncached N-step Euler output and against 4N Euler steps (the converged reference).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from .. import frontier as F


def _integral_weights(nodes, a, b):
    """w with integral_a^b P(s) ds = sum_k w_k y_k for the Lagrange polynomial through (nodes[k], y_k)."""
    nodes = np.asarray(nodes, np.float64)
    out = []
    for k in range(len(nodes)):
        others = np.delete(nodes, k)
        coef = np.poly(others) / np.prod(nodes[k] - others) if len(nodes) > 1 else np.array([1.0])
        prim = np.polyint(coef)
        out.append(float(np.polyval(prim, b) - np.polyval(prim, a)))
    return out


def adams_scheduler(euler, order: int, corrector: bool):
    """A FlowMatchEulerDiscreteScheduler whose step() is the Adams update above (deterministic, no noise)."""
    cls = type(euler)

    class Adams(cls):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
            out = super().set_timesteps(num_inference_steps=num_inference_steps, device=device, sigmas=sigmas, mu=mu,
                                        timesteps=timesteps)
            self._hist = []  # (sigma, v) of the computed steps
            self._prev = None  # (sigma_i, z_i) of the previous step, for the corrector
            return out

        def step(self, model_output, timestep, sample, return_dict=True, **kwargs):
            if self.step_index is None:
                self._init_step_index(timestep)
            i = self.step_index
            s = self.sigmas.double().tolist()
            z = sample.double()
            v = model_output.double()
            if corrector and self._prev is not None:
                s_prev, z_prev = self._prev
                nodes = [h[0] for h in self._hist][-order:] + [s[i]]
                ys = [h[1] for h in self._hist][-order:] + [v]
                w = _integral_weights(nodes, s_prev, s[i])
                z = z_prev + sum(wk * yk for wk, yk in zip(w, ys))
            self._hist.append((s[i], v))
            self._hist = self._hist[-(order + 1):]
            nodes = [h[0] for h in self._hist]
            w = _integral_weights(nodes, s[i], s[i + 1])
            self._prev = (s[i], z)
            z_next = z + sum(wk * h[1] for wk, h in zip(w, self._hist))
            self._step_index += 1
            out = z_next.to(sample.dtype)
            if not return_dict:
                return (out,)
            from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
                FlowMatchEulerDiscreteSchedulerOutput,
            )
            return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=out)

    return Adams.from_config(euler.config)


def main(argv=None) -> int:
    from diffusers import UniPCMultistepScheduler

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--budgets", default="25,17,10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, metavar="MD", help="also append the table to this markdown file")
    args = ap.parse_args(argv)
    lines: list[str] = []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    torch.set_num_threads(args.threads)
    n, budgets = args.steps, [int(b) for b in args.budgets.split(",")]
    pb = F.PipelineBench(args.model, 8, 1, n, budgets, log=lambda s: None)
    ref, _ = pb.generate()
    conv, _ = pb.generate(4 * n)

    def score(imgs):
        return (float(np.mean([F.psnr(a, b) for a, b in zip(imgs, ref)])),
                float(np.mean([F.psnr(a, b) for a, b in zip(imgs, conv)])))

    say(f"`python -m bench.studies.adams_prototype {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cpu-{os.cpu_count()}c): model "
        f"{args.model or 'shipped'}, N = {n}; mean PSNR [dB] against the uncached N-step output / against {4 * n} "
        f"Euler steps (converged); every row B transformer calls (counted). The uncached N-step output is "
        f"{score(ref)[1]:.2f} dB from the converged one.")
    say("")
    say("| method | " + " | ".join(f"B={b}" for b in budgets) + " |")
    say("|---|" + "---|" * len(budgets))
    methods = [("Euler-B", lambda: pb.euler)]
    methods += [(f"UniPC-B order {o}", lambda o=o: UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
        time_shift_type="exponential", solver_order=o)) for o in (1, 2, 3)]
    from meancache_kernels.diffusers import FlowMatchAdamsScheduler

    for p in (1, 2, 3):
        methods.append((f"Adams {p}", lambda p=p: FlowMatchAdamsScheduler.from_config(pb.euler.config, adams_order=p)))
        methods.append((f"Adams {p}+c", lambda p=p: adams_scheduler(pb.euler, p, True)))
    for name, make in methods:
        cells = []
        for b in budgets:
            with pb.scheduler(make()):
                imgs, _ = pb.generate(b)
            calls = pb.counter.forwards
            assert calls == b, (name, b, calls)
            a, c = score(imgs)
            cells.append(f"{a:.2f} / {c:.2f}")
        say(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
