import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas, official_sample, smooth_random_field

PRESETS = [(m, b) for m, bs in mck.presets.available().items() for b in bs]


@pytest.mark.parametrize("model,budget", PRESETS)
@pytest.mark.parametrize("field", ["smooth", "mixture"])
def test_sample_matches_official_loop_float64(model, budget, field):
    schedule = mck.presets.get(model, budget)
    steps, ks = schedule.compute_steps, schedule.meta["official_spans"]
    dim = 24
    if field == "smooth":
        fn = smooth_random_field(dim, seed=budget)
    else:
        fn = GaussianMixtureFlow.random(dim, components=5, seed=budget)
    sigmas = flow_sigmas(50, shift=3.0)
    z = torch.randn(3, dim, dtype=torch.float64)
    ours = mck.sample(fn, z, sigmas, schedule)
    ref = official_sample(fn, z, sigmas, steps, ks)
    full = mck.sample(fn, z, sigmas, mck.Schedule.full(50))
    assert ours.dtype == torch.float64
    # the caches do change the result (so the comparison is not vacuous) ...
    assert (ours - full).abs().max() > 1e-4
    # ... and ours is the release's loop to round-off
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_sample_any_latent_shape_matches_flat():
    schedule = mck.presets.get("z-image", 13)
    fn = smooth_random_field(3 * 4 * 5, seed=1)
    sigmas = flow_sigmas(50)
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    out = mck.sample(fn, z, sigmas, schedule)
    ref = official_sample(fn, z, sigmas, schedule.compute_steps, schedule.to_official()[1])
    assert out.shape == z.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_latents_use_float32_arithmetic(dtype):
    """Half-precision latents keep their dtype, but every estimate and Euler step is computed in float32 and stored
    back: the result equals the release's loop run with float32 arithmetic on the same stored dtype, and differs
    from running the arithmetic in the latents' own precision."""
    schedule = mck.presets.get("qwen-image", 10)
    fn = GaussianMixtureFlow.random(16, seed=3)
    sigmas = flow_sigmas(50)
    z = torch.randn(4, 16, dtype=torch.float64).to(dtype)
    out = mck.sample(fn, z, sigmas, schedule)
    assert out.dtype == dtype
    args = (fn, z, sigmas, schedule.compute_steps, schedule.to_official()[1])
    f32 = official_sample(*args, work_dtype=torch.float32)
    torch.testing.assert_close(out, f32, rtol=0, atol=0)
    if dtype != torch.float32:
        assert not torch.equal(out, official_sample(*args))


def test_state_history_is_bounded():
    schedule = mck.presets.get("qwen-image", 10)
    sigmas = flow_sigmas(50)
    fn = smooth_random_field(8)
    state = mck.MeanCacheState(schedule, sigmas)
    z = torch.randn(2, 8, dtype=torch.float64)
    k_max = schedule.k_max
    assert k_max == 4
    max_entries = 0
    max_latents = 0
    for i in range(50):
        if state.should_compute(i):
            z = state.step(i, z, fn(z, state.sigmas[i]))
        else:
            _, z = state.skip(i, z)
        max_entries = max(max_entries, len(state.history))
        max_latents = max(max_latents, state.num_latents_held())
        assert all(isinstance(t, torch.Tensor) and t.shape == z.shape for _, a, b in state.history for t in (a, b))
    assert max_entries <= k_max + 1
    assert max_entries == k_max  # it does fill up to K_max
    assert max_latents <= 2 * (k_max + 1)


def test_estimate_then_step_equals_skip():
    schedule = mck.Schedule.from_official([0, 1, 4, 6], [0, 2, 1, 1], 8)
    sigmas = flow_sigmas(8)
    fn = smooth_random_field(6, seed=2)
    z0 = torch.randn(3, 6, dtype=torch.float64)
    ref = mck.sample(fn, z0, sigmas, schedule)
    state = mck.MeanCacheState(schedule, sigmas)
    z = z0
    for i in range(8):
        v = fn(z, state.sigmas[i]) if state.should_compute(i) else state.estimate(i, z)
        z = state.step(i, z, v)
    torch.testing.assert_close(z, ref, rtol=0, atol=0)


def test_reset_and_order():
    schedule = mck.Schedule.from_compute_steps([0, 2], 4, span=1)
    state = mck.MeanCacheState(schedule, flow_sigmas(4))
    z = torch.zeros(1, 2)
    with pytest.raises(RuntimeError, match="expects step 0"):
        state.step(1, z, z)
    state.step(0, z, torch.ones(1, 2))
    state.skip(1, z)
    with pytest.raises(RuntimeError, match="computed step"):
        state.estimate(2, z)
    state.reset()
    assert state.next_step == 0 and len(state.history) == 0


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_step_after_the_last_is_a_clear_error(adaptive):
    from meancache_kernels.adaptive import AdaptiveState

    n = 4
    state = (AdaptiveState(flow_sigmas(n), budget=2) if adaptive
             else mck.MeanCacheState(mck.Schedule.uniform(n, 2, "taylor1"), flow_sigmas(n)))
    z, v = torch.zeros(1, 2), torch.ones(1, 2)
    for i in range(n):
        z = state.step(i, z, v) if state.should_compute(i) else state.skip(i, z)[1]
    for call in (lambda: state.skip(n, z), lambda: state.estimate(n, z), lambda: state.step(n, z, v),
                 lambda: state.record(n, z, v)):
        with pytest.raises(IndexError, match="i=4 is out of range for 4 steps: the generation is over"):
            call()


