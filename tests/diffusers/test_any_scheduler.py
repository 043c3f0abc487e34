"""MeanCache under flow-matching schedulers other than Euler: UniPC, DPM-Solver++, FlowMatchAdams, FlowMatchHeun.

On a skipped step the scheduler's own step receives the estimate of the model output at that step's sigma (taylor1 /
taylor2: the Lagrange polynomial in sigma through the last computed velocities); the Euler-only estimators are
refused. Tiny random pipelines, CPU, offline.
"""


import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import meancache_kernels as mck  # noqa: E402
from meancache_kernels.diffusers import (  # noqa: E402
    FlowMatchAdamsScheduler,
    MeanCacheConfig,
    apply_mean_cache,
    get_mean_cache_stats,
    remove_mean_cache,
)
from meancache_kernels.diffusers.scheduler import (  # noqa: E402
    VELOCITY_ESTIMATORS,
    allowed_estimators,
    check_scheduler,
)
from meancache_kernels.diffusers.testing import tiny_call_kwargs  # noqa: E402
from meancache_kernels.estimators import lagrange_weights  # noqa: E402

N, B = 8, 4
TAYLOR2 = mck.Schedule.uniform(N, B, "taylor2")  # computed [0, 2, 5, 7]


def _unipc(order=2, **kw):
    from diffusers import UniPCMultistepScheduler

    kw = {"use_dynamic_shifting": True, "time_shift_type": "exponential", **kw}
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=order, **kw)


def _dpm(order=2):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       use_dynamic_shifting=True, time_shift_type="exponential",
                                       algorithm_type="dpmsolver++", solver_order=order)


