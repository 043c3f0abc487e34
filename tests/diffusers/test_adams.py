"""FlowMatchAdamsScheduler: exact on velocities polynomial in sigma up to its degree, Euler at order 0, one model
call per step in a pipeline, refused by MeanCache, bad input named."""

import math
import warnings

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

from meancache_kernels.diffusers import FlowMatchAdamsScheduler, MeanCacheConfig, apply_mean_cache  # noqa: E402
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline  # noqa: E402


def _run(sched, field, z0, steps=12, mu=None):
    sched.set_timesteps(steps, mu=mu) if mu is not None else sched.set_timesteps(steps)
    z = z0.clone()
    for t in sched.timesteps:
        s = float(sched.sigmas[sched.step_index if sched.step_index is not None else 0])
        z = sched.step(field(s, z), t, z).prev_sample
    return z


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_exact_for_a_velocity_polynomial_in_sigma_of_its_degree(order):
    # v(s) = sum_k c_k s^k of degree `order`: once order + 1 velocities are known (step index >= order) every step
    # moves z by exactly the integral of v over [s_i, s_{i+1}]; the earlier steps use fewer nodes (degree i)
    gen = torch.Generator().manual_seed(order)
    coeffs = torch.randn(order + 1, 5, 7, dtype=torch.float64, generator=gen)

    def v(s):
        return sum(c * s**k for k, c in enumerate(coeffs)).float()

    def prim(s):
        return sum(c * s ** (k + 1) / (k + 1) for k, c in enumerate(coeffs))

    sched = FlowMatchAdamsScheduler(shift=3.0, adams_order=order)
    sched.set_timesteps(12)
    sig = sched.sigmas.double().tolist()
    z = torch.randn(5, 7, generator=gen)
    for i, t in enumerate(sched.timesteps):
        z_next = sched.step(v(sig[i]), t, z).prev_sample
        inc = (z_next.double() - z.double())
        exact = prim(sig[i + 1]) - prim(sig[i])
        if i >= order:
            torch.testing.assert_close(inc, exact, rtol=1e-4, atol=1e-5 * float(exact.abs().max()) + 1e-7)
        else:
            assert (inc - exact).abs().max() > 1e-6  # the start-up steps are of lower degree
        z = z_next
    # and one degree more is not reproduced
    if order < 3:
        extra = torch.randn(5, 7, dtype=torch.float64, generator=gen)
        sched.set_timesteps(12)
        errs = []
        for i, t in enumerate(sched.timesteps):
            w = (sum(c * sig[i] ** k for k, c in enumerate(coeffs)) + extra * sig[i] ** (order + 1)).float()
            z_next = sched.step(w, t, z).prev_sample
            exact = prim(sig[i + 1]) - prim(sig[i]) + extra * (sig[i + 1] ** (order + 2) - sig[i] ** (order + 2)) / (
                order + 2)
            errs.append(float((z_next.double() - z.double() - exact).abs().max()))
            z = z_next
        assert max(errs[order + 1:]) > 1e-4


def test_order_zero_is_the_euler_scheduler():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, generator=gen)

    def field(s, z):
        return torch.tanh(z) * s + a  # depends on z: the schedulers must agree step by step

    z0 = torch.randn(4, 6, generator=gen)
    euler = FlowMatchEulerDiscreteScheduler(shift=2.0, use_dynamic_shifting=True)
    adams = FlowMatchAdamsScheduler.from_config(euler.config, adams_order=0)
    assert adams.config.shift == 2.0 and adams.config.use_dynamic_shifting
    torch.testing.assert_close(_run(adams, field, z0, mu=0.7), _run(euler, field, z0, mu=0.7), rtol=0, atol=1e-6)
    # order 1 on a field that depends on z: closer to a fine Euler solution than Euler with the same steps
    fine = _run(FlowMatchEulerDiscreteScheduler(shift=2.0), field, z0, steps=2000)
    e = (_run(FlowMatchEulerDiscreteScheduler(shift=2.0), field, z0) - fine).norm()
    ab = (_run(FlowMatchAdamsScheduler(shift=2.0, adams_order=1), field, z0) - fine).norm()
    assert ab < 0.5 * e


def test_in_a_pipeline_one_call_per_step_and_refused_by_meancache():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = tiny_pipeline("flux")
    calls = []
    handle = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    euler_out = pipe(**tiny_call_kwargs("flux", num_inference_steps=7))[0]
    pipe.scheduler = FlowMatchAdamsScheduler.from_config(pipe.scheduler.config, adams_order=1)
    calls.clear()
    out = pipe(**tiny_call_kwargs("flux", num_inference_steps=7))[0]
    assert len(calls) == 7 and out.shape == euler_out.shape and torch.isfinite(out).all()
    assert (out - euler_out).abs().max() > 1e-4
    again = pipe(**tiny_call_kwargs("flux", num_inference_steps=7))[0]  # set_timesteps resets the history
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    handle.remove()
    # MeanCache runs under it with the estimators that predict the velocity itself; the paper's jvp is Euler-only
    with pytest.raises(TypeError, match=r"taylor1.*taylor2"):
        apply_mean_cache(pipe, MeanCacheConfig(preset="qwen-image", budget=10))
    assert getattr(pipe, "_meancache_context", None) is None


def test_bad_input_is_named():
    for bad in (4, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="adams_order"):
            FlowMatchAdamsScheduler(adams_order=bad)
    with pytest.raises(ValueError, match="stochastic_sampling"):
        FlowMatchAdamsScheduler(stochastic_sampling=True)
    s = FlowMatchAdamsScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(2, 3), torch.tensor(1.0), torch.zeros(2, 3))
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="model_output and sample"):
        s.step(torch.zeros(2, 3), s.timesteps[0], torch.zeros(2, 4))
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="s_churn"):
        s.step(z, s.timesteps[0], z, s_churn=1.0)
    with pytest.raises(ValueError, match="timestep"):
        s.step(z, 3, z)
    assert math.isclose(float(s.sigmas[-1]), 0.0)
