"""The diffusers conventions (meancache_kernels/diffusers/usage.py): the context manager, is_mean_cache_enabled, and
the schedule preview, each checked against what a real generation of a tiny pipeline does."""

import numpy as np
import pytest
import torch

from meancache_kernels import Schedule
from meancache_kernels.diffusers import (
    MeanCacheConfig,
    apply_mean_cache,
    get_mean_cache_stats,
    is_mean_cache_enabled,
    mean_cache,
    preview_schedule,
    remove_mean_cache,
)
from meancache_kernels.diffusers.testing import tiny_call_kwargs

N = 10


def rule(budget: int) -> MeanCacheConfig:
    """MeanCacheConfig(budget=B) running the calibration-free rule from the first generation (learn=False where the
    configuration learns by default): the generations below then have known schedules."""
    import dataclasses

    if any(f.name == "learn" for f in dataclasses.fields(MeanCacheConfig)):
        return MeanCacheConfig(budget=budget, learn=False)
    return MeanCacheConfig(budget=budget)


def _run(pipe, kind="flux", steps=N, **kw):
    return pipe(**tiny_call_kwargs(kind, num_inference_steps=steps, **kw))[0]


def test_is_mean_cache_enabled_follows_apply_and_remove(tiny_pipe):
    pipe = tiny_pipe("flux")
    assert is_mean_cache_enabled(pipe) is False
    apply_mean_cache(pipe, rule(4))
    try:
        assert is_mean_cache_enabled(pipe) is True
    finally:
        remove_mean_cache(pipe)
    assert is_mean_cache_enabled(pipe) is False


def test_context_manager_applies_then_removes(tiny_pipe):
    pipe = tiny_pipe("flux")
    plain = _run(pipe)
    apply_mean_cache(pipe, rule(4))
    applied = _run(pipe)
    remove_mean_cache(pipe)
    assert not torch.equal(applied, plain)  # B = 4 of 10 changes the output: the comparison below can fail

    with mean_cache(pipe, rule(4)) as mc:
        assert is_mean_cache_enabled(pipe)
        inside = _run(pipe)
        assert mc.stats.transformer_calls == 4  # live inside the block
    assert torch.equal(inside, applied)
    assert not is_mean_cache_enabled(pipe)
    assert torch.equal(_run(pipe), plain)  # removed: bit-identical to never applied
    stats = mc.stats  # kept after the block
    assert (stats.transformer_calls, stats.transformer_calls_saved, stats.num_steps) == (4, 6, N)
    assert stats.schedule.compute_steps == [0, 3, 6, 9]
    assert "removed" in repr(mc) and "default rule B=4" in repr(mc)


def test_context_manager_removes_after_an_error_and_refuses_a_second_apply(tiny_pipe):
    pipe = tiny_pipe("flux")
    with pytest.raises(RuntimeError, match="boom"):
        with mean_cache(pipe, rule(4)):
            raise RuntimeError("boom")
    assert not is_mean_cache_enabled(pipe)

    apply_mean_cache(pipe, rule(5))
    try:
        with pytest.raises(ValueError, match="already applied"):
            with mean_cache(pipe, rule(4)):
                pass
        assert is_mean_cache_enabled(pipe)  # the failed entry left the first application in place
        assert get_mean_cache_stats(pipe).num_steps == 0
    finally:
        remove_mean_cache(pipe)


def test_leaving_the_block_after_a_manual_remove_is_quiet(tiny_pipe):
    pipe = tiny_pipe("flux")
    with mean_cache(pipe, rule(4)) as mc:
        remove_mean_cache(pipe)
    assert not is_mean_cache_enabled(pipe)
    assert mc.stats.transformer_calls == 0  # no call was made: empty statistics, not an error


def test_preview_default_rule_is_the_schedule_the_generation_runs(tiny_pipe):
    pipe = tiny_pipe("flux")
    config = rule(4)
    # FluxPipeline passes its own sigmas linspace(1, 1/N, N) (and mu; this tiny scheduler does not shift).
    given = np.linspace(1.0, 1 / N, N).tolist()
    preview = preview_schedule(pipe, config, N, sigmas=given)
    default = preview_schedule(pipe.scheduler, config, N)
    with mean_cache(pipe, config) as mc:
        _run(pipe)
        ran_sigmas = pipe.scheduler.sigmas.tolist()
    assert preview.schedule == mc.stats.schedule == default.schedule
    assert preview.schedule.compute_steps == [0, 3, 6, 9]
    assert preview.sigmas == pytest.approx(ran_sigmas, abs=1e-6)
    assert default.sigmas != pytest.approx(ran_sigmas, abs=1e-6)  # the scheduler's own grid differs from FLUX.1's
    assert "the default rule's steps depend on N and B only" in default.note and preview.note == ""
    assert preview.model_evaluations == 4 and preview.num_steps == N
    text = str(preview)
    assert "computed steps: [0, 3, 6, 9]" in text and "4 of 10" in text
    assert "   1  0.90000  skipped, taylorc2" in text and "   9  0.10000  computed" in text


