"""Adaptive MeanCache (meancache_kernels.adaptive): budget and tolerance controllers, one decision per batch."""

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.adaptive import AdaptiveState, budget_schedule, sample_adaptive
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas, smooth_random_field


def _counting(fn):
    calls = []

    def model(z, sigma):
        calls.append(sigma)
        return fn(z, sigma)

    return model, calls


def _flow(dim=12, seed=3):
    return GaussianMixtureFlow.random(dim, components=4, seed=seed)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 28, 50])
@pytest.mark.parametrize("estimator", ["taylor2", "taylorc2", "mean1"])
def test_budget_mode_makes_exactly_b_calls(n, estimator):
    flow = _flow()
    sigmas = flow_sigmas(n, shift=3.0)
    z = torch.randn(4, flow.dim, dtype=torch.float64)
    for b in sorted({1, 2, 3, n // 3, n // 2, n - 1, n} & set(range(1, n + 1))):
        model, calls = _counting(flow)
        out, info = sample_adaptive(model, z, sigmas, budget=b, estimator=estimator)
        assert len(calls) == b == info["calls"], (n, b)
        sched = info["schedule"]
        assert sched.num_steps == n and sched.budget == b and sched.compute[0]
        assert [sigmas[i].item() for i in sched.compute_steps] == calls  # the realised schedule is what ran
        assert torch.isfinite(out).all()
        if b == n:  # B = N is the plain Euler sampler
            assert torch.equal(out, mck.sample(flow, z, sigmas, mck.Schedule.full(n)))


@pytest.mark.parametrize("estimator", ["taylor2", "taylorc2", "taylor1", "mean2"])
def test_budget_mode_equals_its_static_schedule_bit_for_bit(estimator):
    # The budget plan depends on the sigmas only: MeanCacheState with budget_schedule() gives the same latents.
    flow = _flow(16, seed=5)
    sigmas = flow_sigmas(50, shift=3.0)
    z = torch.randn(6, flow.dim, dtype=torch.float64)
    for b in (5, 10, 17, 25):
        out, info = sample_adaptive(flow, z, sigmas, budget=b, estimator=estimator)
        sched = budget_schedule(sigmas, b, estimator)
        assert sched == info["schedule"] and sched.budget == b
        assert torch.equal(out, mck.sample(flow, z, sigmas, sched))


def test_budget_plan_is_spaced_by_sigma_and_ends_computed():
    sched = budget_schedule(flow_sigmas(50, shift=3.0), 10, "taylor2")
    steps = sched.compute_steps
    assert steps[:2] == [0, 1] and steps[-1] >= 47  # denser where sigma steps are large (the end)
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps == sorted(gaps, reverse=True)


def test_tol_zero_is_plain_euler_bit_for_bit():
    for fn, dim in ((_flow(10), 10), (smooth_random_field(10, seed=2), 10)):
        sigmas = flow_sigmas(28, shift=3.0)
        z = torch.randn(5, dim, dtype=torch.float32)
        model, calls = _counting(fn)
        out, info = sample_adaptive(model, z, sigmas, tol=0, estimator="taylorc2")
        assert info["calls"] == 28 == len(calls) and info["errors"] == {}  # no host read at tol = 0
        assert torch.equal(out, mck.sample(fn, z, sigmas, mck.Schedule.full(28)))


def test_tol_mode_controls_the_measured_error_and_calls_grow_as_tol_shrinks():
    flow = _flow(16, seed=7)
    sigmas = flow_sigmas(50, shift=3.0)
    z = torch.randn(8, flow.dim, dtype=torch.float64)
    ref = mck.sample(flow, z, sigmas, mck.Schedule.full(50))
    calls, errs = [], []
    for tol in (0.3, 0.1, 0.01, 1e-3):
        out, info = sample_adaptive(flow, z, sigmas, tol=tol)
        calls.append(info["calls"])
        errs.append(((out - ref).norm() / ref.norm()).item())
        assert 1 < info["calls"] < 50
        # an error is read at every computed step after the first but the last
        assert len(info["errors"]) == info["calls"] - 1 - info["schedule"].compute[-1]
    assert calls == sorted(calls) and calls[0] < calls[-1]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4


def test_one_host_read_per_computed_step_none_on_skipped(monkeypatch):
    flow = _flow()
    sigmas = flow_sigmas(30, shift=3.0)
    z = torch.randn(3, flow.dim, dtype=torch.float64)
    reads = []
    orig = torch.Tensor.item

    def item(self):
        reads.append(self.numel())
        return orig(self)

    monkeypatch.setattr(torch.Tensor, "item", item)
    state = AdaptiveState(sigmas, tol=0.05)
    for i in range(30):
        before = len(reads)
        if state.should_compute(i):
            z = state.step(i, z, flow(z, state.sigmas[i]))
            assert len(reads) - before <= 1
        else:
            _, z = state.skip(i, z)
            assert len(reads) == before
    assert reads and set(reads) == {1} and len(reads) == len(state.errors) < state.calls
    reads.clear()
    _, info = sample_adaptive(flow, z, sigmas, budget=8)  # budget mode: no host read at all
    assert reads == [] and info["errors"] == {}


def test_decisions_are_global_for_the_batch():
    # One decision sequence for the whole batch: permuting the batch gives the same schedule and the permuted
    # outputs, and every sample equals the static sampler run alone on the realised schedule.
    flow = _flow(16, seed=11)
    sigmas = flow_sigmas(50, shift=3.0)
    z = torch.randn(9, flow.dim, dtype=torch.float64)
    perm = torch.randperm(9)
    for kw in (dict(tol=0.05), dict(tol=0.2, estimator="taylorc2"), dict(budget=10)):
        out, info = sample_adaptive(flow, z, sigmas, **kw)
        out_p, info_p = sample_adaptive(flow, z[perm], sigmas, **kw)
        assert info_p["schedule"] == info["schedule"]
        torch.testing.assert_close(out_p, out[perm], rtol=0, atol=1e-12)
        realised = info["schedule"]
        assert set(realised.estimator_names()) == {"", kw.get("estimator", "taylor2")}
        for k in (0, 4):
            torch.testing.assert_close(mck.sample(flow, z[k:k + 1], sigmas, realised), out[k:k + 1], rtol=0,
                                       atol=1e-12)


def test_decisions_depend_on_the_batch_as_a_whole():
    # In tol mode the batch's one scalar decides: a hard sample in the batch changes everyone's schedule.
    sigmas = flow_sigmas(50, shift=3.0)
    easy, hard = _flow(16, seed=1), GaussianMixtureFlow.random(16, components=12, seed=15, spread=4.0)
    z = torch.randn(4, 16, dtype=torch.float64)
    _, a = sample_adaptive(easy, z, sigmas, tol=0.05)
    _, b = sample_adaptive(hard, z, sigmas, tol=0.05)
    assert a["schedule"] != b["schedule"]


def test_state_interface_matches_mean_cache_state():
    flow = _flow()
    sigmas = flow_sigmas(20, shift=3.0)
    z0 = torch.randn(2, flow.dim, dtype=torch.float64)
    ref, _ = sample_adaptive(flow, z0, sigmas, tol=0.05, estimator="taylorc2")
    # estimate() + step(), and record() + an external Euler step (the diffusers scheduler path)
    for mode in ("estimate", "record"):
        state = AdaptiveState(sigmas, tol=0.05, estimator="taylorc2")
        assert state.num_steps == 20
        z = z0
        for i in range(20):
            if state.should_compute(i):
                v = flow(z, state.sigmas[i])
                if mode == "record":
                    zc = state.record(i, z, v)
                    z = zc + (state.sigmas[i + 1] - state.sigmas[i]) * v
                else:
                    z = state.step(i, z, v)
            else:
                v_hat = state.estimate(i, z)
                z = state.step(i, z, v_hat) if mode == "estimate" else state.record(i, z, v_hat) + (
                    state.sigmas[i + 1] - state.sigmas[i]) * v_hat
        torch.testing.assert_close(z, ref, rtol=0, atol=1e-12)
        assert state.schedule_so_far().num_steps == 20 and state.calls == state.schedule_so_far().budget
        state.reset()
        assert state.calls == 0 and state.decisions == [] and state.should_compute(0)


def test_should_compute_reads_host_state_and_order_is_enforced():
    sigmas = flow_sigmas(10, shift=3.0)
    state = AdaptiveState(sigmas, budget=4)
    assert state.should_compute(0)
    with pytest.raises(RuntimeError, match="not decided yet"):
        state.should_compute(5)
    z = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="expects step 0"):
        state.skip(1, z)
    with pytest.raises(RuntimeError, match="computed step"):
        state.skip(0, z)
    z = state.step(0, z, torch.ones_like(z))
    j = state.next_compute
    assert all(not state.should_compute(k) for k in range(1, j)) and state.should_compute(j)
    with pytest.raises(RuntimeError, match="schedule is empty"):
        AdaptiveState(sigmas, tol=0.1).schedule_so_far()


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(budget=0), ValueError, "budget"),
        (dict(budget=11), ValueError, "budget"),
        (dict(budget=2.5), TypeError, "budget"),
        (dict(budget="3"), TypeError, "budget"),
        (dict(budget=True), TypeError, "budget"),
        (dict(tol=-0.1), ValueError, "tol"),
        (dict(tol=float("nan")), ValueError, "tol"),
        (dict(tol="0.1"), TypeError, "tol"),
        (dict(), ValueError, "exactly one of budget= .* and tol="),
        (dict(budget=3, tol=0.1), ValueError, "exactly one of budget= .* and tol="),
        (dict(budget=3, estimator="jvp"), ValueError, "estimator"),
        (dict(budget=3, estimator="taylor7"), ValueError, "taylor7"),
        (dict(budget=3, backend="cuda"), ValueError, "backend"),
        (dict(budget=3, first_gap=0), ValueError, "first_gap"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        AdaptiveState(flow_sigmas(10), **kwargs)


def test_bad_sigmas_and_model_output():
    with pytest.raises(ValueError, match="sigmas"):
        AdaptiveState([1.0, 0.5, 0.6, 0.0], budget=2)
    with pytest.raises(ValueError, match="model_fn must return"):
        sample_adaptive(lambda z, s: z[:1], torch.randn(2, 3), flow_sigmas(4), budget=2)
