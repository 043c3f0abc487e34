"""MeanCache on generations that start mid-schedule: image-to-image and inpainting (strength < 1), pipelines that
slice their timesteps, and the scheduler's set_begin_index (issue 23, part 1)."""

import logging
import warnings

import pytest
import torch

from meancache_kernels.cache import MeanCacheState
from meancache_kernels.default_rule import default_schedule
from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.testing import IMAGE_PIPELINES, tiny_image_call_kwargs, tiny_image_pipeline

N = 10
# Relative error of the final latent against the uncached pipeline, B = max(2, steps run // 2), measured on these
# tiny models at strength 0.3 / 0.6 / 0.9: at most 0.0071 (flux), 0.0082 (sd3), 0.0075 (qwen-image), 0.081 (z-image,
# whose tiny transformer's velocity changes fastest along the run). The bounds are about twice those.
TOL = {"flux": 0.02, "sd3": 0.02, "qwen-image": 0.02, "z-image": 0.15}
CALLS_PER_STEP = {"flux": 1, "sd3": 1, "qwen-image": 2, "z-image": 1}


@pytest.fixture(scope="module")
def image_pipe():
    built = {}

    def get(kind, task):
        if (kind, task) not in built:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[kind, task] = tiny_image_pipeline(kind, task)
        pipe = built[kind, task]
        assert getattr(pipe, "_meancache_context", None) is None, "a previous test left MeanCache applied"
        return pipe

    return get


def _run(pipe, kind, task, strength, **kw):
    return pipe(**tiny_image_call_kwargs(kind, task, strength=strength, num_inference_steps=N, **kw))[0]


