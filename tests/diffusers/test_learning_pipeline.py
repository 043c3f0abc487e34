"""MeanCacheConfig(budget=B) learns: the first generation at a key computes every step (the exact image) and learns
the schedule; later ones make B calls per CFG branch (meancache_kernels.learning through the diffusers hooks)."""

import warnings

import pytest
import torch

from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.testing import (
    CALLS_PER_STEP,
    tiny_call_kwargs,
    tiny_image_call_kwargs,
    tiny_image_pipeline,
)

N, B = 8, 4


def _run(pipe, kind, **kw):
    out = pipe(**tiny_call_kwargs(kind, num_inference_steps=kw.pop("num_inference_steps", N), **kw))
    return out[0] if isinstance(out, tuple) else (out.images if hasattr(out, "images") else out.frames)


@pytest.mark.parametrize("kind", ["flux", "qwen-image", "wan"])
def test_first_call_learns_exactly_then_b_calls(tiny_pipe, kind):
    pipe = tiny_pipe(kind)
    uncached = [_run(pipe, kind, seed=s) for s in (0, 1)]
    per_step = CALLS_PER_STEP[kind]
    apply_mean_cache(pipe, MeanCacheConfig(budget=B))
    try:
        first = _run(pipe, kind, seed=0)
        st = get_mean_cache_stats(pipe)
        assert st.learning and st.learnt_in == 1 and st.transformer_calls == N * per_step
        assert st.learnt["calls"] == N and st.learnt["choice"]
        torch.testing.assert_close(torch.as_tensor(first), torch.as_tensor(uncached[0]), rtol=0, atol=0)
        second = _run(pipe, kind, seed=1)
        st = get_mean_cache_stats(pipe)
        assert not st.learning and st.learnt_in == 1 and st.schedule.budget == B
        assert st.transformer_calls == B * per_step and st.steps_skipped == N - B
        a, b = torch.as_tensor(second).float(), torch.as_tensor(uncached[1]).float()
        assert float((a - b).norm() / b.norm()) < 0.25  # an accelerated image near the uncached one
        _run(pipe, kind, seed=0, num_inference_steps=N + 2)  # another N: a new key, learnt again
        st = get_mean_cache_stats(pipe)
        assert st.learning and st.learnt_in == 3 and st.transformer_calls == (N + 2) * per_step
    finally:
        remove_mean_cache(pipe)
    torch.testing.assert_close(torch.as_tensor(_run(pipe, kind, seed=0)), torch.as_tensor(uncached[0]), rtol=0, atol=0)


def test_learn_false_makes_b_calls_from_the_first_call(tiny_pipe):
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    try:
        _run(pipe, "flux")
        st = get_mean_cache_stats(pipe)
        assert not st.learning and st.learnt_in is None and st.transformer_calls == B
    finally:
        remove_mean_cache(pipe)


def test_cache_dir_learns_once_across_pipelines(tiny_pipe, tmp_path):
    pipe = tiny_pipe("flux")
    for expected_calls, learnt_in in ((N, 1), (B, 0)):  # a fresh application reads what the first one wrote
        apply_mean_cache(pipe, MeanCacheConfig(budget=B, cache_dir=tmp_path))
        try:
            _run(pipe, "flux")
            st = get_mean_cache_stats(pipe)
            assert st.transformer_calls == expected_calls and st.learnt_in == learnt_in
        finally:
            remove_mean_cache(pipe)
    assert len(list(tmp_path.glob("FluxTransformer2DModel-*.json"))) == 1
    apply_mean_cache(pipe, MeanCacheConfig(budget=B - 1, cache_dir=tmp_path))  # another budget: learnt anew
    try:
        _run(pipe, "flux")
        assert get_mean_cache_stats(pipe).learning and get_mean_cache_stats(pipe).transformer_calls == N
    finally:
        remove_mean_cache(pipe)


def test_another_resolution_is_another_key(tiny_pipe):
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(budget=B))
    try:
        _run(pipe, "flux")
        _run(pipe, "flux", height=48, width=48)
        assert get_mean_cache_stats(pipe).learning
        _run(pipe, "flux", height=48, width=48)
        assert get_mean_cache_stats(pipe).transformer_calls == B
    finally:
        remove_mean_cache(pipe)


def test_two_experts_use_the_blind_rule(tiny_pipe):
    pipe = tiny_pipe("wan", two_stage=True)
    apply_mean_cache(pipe, MeanCacheConfig(budget=5))
    try:
        _run(pipe, "wan", num_inference_steps=10)
        st = get_mean_cache_stats(pipe)
        assert not st.learning and st.transformer_calls == 5 * CALLS_PER_STEP["wan"] and len(st.segments) == 2
    finally:
        remove_mean_cache(pipe)


def test_img2img_learns_on_the_steps_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = tiny_image_pipeline("flux", "img2img")
    apply_mean_cache(pipe, MeanCacheConfig(budget=3))
    try:
        kw = dict(num_inference_steps=10, strength=0.6)
        pipe(**tiny_image_call_kwargs("flux", "img2img", **kw))
        st = get_mean_cache_stats(pipe)
        assert st.learning and st.num_steps == 6 and st.transformer_calls == 6 and st.first_step == 4
        pipe(**tiny_image_call_kwargs("flux", "img2img", **kw))
        st = get_mean_cache_stats(pipe)
        assert not st.learning and st.transformer_calls == 3 and st.schedule.num_steps == 6
    finally:
        remove_mean_cache(pipe)


def test_learning_config_errors():
    with pytest.raises(ValueError, match="learn=True is the budget-alone one line"):
        MeanCacheConfig(budget=4, adaptive=True, learn=True)
    with pytest.raises(ValueError, match="cache_dir= holds learnt schedules"):
        MeanCacheConfig(budget=4, learn=False, cache_dir="x")
    with pytest.raises(TypeError, match="learn must be a bool"):
        MeanCacheConfig(budget=4, learn="yes")
    with pytest.raises(TypeError, match="cache_dir must be a path"):
        MeanCacheConfig(budget=4, cache_dir=3)
    assert MeanCacheConfig(budget=4).learn and not MeanCacheConfig(budget=4, adaptive=True).learn


def test_enable_cache_with_a_mean_cache_config_names_the_entry_point(tiny_pipe):
    pipe = tiny_pipe("flux")
    with pytest.raises(ValueError, match=r"apply_mean_cache\(pipe, config\)"):
        pipe.transformer.enable_cache(MeanCacheConfig(budget=4))
