"""The analytic part: the registry's solvers and every MeanCache variant on a Gaussian-mixture flow
(meancache_kernels.testing.GaussianMixtureFlow, float64, exact velocity), judged by the relative RMSE of the final
latent against the N-step Euler output and against a converged reference (classical RK4, 400 steps)."""

from __future__ import annotations

import time

import torch

from . import methods as M
from .common import TOLERANCE, Row


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
    import meancache_kernels as mck
    from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

    shift, seed = spec["shift"], spec["seed"]
    if "name" in spec:  # a realistic flow (meancache_kernels.testing.REALISTIC_FLOWS)
        from meancache_kernels.testing import realistic_flow

        flow = CountingFlow(realistic_flow(spec["name"], seed=seed))
    else:
        flow = CountingFlow(GaussianMixtureFlow.random(spec["dim"], components=spec["components"], seed=seed))
    dim = flow.flow.dim
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

    z_learn = latents(1, 4)

    def one_line(b):
        mc = mck.MeanCache(b)
        mc.sample(flow.flow, z_learn, sig)  # the learning generation (one latent), not counted
        (entry,) = mc.learned.values()
        return mc.sample(flow, z_eval, sig), f"{M.describe(entry.schedule)}; learnt: {entry.info['choice']}"

    for b in budgets:
        add("MeanCache", M.ONE_LINE, b, lambda: one_line(b))
        add("Euler", "Euler, B steps", b,
            lambda: (mck.sample(flow, z_eval, flow_sigmas(b, shift=shift), mck.Schedule.full(b)), f"{b} steps"))
        for order in M.UNIPC_ORDERS:
            add("UniPC", f"UniPC order {order}, B steps", b, sched_run(lambda o=order: M.unipc(o, flow_shift=shift), b))
        for order in M.DPM_ORDERS:
            add("DPM", f"DPM-Solver++ {order}M, B steps", b, sched_run(lambda o=order: M.dpm(o, flow_shift=shift), b))
        add("Heun", "Heun, (B+1)//2 steps", b,
            lambda: (heun(flow, z_eval, flow_sigmas(M.heun_steps(b), shift=shift))[0], f"{M.heun_steps(b)} steps"))
        for order in M.ADAMS_ORDERS:
            add("Adams", f"Adams order {order} (this library), B steps", b,
                sched_run(lambda o=order: M.adams(None, o)(), b))
        for name, make in M.meancache_methods(profile, b, num_steps, tune if hasattr(mck, "tune") else None):
            def fn(make=make):
                s = make()
                flow.calls = 0  # tuning runs the flow on the tuning latents: not part of the sampling cost
                return mck.sample(flow, z_eval, sig, s), M.describe(s)
            add("MeanCache", name, b, fn)
    meta = dict(spec, num_steps=num_steps, eval=n_eval, cal=n_cal, tune=n_tune, calibration_s=t_cal,
                euler_n_vs_conv=rel(ref, conv), conv_400_vs_800=rel(conv, conv_check))
    return rows, meta
