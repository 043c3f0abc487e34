"""Companion schedulers: a ``copy.deepcopy`` of the adapted scheduler taken inside a generation (LTX-2's audio
scheduler) follows the main generation's computed / skipped steps with its own estimator state; copies taken
outside a generation, and after removal, are plain schedulers."""

import copy

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

from meancache_kernels import MeanCacheState  # noqa: E402
from meancache_kernels.diffusers import MeanCacheConfig, zoo  # noqa: E402
from meancache_kernels.diffusers.context import MeanCacheContext  # noqa: E402
from meancache_kernels.diffusers.scheduler import unwrap_scheduler, wrap_scheduler  # noqa: E402

N, B = 8, 4


class _Pipe:  # the context holds a weak reference to its pipeline; no pipeline call runs here
    pass


def _velocity(x: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    return torch.sin((k + 1) * x + 3.0 * sigma) - 0.5 * x


@pytest.fixture
def adapted():
    pipe, scheduler = _Pipe(), FlowMatchEulerDiscreteScheduler()
    context = MeanCacheContext(MeanCacheConfig(budget=B, learn=False), pipe, scheduler, ("transformer",))
    saved = wrap_scheduler(scheduler, context)
    yield scheduler, context, saved
    context.abort()


def _loop(main, aux, context, z, a, *, aux_first=False):
    """A two-output loop: one 'transformer call' per computed step gives both velocities; a skipped step gets the
    stale outputs of the last computed step (what the MeanCache hook returns). Returns (z, a, calls)."""
    calls, stale = 0, None
    for t in main.timesteps:
        gen = context.generation
        sigma = float(t) / 1000.0
        if gen is None or gen.compute[gen.step]:
            stale = (_velocity(z, sigma, 0), _velocity(a, sigma, 1))
            calls += 1
        v, w = stale
        if aux_first:
            a = aux.step(w, t, a, return_dict=False)[0]
            z = main.step(v, t, z, return_dict=False)[0]
        else:
            z = main.step(v, t, z, return_dict=False)[0]
            a = aux.step(w, t, a, return_dict=False)[0]
    return z, a, calls


def _by_hand(schedule, sigmas, a):
    """The second stream under MeanCache, run by hand on its own MeanCacheState."""
    state = MeanCacheState(schedule, sigmas, backend="torch")
    for i in range(len(sigmas) - 1):
        if state.should_compute(i):
            a = state.step(i, a, _velocity(a, sigmas[i], 1))
        else:
            _, a = state.skip(i, a)
    return a


def _plain(a):
    ref = FlowMatchEulerDiscreteScheduler()
    ref.set_timesteps(N)
    for t in ref.timesteps:
        a = ref.step(_velocity(a, float(t) / 1000.0, 1), t, a, return_dict=False)[0]
    return a


@pytest.mark.parametrize("aux_first", [False, True])
def test_companion_uses_its_own_estimate_on_skipped_steps(adapted, aux_first):
    scheduler, context, _ = adapted
    g = torch.Generator().manual_seed(0)
    z0, a0 = torch.randn(2, 8, generator=g), torch.randn(3, 5, generator=g)
    scheduler.set_timesteps(N)
    aux = copy.deepcopy(scheduler)  # inside the generation: a companion
    assert "step" in aux.__dict__
    _, a, calls = _loop(scheduler, aux, context, z0, a0, aux_first=aux_first)
    schedule = context.stats.schedule
    assert calls == B and sum(schedule.compute) == B
    assert context.stats.steps_computed == B and context.stats.steps_skipped == N - B  # the main one's only
    expected = _by_hand(schedule, scheduler.sigmas.tolist(), a0.clone())
    torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-5)
    # The stale outputs (what a plain copy would step with on skipped steps) give another result.
    scheduler.set_timesteps(N)
    _, a_stale, _ = _loop(scheduler, FlowMatchEulerDiscreteScheduler.from_config(scheduler.config), context, z0, a0)
    assert (a_stale - expected).abs().max() > 1e-3
    # and the companion's result is close to the uncached one
    ref = _plain(a0.clone())
    assert (a - ref).norm() / (ref - a0).norm() < (a_stale - ref).norm() / (ref - a0).norm()