def test_sample_bad_inputs():
    schedule = mck.presets.get("qwen-image", 10)
    fn = smooth_random_field(4)
    z = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="sigmas must hold N \\+ 1 = 51"):
        mck.sample(fn, z, flow_sigmas(40), schedule)
    bad = flow_sigmas(50).clone()
    bad[10] = bad[9]
    with pytest.raises(ValueError, match="strictly decreasing"):
        mck.sample(fn, z, bad, schedule)
    with pytest.raises(ValueError, match="end at 0"):
        mck.sample(fn, z, torch.linspace(1.0, 0.1, 51), schedule)
    with pytest.raises(TypeError, match="schedule must be"):
        mck.MeanCacheState([True] * 50, flow_sigmas(50))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        mck.sample(fn, [0.0] * 4, flow_sigmas(50), schedule)
    with pytest.raises(ValueError, match="model_fn must return"):
        mck.sample(lambda x, s: x[:, :2], z, flow_sigmas(50), schedule)
    with pytest.raises(ValueError, match="backend must be one of"):
        mck.MeanCacheState(schedule, flow_sigmas(50), backend="cuda")
    with pytest.raises(IndexError, match="out of range"):
        mck.MeanCacheState(schedule, flow_sigmas(50)).should_compute(50)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_cuda_matches_cpu():
    schedule = mck.presets.get("qwen-image", 17)
    fn = GaussianMixtureFlow.random(32, seed=5)
    sigmas = flow_sigmas(50)
    z = torch.randn(4, 32)
    cpu = mck.sample(fn, z, sigmas, schedule)
    gpu = mck.sample(fn, z.cuda(), sigmas, schedule)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_record_equals_step_bookkeeping():
    """record() keeps the same history as step() (for loops whose Euler update happens elsewhere)."""
    schedule = mck.Schedule.from_official([0, 2, 3], [2, 0, 2], 5)
    sigmas = flow_sigmas(5)
    fn = smooth_random_field(4, seed=7)
    z0 = torch.randn(2, 4, dtype=torch.float64)
    ref = mck.sample(fn, z0, sigmas, schedule)
    state = mck.MeanCacheState(schedule, sigmas)
    z = z0
    for i in range(5):
        if state.should_compute(i):
            v = fn(z, state.sigmas[i])
            state.record(i, z, v)
            z = z + (state.sigmas[i + 1] - state.sigmas[i]) * v
        else:
            _, z = state.skip(i, z)
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-15)


def test_step_reuses_fused_result_only_for_the_same_unmodified_inputs():
    schedule = mck.Schedule.from_official([0, 1], [0, 1], 3)
    sigmas = [1.0, 0.5, 0.25, 0.0]
    z0 = torch.ones(2, dtype=torch.float64)

    def fresh():
        state = mck.MeanCacheState(schedule, sigmas)
        z1 = state.step(0, z0, torch.ones(2, dtype=torch.float64))  # z1 = 1 - 0.5 = 0.5
        z2 = state.step(1, z1, torch.ones(2, dtype=torch.float64))  # z2 = 0.5 - 0.25 = 0.25
        return state, z2

    state, z2 = fresh()
    v_hat = state.estimate(2, z2)
    assert torch.equal(v_hat, torch.ones(2, dtype=torch.float64))  # K=1 on an Euler trajectory: plain reuse
    torch.testing.assert_close(state.step(2, z2, v_hat), torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)

    state, z2 = fresh()
    v_hat = state.estimate(2, z2)
    v_hat.mul_(3)  # modified in place after the estimate: the fused z_next must not be reused
    torch.testing.assert_close(state.step(2, z2, v_hat), torch.full((2,), -0.5, dtype=torch.float64), rtol=0, atol=0)

    state, z2 = fresh()
    v_hat = state.estimate(2, z2)
    other = z2 + 1.0  # a different latent: Euler from it, not the pending result
    torch.testing.assert_close(state.step(2, other, v_hat), torch.ones(2, dtype=torch.float64), rtol=0, atol=0)


def test_state_bad_inputs():
    state = mck.MeanCacheState(mck.Schedule.from_compute_steps([0, 2], 4), flow_sigmas(4))
    with pytest.raises(TypeError, match="step index i must be an int"):
        state.should_compute("a")
    with pytest.raises(TypeError, match="step index i must be an int"):
        state.should_compute(1.0)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        state.record(0, [1.0], torch.zeros(1))
    with pytest.raises(ValueError, match="v must have the shape of z"):
        state.step(0, torch.zeros(2), torch.zeros(3))
    with pytest.raises(TypeError, match="callback must be callable"):
        mck.sample(smooth_random_field(2), torch.zeros(1, 2), flow_sigmas(4), state.schedule, callback=3)
