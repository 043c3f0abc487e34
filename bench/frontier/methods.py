"""The method registry: every alternative a user has at a budget of B transformer calls, and every MeanCache variant.

- few-step solvers: Euler-B (the pipeline's own scheduler), UniPC-B (:data:`UNIPC_ORDERS`), DPM-Solver++-B
  (:data:`DPM_ORDERS`), FlowMatchHeun with (B + 1) // 2 steps, the library's FlowMatchAdamsScheduler
  (:data:`ADAMS_ORDERS`);
- caches (diffusers ``enable_cache``): FirstBlockCache and MagCache (a threshold bisected in the given range),
  TaylorSeer (:data:`TAYLOR_MODES`, its fixed schedule picked from a cost model by :func:`taylor_pick`);
- MeanCache: :func:`meancache_methods`.

The pipeline part (pipelines.py) and the analytic part (flows.py) run them; UniPC and DPM-Solver++ take the pipeline's
dynamic shift there and a fixed ``flow_shift`` on the analytic flows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

UNIPC_ORDERS = (1, 2, 3)
DPM_ORDERS = (2, 3)
FIRST_BLOCK_RANGE = (1e-4, 4.0)  # FirstBlockCache threshold bisection range
MAG_RANGE = (1e-4, 10.0)  # MagCache threshold bisection range
# TaylorSeer: (method name, use_lite_mode, max_order)
TAYLOR_MODES = [("TaylorSeer lite, order 1", True, 1), ("TaylorSeer lite, order 2", True, 2),
                ("TaylorSeer full, order 1", False, 1), ("TaylorSeer full, order 2", False, 2)]


# ---------------------------------------------------------------------------------------------------- solvers
def unipc(order: int, flow_shift: float | None = None):
    """UniPCMultistepScheduler on flow sigmas: the pipeline's dynamic shift (``flow_shift`` None: FluxPipeline passes
    ``mu``) or a fixed ``flow_shift`` (the analytic flows)."""
    from diffusers import UniPCMultistepScheduler

    if flow_shift is None:
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
            time_shift_type="exponential", solver_order=order)
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   flow_shift=flow_shift, solver_order=order)


def dpm(order: int, flow_shift: float | None = None):
    """DPM-Solver++ (``order``M) on flow sigmas, shifted as in :func:`unipc`."""
    from diffusers import DPMSolverMultistepScheduler

    if flow_shift is None:
        return DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
            time_shift_type="exponential", algorithm_type="dpmsolver++", solver_order=order)
    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=flow_shift, algorithm_type="dpmsolver++",
                                       solver_order=order)


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


ONE_LINE = "MeanCache one line (learnt, budget=B)"  # MeanCacheConfig(budget=B) after its learning generation
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




# ---------------------------------------------------------------------------------------------------- caches
def first_block_cache(threshold: float):
    from diffusers import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=threshold)


def mag_cache_calibration(num_steps: int):
    """MagCache's own calibration run (it prints the magnitude ratios)."""
    from diffusers import MagCacheConfig

    return MagCacheConfig(calibrate=True, num_inference_steps=num_steps)


def mag_cache(threshold: float, num_steps: int, mag_ratios):
    """MagCache with max_skip_steps 8 and retention_ratio 0.1, so that small budgets are reachable."""
    from diffusers import MagCacheConfig

    return MagCacheConfig(threshold=threshold, max_skip_steps=8, retention_ratio=0.1, num_inference_steps=num_steps,
                          mag_ratios=mag_ratios)


def taylor_config(lite: bool, order: int, warmup: int, interval: int):
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                                 taylor_factors_dtype=torch.float32, use_lite_mode=lite)


def taylor_pick(num_steps: int, skip_cost: float, budget: int) -> tuple[int, int]:
    """(warm-up w, interval k) of TaylorSeer whose modelled cost c + f (N - c) is closest to ``budget`` (c computed
    steps, f = ``skip_cost``, the measured equiv of a skipped step), the default w = 3 preferred on ties."""
    n, f = num_steps, skip_cost
    cands = []
    for w in range(1, min(n, 8) + 1):
        for k in range(1, n + 1):
            c = taylor_computed(n, w, k)
            cands.append((abs(c + f * (n - c) - budget), abs(w - 3), k, w))
    _, _, k, w = min(cands)
    return w, k


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
        if hasattr(mck, "default_schedule"):  # MeanCacheConfig(budget=B, learn=False): no calibration, no tuning
            out.append(("MeanCache default rule (zero-config)",
                        lambda: mck.default_schedule(profile.sigmas, budget)))
        adaptive = getattr(mck, "adaptive", None)
        if adaptive is not None:  # MeanCacheConfig(budget=B, adaptive=True): its decisions are this static plan
            out.append(("MeanCache adaptive (budget)",
                        lambda: adaptive.budget_schedule(profile.sigmas, budget, "taylorc2")))
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