def test_copy_outside_a_generation_is_plain(adapted):
    scheduler, context, _ = adapted
    before = copy.deepcopy(scheduler)  # no generation, no pipeline call running
    assert "step" not in before.__dict__ and "__deepcopy__" not in before.__dict__
    scheduler.set_timesteps(N)
    during = copy.deepcopy(scheduler)
    assert "step" in during.__dict__
    g = torch.Generator().manual_seed(1)
    z0, a0 = torch.randn(2, 8, generator=g), torch.randn(3, 5, generator=g)
    before.set_timesteps(N)
    _, a_plain, _ = _loop(scheduler, before, context, z0, a0)  # stale outputs, plain steps
    # After the generation, a companion steps plainly (the transformer runs for real again).
    during.set_timesteps(N)
    a = a0.clone()
    for t in during.timesteps:
        a = during.step(_velocity(a, float(t) / 1000.0, 1), t, a, return_dict=False)[0]
    torch.testing.assert_close(a, _plain(a0.clone()), rtol=0, atol=0)
    assert not torch.allclose(a_plain, a)


def test_removal_restores_deepcopy(adapted):
    scheduler, context, saved = adapted
    scheduler.set_timesteps(N)
    unwrap_scheduler(scheduler, saved)
    context.abort()
    assert not {"step", "set_timesteps", "set_begin_index", "__deepcopy__"} & set(scheduler.__dict__)
    clone = copy.deepcopy(scheduler)
    assert type(clone) is FlowMatchEulerDiscreteScheduler and not clone.__dict__.keys() & {"step", "__deepcopy__"}
    torch.testing.assert_close(clone.sigmas, scheduler.sigmas, rtol=0, atol=0)


def test_companion_out_of_step_is_an_error(adapted):
    scheduler, context, _ = adapted
    scheduler.set_timesteps(N)
    aux = copy.deepcopy(scheduler)
    a = torch.zeros(3, 5)
    t = aux.timesteps[0]
    scheduler.step(torch.zeros(2, 8), t, torch.zeros(2, 8))
    aux.step(torch.zeros(3, 5), t, a)
    aux.step(torch.zeros(3, 5), aux.timesteps[1], a)  # ahead of the main scheduler by one: still allowed
    with pytest.raises(RuntimeError, match="companion scheduler"):
        aux.step(torch.zeros(3, 5), aux.timesteps[2], a)  # two ahead


def test_companion_with_other_sigmas_is_an_error(adapted):
    scheduler, context, _ = adapted
    scheduler.set_timesteps(N)
    aux = copy.deepcopy(scheduler)
    aux.set_timesteps(N + 2)
    with pytest.raises(RuntimeError, match="other sigmas"):
        aux.step(torch.zeros(3, 5), aux.timesteps[0], torch.zeros(3, 5))


@pytest.mark.slow
def test_ltx2_pipeline_matrix_check():
    r = zoo.check("LTX2Pipeline")
    assert r.status == "ok", f"{r.reason} {r.error}"
    assert r.calls_per_step == 3  # CFG (batched), spatio-temporal guidance, modality isolation
    assert r.calls["cached"] == zoo.CHECK_BUDGET * r.calls_per_step
    assert 0 < r.rel_err <= zoo.REL_ERR_BOUND


@pytest.mark.slow  # two tiny LTX-2 builds, four calls: about 10 s on 2 cores
def test_audio_scheduler_component_is_a_companion():
    """LTX2ConditionPipeline takes its own ``audio_scheduler``: adapted as a companion at apply (the same output as
    the deep copy it replaces), restored at removal."""
    from meancache_kernels.diffusers import apply_mean_cache, get_mean_cache_stats, remove_mean_cache

    def audio_of(out):
        return out.audio if hasattr(out, "audio") else out[1]

    pipe, kwargs = zoo.build("LTX2ConditionPipeline")
    plain = pipe(**kwargs(N))
    apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    copied = pipe(**kwargs(N))  # the pipeline deep-copies the adapted scheduler: a companion
    remove_mean_cache(pipe)

    pipe.audio_scheduler = copy.deepcopy(pipe.scheduler)
    before = dict(pipe.audio_scheduler.__dict__)
    apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    assert "step" in pipe.audio_scheduler.__dict__  # adapted
    component = pipe(**kwargs(N))
    st = get_mean_cache_stats(pipe)
    assert st.finished and st.transformer_calls == B * st.calls_per_step
    remove_mean_cache(pipe)
    assert set(pipe.audio_scheduler.__dict__) == set(before)  # restored: no adapter attribute left
    assert torch.equal(audio_of(component), audio_of(copied)) and torch.equal(component.frames, copied.frames)
    assert not torch.equal(audio_of(component), audio_of(plain))  # the audio was estimated on skipped steps
    again = pipe(**kwargs(N))
    assert torch.equal(audio_of(again), audio_of(plain))  # removal: bit-identical to never accelerated