def _wan_unipc():
    """The scheduler Wan 2.1 ships with."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                   flow_shift=3.0)


def _heun():
    from diffusers import FlowMatchHeunDiscreteScheduler

    return FlowMatchHeunDiscreteScheduler(shift=3.0)


# name -> (pipeline kind, make scheduler); FluxPipeline passes sigmas to set_timesteps, which Heun does not take:
# Heun runs on Wan (two calls per evaluation: CFG).
SCHEDULERS = {
    "unipc1": ("flux", lambda: _unipc(1)),
    "unipc2": ("flux", lambda: _unipc(2)),
    "dpm++2m": ("flux", lambda: _dpm(2)),
    "adams2": ("flux", lambda: FlowMatchAdamsScheduler(adams_order=2)),
    "heun": ("wan", _heun),
}
CALLS = {"flux": 1, "wan": 2, "qwen-image": 2}


class _Swap:
    """Set ``pipe.scheduler`` for a test; put the original back afterwards."""

    def __init__(self, pipe, scheduler):
        self.pipe, self.scheduler = pipe, scheduler

    def __enter__(self):
        self.original = self.pipe.scheduler
        self.pipe.scheduler = self.scheduler
        return self.scheduler

    def __exit__(self, *exc):
        if getattr(self.pipe, "_meancache_context", None) is not None:
            remove_mean_cache(self.pipe)
        self.pipe.scheduler = self.original


def _count_forwards(*modules):
    """Count real forward executions: installed as the forward MeanCache's hook wraps, so calls answered from the
    cache on skipped steps are not counted."""
    counter = {"n": 0}

    def counting(original):
        def forward(*args, **kwargs):
            counter["n"] += 1
            return original(*args, **kwargs)
        return forward

    for m in modules:
        m.forward = counting(m.forward)
    return counter, lambda: [m.__dict__.pop("forward", None) for m in modules]


def _record_own_steps(scheduler):
    """Record the model output the scheduler's own step receives (installed under the MeanCache adapter)."""
    seen = []
    original = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        seen.append(model_output.detach().clone())
        return original(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = step
    return seen, lambda: scheduler.__dict__.pop("step", None)


def _run(pipe, kind, **kw):
    return pipe(**tiny_call_kwargs(kind, num_inference_steps=N, **kw))[0]


# ---------------------------------------------------------------------------------------------------- API
def test_allowed_estimators_per_scheduler():
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    euler = allowed_estimators(FlowMatchEulerDiscreteScheduler())
    assert set(euler) == set(mck.estimators.available()) and "jvp" in euler and "taylorc2" in euler
    assert VELOCITY_ESTIMATORS == ("taylor1", "taylor2")
    for make in [_wan_unipc, _dpm, _heun, lambda: FlowMatchAdamsScheduler(adams_order=1)]:
        assert allowed_estimators(make()) == ("taylor1", "taylor2")
    with pytest.raises(TypeError, match="DDIMScheduler"):
        allowed_estimators(DDIMScheduler())
    # with a config: the schedule's estimators are checked against the scheduler
    check_scheduler(_wan_unipc(), MeanCacheConfig(schedule=TAYLOR2))
    check_scheduler(FlowMatchEulerDiscreteScheduler(), MeanCacheConfig(preset="qwen-image", budget=10))
    for config in (MeanCacheConfig(schedule=mck.Schedule.uniform(N, B, "jvp")),
                   MeanCacheConfig(preset="qwen-image", budget=10)):
        with pytest.raises(TypeError, match=r"\['jvp'\].*'taylor1', 'taylor2'"):
            check_scheduler(_wan_unipc(), config)


# ---------------------------------------------------------------------------------------------------- skipping
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_b_calls_estimate_fed_to_the_own_step_and_removal(name, tiny_pipe):
    kind, make = SCHEDULERS[name]
    pipe = tiny_pipe(kind)
    heun = name == "heun"
    with _Swap(pipe, make()) as scheduler:
        reference = _run(pipe, kind)
        counter, uncount = _count_forwards(pipe.transformer)
        seen, unrecord = _record_own_steps(scheduler)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=TAYLOR2))
        try:
            out = _run(pipe, kind)
            stats = get_mean_cache_stats(pipe)
            sigmas = scheduler.sigmas.double().tolist()
        finally:
            remove_mean_cache(pipe)
            uncount()
        unrecord()
        after = _run(pipe, kind)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=mck.Schedule.full(N)))
        try:
            full = _run(pipe, kind)
        finally:
            remove_mean_cache(pipe)

    calls = CALLS[kind]
    evals = 2 * B - 1 if heun else B  # Heun: two evaluations per computed step, one on the last (Euler) step
    assert counter["n"] == evals * calls
    assert stats.transformer_calls == evals * calls
    assert stats.transformer_calls_saved == ((2 * N - 1) - evals if heun else N - B) * calls
    assert (stats.steps_computed, stats.steps_skipped, stats.num_steps, stats.finished) == (B, N - B, N, True)
    assert torch.isfinite(out).all() and (out - reference).abs().max() > 1e-4  # steps were really skipped
    assert torch.equal(after, reference)  # remove_mean_cache: bit-identical
    assert torch.equal(full, reference)  # every step computed: bit-identical to no MeanCache

    # The scheduler's own step ran at every step (stage) and, on skipped steps, got the taylor2 polynomial through
    # the last three computed velocities, evaluated at the step's sigma (Heun: s_i, then s_{i+1}).
    if heun:
        assert len(seen) == 2 * N - 1
        grid = [sigmas[0]] + sigmas[1::2]
        first = {i: seen[2 * i] for i in range(N)}
        second = {i: seen[2 * i + 1] for i in range(N - 1)}
    else:
        assert len(seen) == N
        grid = sigmas
        first, second = dict(enumerate(seen)), {}
    computed = TAYLOR2.compute_steps
    checked = 0
    for i in TAYLOR2.skipped_steps:
        nodes = [j for j in computed if j < i][-3:]
        for v, s in [(first[i], grid[i])] + ([(second[i], grid[i + 1])] if i in second else []):
            w = lagrange_weights([grid[j] for j in nodes], s)
            expected = sum(wk * first[j].double() for wk, j in zip(w, nodes))
            assert v.dtype == first[0].dtype
            torch.testing.assert_close(v.double(), expected, rtol=1e-5, atol=1e-5)
            checked += 1
    assert TAYLOR2.compute[N - 1] and checked == (2 if heun else 1) * (N - B)


@pytest.mark.parametrize("two_stage", [False, True])
def test_wan_with_its_shipped_unipc(two_stage, tiny_pipe):
    pipe = tiny_pipe("wan", two_stage=two_stage)
    with _Swap(pipe, _wan_unipc()):
        reference = _run(pipe, "wan")
        modules = [pipe.transformer] + ([pipe.transformer_2] if two_stage else [])
        counter, uncount = _count_forwards(*modules)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=TAYLOR2))
        try:
            out = _run(pipe, "wan")
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            uncount()
        after = _run(pipe, "wan")
    assert counter["n"] == stats.transformer_calls == B * 2  # CFG: two calls per computed step
    assert stats.transformer_calls_saved == (N - B) * 2 and stats.finished
    assert torch.isfinite(out).all() and (out - reference).abs().max() > 1e-4
    assert torch.equal(after, reference)


def test_half_precision_estimate_has_the_model_output_dtype(tiny_pipe):
    pipe = tiny_pipe("flux", dtype=torch.bfloat16)
    with _Swap(pipe, _unipc(2)) as scheduler:
        reference = _run(pipe, "flux")
        seen, unrecord = _record_own_steps(scheduler)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=TAYLOR2))
        try:
            out = _run(pipe, "flux")
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            unrecord()
        after = _run(pipe, "flux")
    assert reference.dtype == out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert len(seen) == N and all(v.dtype == torch.bfloat16 for v in seen)
    assert stats.transformer_calls == B and torch.equal(after, reference)
    assert (out.float() - reference.float()).abs().max() > 1e-3