def _steps_run(strength: float) -> int:
    return int(N * strength)  # diffusers' get_timesteps: t_start = N - int(N * strength)


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("strength", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("kind,task", sorted(IMAGE_PIPELINES))
def test_calls_output_and_removal(kind, task, strength, image_pipe):
    pipe = image_pipe(kind, task)
    ref = _run(pipe, kind, task, strength)
    run = _steps_run(strength)
    budget = max(2, run // 2)
    apply_mean_cache(pipe, MeanCacheConfig(budget=budget, learn=False))
    try:
        out = _run(pipe, kind, task, strength)
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.finished and stats.num_steps == run and stats.first_step == N - run
    assert stats.steps_computed == budget and stats.steps_skipped == run - budget
    assert stats.transformer_calls == budget * CALLS_PER_STEP[kind]  # B per CFG branch
    assert stats.schedule.num_steps == run and stats.schedule.budget == budget
    err = _rel(out, ref)
    assert 0 < err < TOL[kind], err
    assert torch.equal(_run(pipe, kind, task, strength), ref)  # removal: bit-identical to never applied


def test_schedule_is_fitted_to_the_steps_run(image_pipe, record_steps):
    """The output is exactly MeanCache's estimator run over the sigmas from the begin index to the end, with the
    default rule's schedule for those sigmas and B, fed the velocities of the computed steps."""
    pipe = image_pipe("flux", "img2img")
    seen, unrecord = record_steps(pipe.scheduler)
    apply_mean_cache(pipe, MeanCacheConfig(budget=3, learn=False))
    try:
        out = _run(pipe, "flux", "img2img", 0.6)
        sigmas = pipe.scheduler.sigmas.double().tolist()[N - 6:]
    finally:
        remove_mean_cache(pipe)
        unrecord()
    schedule = default_schedule(sigmas, 3)
    assert schedule.num_steps == 6 and len(seen) == 3
    state = MeanCacheState(schedule, sigmas)
    z = seen[0][0]
    velocities = iter(v for _, v in seen)
    for i in range(6):
        if state.should_compute(i):
            z = state.step(i, z, next(velocities))
        else:
            _, z = state.skip(i, z)
    torch.testing.assert_close(out, z, rtol=1e-5, atol=1e-6)


def test_budget_above_the_steps_run_raises_before_any_transformer_call(image_pipe):
    pipe = image_pipe("flux", "img2img")
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
    try:
        with pytest.raises(ValueError, match=r"budget=4 but this generation runs 3 of its 10 steps .*budget <= 3"):
            _run(pipe, "flux", "img2img", 0.3)
        assert calls == []
        _run(pipe, "flux", "img2img", 0.6)  # the pipeline is usable after the error
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        handle.remove()
    assert stats.finished and stats.transformer_calls == 4 and len(calls) == 6


def test_set_begin_index_on_the_scheduler(image_pipe):
    """The scheduler driven by hand: set_begin_index(3) after set_timesteps, then the 7 remaining steps."""
    pipe = image_pipe("flux", "img2img")
    apply_mean_cache(pipe, MeanCacheConfig(budget=3, learn=False))
    try:
        sched = pipe.scheduler
        z, v = torch.randn(1, 16, 4), torch.randn(1, 16, 4)
        sched.set_timesteps(N)
        sched.set_begin_index(3)
        for t in sched.timesteps[3:]:
            z = sched.step(v, t, z, return_dict=False)[0]
        stats = get_mean_cache_stats(pipe)
        with pytest.raises(RuntimeError, match="called 8 times"):
            sched.step(v, sched.timesteps[-1], z)
        sched.set_timesteps(N)
        sched.set_begin_index(2)
        with pytest.raises(RuntimeError, match="scheduler is at step 5 but MeanCache expects step 2"):
            sched._step_index = 5  # a loop that jumps
            sched.step(v, sched.timesteps[5], z)
    finally:
        remove_mean_cache(pipe)
    assert stats.finished and stats.num_steps == 7 and stats.first_step == 3
    assert stats.steps_computed == 3 and stats.steps_skipped == 4


def test_loop_over_sliced_timesteps_without_set_begin_index(image_pipe):
    """A pipeline that slices its timesteps but never calls set_begin_index: the generation is fitted at its first
    step to the steps run, with the same result as through set_begin_index."""
    from diffusers import FluxImg2ImgPipeline

    class SlicingImg2Img(FluxImg2ImgPipeline):
        def get_timesteps(self, num_inference_steps, strength, device):
            t_start = int(max(num_inference_steps - num_inference_steps * strength, 0))
            return self.scheduler.timesteps[t_start:], num_inference_steps - t_start

    pipe = image_pipe("flux", "img2img")
    sliced = SlicingImg2Img(**pipe.components)
    sliced.set_progress_bar_config(disable=True)
    ref = _run(sliced, "flux", "img2img", 0.6)
    outs, stats = [], []
    for p in (pipe, sliced):
        apply_mean_cache(p, MeanCacheConfig(budget=3, learn=False))
        try:
            outs.append(_run(p, "flux", "img2img", 0.6))
            stats.append(get_mean_cache_stats(p))
        finally:
            remove_mean_cache(p)
    assert torch.equal(outs[0], outs[1])
    assert stats[0] == stats[1] and stats[1].transformer_calls == 3 and stats[1].first_step == 4
    assert torch.equal(_run(sliced, "flux", "img2img", 0.6), ref)


def _adams(config):
    from meancache_kernels.diffusers.adams import FlowMatchAdamsScheduler

    return FlowMatchAdamsScheduler.from_config(config, adams_order=1)


def _heun(config):
    from diffusers import FlowMatchHeunDiscreteScheduler

    return FlowMatchHeunDiscreteScheduler.from_config(config)


@pytest.mark.parametrize("make", [_adams, _heun], ids=["adams", "heun"])
def test_other_schedulers(make, image_pipe):
    """Image-to-image under FlowMatchAdams (one evaluation per step, its own multistep history) and Heun (two): B
    computed steps among those run. (UniPC and DPM-Solver++ have no ``scale_noise``: diffusers' image-to-image
    pipelines do not run with them.)"""
    pipe = image_pipe("sd3", "img2img")
    original = pipe.scheduler
    pipe.scheduler = make(original.config)
    try:
        ref = _run(pipe, "sd3", "img2img", 0.6)
        apply_mean_cache(pipe, MeanCacheConfig(budget=3, learn=False))
        try:
            out = _run(pipe, "sd3", "img2img", 0.6)
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
        back = _run(pipe, "sd3", "img2img", 0.6)
    finally:
        pipe.scheduler = original
    assert stats.finished and stats.num_steps == 6 and stats.first_step == 4 and stats.steps_computed == 3
    heun = make is _heun
    # Heun: two evaluations per computed step but the last, which is Euler-only
    assert stats.transformer_calls == (2 * 3 - (1 if stats.schedule.compute[-1] else 0) if heun else 3)
    assert 0 < _rel(out, ref) < TOL["sd3"]
    assert torch.equal(back, ref)


def test_generation_start_is_logged(image_pipe, caplog):
    pipe = image_pipe("flux", "img2img")
    apply_mean_cache(pipe, MeanCacheConfig(budget=3, learn=False))
    try:
        with caplog.at_level(logging.INFO, logger="meancache_kernels.diffusers.hooks"):
            _run(pipe, "flux", "img2img", 0.6)
        steps = get_mean_cache_stats(pipe).schedule.compute_steps
    finally:
        remove_mean_cache(pipe)
    lines = [r.getMessage() for r in caplog.records if r.name == "meancache_kernels.diffusers.hooks"]
    assert len(lines) == 1
    assert lines[0].startswith(f"MeanCache: N=6 (steps 4..9 of 10), B=3, computed steps {steps}, estimators ")
    assert lines[0].endswith(f"({MeanCacheConfig(budget=3, learn=False).source})")


def test_a_given_schedule_is_restricted_to_the_steps_run(image_pipe):
    """schedule= (made for all N steps): its steps from the begin index on, with as many computed steps as it has
    there; the first step run is computed (the first computed step after it moves there)."""
    from meancache_kernels.schedule import Schedule

    pipe = image_pipe("flux", "img2img")
    full = Schedule.from_compute_steps([0, 2, 3, 5, 7, 9], N)
    ref = _run(pipe, "flux", "img2img", 0.6)  # steps 4..9
    apply_mean_cache(pipe, MeanCacheConfig(schedule=full))
    try:
        out = _run(pipe, "flux", "img2img", 0.6)
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.schedule.compute_steps == [0, 3, 5]  # 5, 7, 9 of the full schedule; 5 moved to 4
    assert list(stats.schedule.spans) == [0, full.spans[4], *full.spans[6:]] and stats.transformer_calls == 3
    assert 0 < _rel(out, ref) < TOL["flux"]


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
def test_wan_video_to_video_slices_its_timesteps(scheduler):
    """WanVideoToVideoPipeline slices its timesteps without set_begin_index (and noises with the scheduler's
    add_noise under UniPC, Wan's own scheduler): the generation is fitted at its first step to the 6 steps run."""
    import inspect

    import numpy as np
    from diffusers import UniPCMultistepScheduler, WanVideoToVideoPipeline
    from PIL import Image

    from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = tiny_pipeline("wan")
    accepted = inspect.signature(WanVideoToVideoPipeline.__init__).parameters
    pipe = WanVideoToVideoPipeline(**{k: v for k, v in base.components.items() if k in accepted})
    pipe.set_progress_bar_config(disable=True)
    if scheduler == "unipc":
        pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=7.0)
    # prompt embeddings: the pipeline's own prompt cleaning needs ftfy
    embeds, negative = base.encode_prompt("a red cube", "blurry", max_sequence_length=16, device="cpu")
    rng = np.random.default_rng(0)
    video = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(5)]

    def run():
        kw = tiny_call_kwargs("wan", num_inference_steps=N, strength=0.6, video=video, prompt=None,
                              negative_prompt=None, prompt_embeds=embeds, negative_prompt_embeds=negative)
        del kw["num_frames"]
        return pipe(**kw)[0]

    ref = run()
    apply_mean_cache(pipe, MeanCacheConfig(budget=3, learn=False))
    try:
        out = run()
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.finished and stats.num_steps == 6 and stats.first_step == 4
    assert stats.steps_computed == 3 and stats.transformer_calls == 2 * 3  # CFG: two calls per computed step
    # measured 0.079 (Euler) and 0.114 (UniPC); single-expert Wan text-to-video at N = 10, B = 5: 0.061
    assert 0 < _rel(out, ref) < 0.25
    assert torch.equal(run(), ref)
    apply_mean_cache(pipe, MeanCacheConfig(budget=7, learn=False))
    try:  # no begin index announced: the budget is checked at the first step (after its two calls)
        with pytest.raises(ValueError, match="budget=7 but this generation runs 6 of its 10 steps"):
            run()
    finally:
        remove_mean_cache(pipe)


def test_no_step_left_is_the_pipeline_own_error(image_pipe):
    """strength so low that no step is left: diffusers' own error, not MeanCache's."""
    pipe = image_pipe("flux", "img2img")
    apply_mean_cache(pipe, MeanCacheConfig(budget=2, learn=False))
    try:
        with pytest.raises(ValueError, match="num_inference_steps.* is < 1"):
            _run(pipe, "flux", "img2img", 0.0)
        _run(pipe, "flux", "img2img", 1.0)  # the whole schedule: begin index 0
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.finished and stats.num_steps == N and stats.first_step == 0 and stats.transformer_calls == 2