def test_preview_of_a_schedule_made_for_another_n_matches_the_fit(tiny_pipe):
    pipe = tiny_pipe("flux")
    config = MeanCacheConfig(schedule=Schedule.uniform(12, 5, "taylor2"))
    preview = preview_schedule(pipe, config, N, sigmas=np.linspace(1.0, 1 / N, N).tolist())
    with pytest.warns(UserWarning, match="fitting"), mean_cache(pipe, config) as mc:
        _run(pipe)
    assert preview.schedule == mc.stats.schedule
    assert preview.schedule.num_steps == N
    assert "fitted by sigma from the schedule's N=12" in preview.note


def test_preview_under_heun_counts_two_evaluations_per_computed_step(tiny_pipe):
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe = tiny_pipe("wan")
    saved = pipe.scheduler
    pipe.scheduler = FlowMatchHeunDiscreteScheduler(shift=3.0)
    try:
        config = rule(3)
        preview = preview_schedule(pipe, config, 8)
        with mean_cache(pipe, config) as mc:
            _run(pipe, "wan", steps=8)
    finally:
        pipe.scheduler = saved
    assert preview.schedule == mc.stats.schedule
    assert set(preview.schedule.estimator_names()) == {"", "taylor1"}  # the multistep rule
    assert preview.evaluations_per_step == 2
    assert preview.model_evaluations == 2 * 3 - 1  # the last step is Euler-only
    assert mc.stats.transformer_calls == 2 * preview.model_evaluations  # Wan's true CFG: two calls per evaluation
    assert "of 15" in str(preview)


def test_preview_of_adaptive_configurations():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from meancache_kernels.adaptive import budget_schedule

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    budget = preview_schedule(sched, MeanCacheConfig(budget=6, adaptive=True), 20)
    assert budget.schedule == budget_schedule(list(budget.sigmas), 6, "taylorc2")
    assert budget.schedule.budget == 6
    tol = preview_schedule(sched, MeanCacheConfig(tol=0.05), 20)
    assert tol.schedule is None and tol.model_evaluations is None
    assert "decided while generating" in tol.note and "decided while generating" in str(tol)


def test_preview_with_dynamic_shifting_needs_the_resolution():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    config = rule(5)
    with pytest.raises(ValueError, match="use_dynamic_shifting=True.*image_seq_len=4096"):
        preview_schedule(sched, config, 20)
    by_len = preview_schedule(sched, config, 20, image_seq_len=4096)
    by_mu = preview_schedule(sched, config, 20, mu=1.15)  # 4096 is max_image_seq_len: mu = max_shift
    assert by_len.sigmas == pytest.approx(by_mu.sigmas, abs=1e-12)
    low = preview_schedule(sched, config, 20, image_seq_len=256)  # base length: mu = base_shift, less shifted
    assert low.sigmas[10] < by_len.sigmas[10]
    with pytest.raises(ValueError, match="mu= or image_seq_len=, not both"):
        preview_schedule(sched, config, 20, mu=1.0, image_seq_len=4096)


def test_preview_rejects_bad_input(tiny_pipe):
    pipe = tiny_pipe("flux")
    with pytest.raises(TypeError, match="config must be a MeanCacheConfig, got dict"):
        preview_schedule(pipe, {"budget": 4}, N)
    with pytest.raises(TypeError, match="pipe_or_scheduler must be a diffusers pipeline or scheduler, got str"):
        preview_schedule("flux", rule(4), N)
    with pytest.raises(ValueError, match="num_inference_steps must be an int >= 1, got 0"):
        preview_schedule(pipe, rule(4), 0)
    with pytest.raises(ValueError, match="budget"):
        preview_schedule(pipe, rule(12), N)
    with pytest.raises(ValueError, match="sigmas must hold num_inference_steps=10 values .* got 3"):
        preview_schedule(pipe, rule(4), N, sigmas=[1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="image_seq_len must be an int >= 1, got 0"):
        preview_schedule(pipe, rule(4), N, image_seq_len=0)
    from diffusers import DDIMScheduler

    with pytest.raises(TypeError, match="MeanCache supports deterministic flow-matching schedulers"):
        preview_schedule(DDIMScheduler(), rule(4), N)


def test_preview_of_the_default_config_says_what_learning_does(tiny_pipe):
    pipe = tiny_pipe("flux")
    config = MeanCacheConfig(budget=4)
    preview = preview_schedule(pipe, config, N)
    assert preview.schedule == preview_schedule(pipe, rule(4), N).schedule  # the rule, until a generation learns
    learns = bool(getattr(config, "learn", False))
    assert preview.learns is learns and preview_schedule(pipe, rule(4), N).learns is False
    text = str(preview)
    if learns:
        assert preview.note.startswith("learn=True: the first generation at a given N") and "later ones make B" in \
            preview.note
        assert "model evaluations: 10 in the first generation (it learns the schedule), then 4 of 10" in text
    else:
        assert "learn=True" not in preview.note and "model evaluations per generation: 4 of 10" in text