def test_true_cfg_and_batch_under_unipc(tiny_pipe):
    pipe = tiny_pipe("qwen-image")
    prompts = ["a red cube", "two blue spheres"]
    with _Swap(pipe, _unipc(2)) as scheduler:
        inits = []
        original = scheduler.step

        def first_sample(model_output, timestep, sample, *args, **kwargs):
            if scheduler.step_index in (None, 0):
                inits.append(sample.clone())
            return original(model_output, timestep, sample, *args, **kwargs)

        scheduler.step = first_sample
        counter, uncount = _count_forwards(pipe.transformer)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=TAYLOR2))
        try:
            alone = [_run(pipe, "qwen-image", prompt=p, seed=k) for k, p in enumerate(prompts)]
            assert counter["n"] == 2 * B * 2  # true CFG: both calls of every skipped step are saved
            kw = tiny_call_kwargs("qwen-image", prompt=prompts, num_inference_steps=N, latents=torch.cat(inits[:2]))
            kw["negative_prompt"] = [kw["negative_prompt"]] * 2
            both = pipe(**kw)[0]
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            uncount()
            scheduler.__dict__.pop("step", None)
    assert stats.calls_per_step == 2 and stats.transformer_calls == 2 * B
    assert stats.transformer_calls_saved == 2 * (N - B)
    assert (alone[0] - alone[1]).abs().max() > 1e-3
    for k in range(2):
        torch.testing.assert_close(both[k : k + 1], alone[k], rtol=1e-4, atol=1e-4)


def test_schedule_for_another_n_is_fitted_on_the_unipc_grid(tiny_pipe):
    # computed [0, 2, 5], taylor2 on every interval (none is a chain: fitting gives taylor2 everywhere)
    mask = [True, False, True, False, False, True, False, False]
    schedule = mck.Schedule(mask, [0 if c else 2 for c in mask], estimators=["" if c else "taylor" for c in mask])
    pipe = tiny_pipe("flux")
    with _Swap(pipe, _unipc(2)):
        counter, uncount = _count_forwards(pipe.transformer)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
        try:
            with pytest.warns(UserWarning, match="fitting"):
                out = pipe(**tiny_call_kwargs("flux", num_inference_steps=12))[0]
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            uncount()
    assert stats.num_steps == 12 and stats.finished and torch.isfinite(out).all()
    assert counter["n"] == stats.transformer_calls == stats.schedule.budget < 12
    assert set(stats.schedule.estimator_names()) <= {"", "taylor2"}


# ---------------------------------------------------------------------------------------------------- refusals
def test_non_flow_and_stochastic_schedulers_raise_type_error(tiny_pipe):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    pipe = tiny_pipe("flux")
    bad = [
        (DDIMScheduler(), "DDIMScheduler"),
        (UniPCMultistepScheduler(), "flow_prediction"),  # epsilon prediction: not flow matching
        (UniPCMultistepScheduler(prediction_type="flow_prediction"), "use_flow_sigmas"),
        (DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                     algorithm_type="sde-dpmsolver++"), "stochastic"),
        (UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                 final_sigmas_type="sigma_min"), "final_sigmas_type"),
    ]
    for scheduler, message in bad:
        with _Swap(pipe, scheduler):
            with pytest.raises(TypeError, match=message):
                apply_mean_cache(pipe, MeanCacheConfig(schedule=TAYLOR2))
            assert getattr(pipe, "_meancache_context", None) is None
            registry = getattr(pipe.transformer, "_diffusers_hook", None)
            assert registry is None or registry.get_hook("meancache_hook") is None


@pytest.mark.parametrize("estimator", ["jvp", "taylorc2", "mean2"])
def test_euler_only_estimators_refused_under_unipc(estimator, tiny_pipe):
    pipe = tiny_pipe("flux")
    schedule = mck.Schedule.uniform(N, B, estimator)
    with _Swap(pipe, _unipc(2)):
        counter, uncount = _count_forwards(pipe.transformer)
        try:
            # refused when the schedule is known: at apply_mean_cache when hooks.py passes the config to
            # check_scheduler, at the latest when the generation's schedule is resolved (set_timesteps)
            with pytest.raises(TypeError, match=rf"\['{estimator}'\].*FlowMatchEulerDiscreteScheduler.*"
                                                r"\['taylor1', 'taylor2'\]"):
                apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
                pipe(**tiny_call_kwargs("flux", num_inference_steps=N))
            assert counter["n"] == 0  # refused before any transformer call
            if getattr(pipe, "_meancache_context", None) is not None:  # refused at the call: no generation left
                assert pipe._meancache_context.generation is None
                remove_mean_cache(pipe)
        finally:
            uncount()


def test_profile_config_is_solved_over_the_estimators_the_scheduler_allows(tiny_pipe):
    from meancache_kernels.diffusers import calibrate_pipeline

    pipe = tiny_pipe("flux")
    kw = tiny_call_kwargs("flux")
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    profile = calibrate_pipeline(pipe, ["a red cube", "two cats"], N, max_span=2, max_skip=4, batch_size=2,
                                 progress=False, **kw)  # with the pipeline's Euler scheduler
    config = MeanCacheConfig(profile=profile, budget=B)
    euler_names = {e for e in config.profile_schedule().estimator_names() if e}
    assert not euler_names <= set(VELOCITY_ESTIMATORS)  # under Euler the solver picks a corrected / mean estimator
    under_unipc = config.profile_schedule(VELOCITY_ESTIMATORS)
    assert under_unipc == mck.solve(profile, B, estimators=VELOCITY_ESTIMATORS)
    assert config.profile_schedule(VELOCITY_ESTIMATORS) is under_unipc  # solved once, not at every check
    assert config.profile_schedule(allowed_estimators(pipe.scheduler)) is config._solved  # Euler: as solved
    with _Swap(pipe, _unipc(2)):
        counter, uncount = _count_forwards(pipe.transformer)
        apply_mean_cache(pipe, config)
        try:
            _run(pipe, "flux")
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            uncount()
        assert counter["n"] == B and stats.steps_computed == B
        assert stats.schedule == under_unipc
        # estimators chosen by the user are kept, and refused where they do not apply
        with pytest.raises(TypeError, match=r"\['taylorc2'\].*'taylor1', 'taylor2'"):
            apply_mean_cache(pipe, MeanCacheConfig(profile=profile, budget=B, estimators=("taylorc2",)))
        assert getattr(pipe, "_meancache_context", None) is None
    only_euler = MeanCacheConfig(profile=profile, budget=B, estimators=("taylorc2", "mean2"))
    assert only_euler.profile_schedule(VELOCITY_ESTIMATORS) is only_euler._solved


def test_profile_without_velocity_estimators_under_unipc_is_a_clear_error():
    from pathlib import Path

    v1 = mck.Profile.load(Path(__file__).resolve().parents[1] / "core" / "data" / "profile_v1.npz")  # jvp costs only
    config = MeanCacheConfig(profile=v1, budget=10)
    with pytest.raises(ValueError, match=r"costs for \['jvp'\]; none of them works .* allows \['taylor1', 'taylor2'\]"):
        config.profile_schedule(VELOCITY_ESTIMATORS)


def test_one_line_under_a_multistep_scheduler_feeds_taylor1_and_tuning_keeps_the_same_default(tiny_pipe):
    from meancache_kernels.default_rule import default_schedule
    from meancache_kernels.diffusers import calibrate_pipeline, tune_pipeline
    from meancache_kernels.diffusers.scheduler import sampler_kind

    pipe = tiny_pipe("flux")
    n, b = N, B  # computed [0, 2, 5, 7]: gaps of 1-2 skipped steps (the Euler rule takes taylor2 there)
    assert sampler_kind(pipe.scheduler) == "euler"
    kw = tiny_call_kwargs("flux")
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    profile = calibrate_pipeline(pipe, ["a red cube", "two cats"], n, max_span=2, max_skip=4, batch_size=2,
                                 progress=False, **kw)
    with _Swap(pipe, _unipc(2)) as scheduler:
        assert sampler_kind(scheduler) == "multistep"
        apply_mean_cache(pipe, MeanCacheConfig(budget=b, learn=False))
        try:
            _run(pipe, "flux")
            stats = get_mean_cache_stats(pipe)
            sigmas = scheduler.sigmas.double().tolist()
        finally:
            remove_mean_cache(pipe)
        expected = default_schedule(sigmas, b, estimators=VELOCITY_ESTIMATORS, sampler="multistep")
        assert stats.schedule == expected and stats.steps_computed == b
        assert set(expected.estimator_names()) == {"", "taylor1"}
        assert set(default_schedule(sigmas, b, estimators=VELOCITY_ESTIMATORS).estimator_names()) == {"", "taylor2"}
        best = tune_pipeline(pipe, ["a blue ball", "a yellow star"], profile=profile, budget=b, num_inference_steps=n,
                             metric="latent", progress=False, **kw)
        names = [c["name"] for c in best.meta["tune"]["candidates"]]
        assert "default rule" in names
        # the candidate named "default rule" is what the one line runs under this scheduler
        from meancache_kernels.tuning import candidate_schedules

        cands = candidate_schedules(profile, b, allowed=VELOCITY_ESTIMATORS, sampler="multistep")
        assert cands["default rule"] == default_schedule(profile.sigmas, b, estimators=VELOCITY_ESTIMATORS,
                                                         sampler="multistep")
