"""MeanCacheConfig(budget=B, learn=False), the calibration-free rule, and adaptive control, on a FluxPipeline
(tiny random components, CPU, offline)."""

import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import meancache_kernels as mck  # noqa: E402
from meancache_kernels.diffusers import (  # noqa: E402
    MeanCacheConfig,
    apply_mean_cache,
    get_mean_cache_stats,
    remove_mean_cache,
)
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = tiny_pipeline("flux")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield p
    torch.set_num_threads(threads)


def _forwards(module):
    counter = {"n": 0}
    handle = module.register_forward_pre_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter, handle


def _run(pipe, config, n, **kw):
    apply_mean_cache(pipe, config)
    counter, handle = _forwards(pipe.transformer.transformer_blocks[0])  # a skipped call never reaches the blocks
    try:
        out = pipe(**tiny_call_kwargs("flux", num_inference_steps=n, **kw))[0]
        stats = get_mean_cache_stats(pipe)
    finally:
        handle.remove()
        remove_mean_cache(pipe)
    return out, stats, counter["n"]


CASES = [(8, 1), (8, 5), (8, 8), (28, 1), (28, 10), (28, 28), (50, 1), (50, 17), (50, 50)]


@pytest.mark.parametrize("n, b", CASES)
def test_budget_alone_makes_exactly_b_calls(pipe, n, b):
    out, stats, forwards = _run(pipe, MeanCacheConfig(budget=b, learn=False), n)
    assert forwards == stats.transformer_calls == b and stats.steps_computed == b and stats.finished
    assert stats.schedule.meta["source"] == "default" and stats.schedule.budget == b
    assert torch.isfinite(out).all()
    if b == n:  # every step computed: the uncached output exactly
        full = pipe(**tiny_call_kwargs("flux", num_inference_steps=n))[0]
        torch.testing.assert_close(out, full, rtol=0, atol=0)


@pytest.mark.parametrize("n, b", [(8, 3), (28, 7)])
def test_budget_alone_with_true_cfg_and_a_batch(pipe, n, b):
    kw = dict(negative_prompt="blurry", true_cfg_scale=3.0)
    _, stats, forwards = _run(pipe, MeanCacheConfig(budget=b, learn=False), n, **kw)
    assert stats.calls_per_step == 2 and forwards == stats.transformer_calls == 2 * b
    batch, stats, forwards = _run(pipe, MeanCacheConfig(budget=b, learn=False), n, prompt=["a red cube", "a blue ball"],
                                  num_images_per_prompt=1, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    assert forwards == b and batch.shape[0] == 2
    alone, _, _ = _run(pipe, MeanCacheConfig(budget=b, learn=False), n, prompt="a blue ball",
                       generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(batch[1:], alone, rtol=1e-5, atol=1e-5)  # one decision for the whole batch


def test_bad_budget_is_a_clear_error(pipe):
    for bad in (0, -3):
        with pytest.raises(ValueError, match=r"budget must be >= 1"):
            MeanCacheConfig(budget=bad)
    for bad in (2.5, True, "3"):
        with pytest.raises(TypeError, match=r"budget must be an int .*1\.\.N"):
            MeanCacheConfig(budget=bad)
    apply_mean_cache(pipe, MeanCacheConfig(budget=9))
    try:
        with pytest.raises(ValueError, match=r"budget \(num_inference_steps is N\) must be in 1\.\.N=8"):
            pipe(**tiny_call_kwargs("flux", num_inference_steps=8))
    finally:
        remove_mean_cache(pipe)
    with pytest.raises(ValueError, match="exactly one schedule source or none"):
        MeanCacheConfig(budget=5, schedule=mck.Schedule.full(8), preset="qwen-image")
    with pytest.raises(ValueError, match="only used with profile"):
        MeanCacheConfig(budget=5, gamma=3.0)
    with pytest.raises(ValueError, match="budget=B"):
        MeanCacheConfig()
    for kw in (dict(budget=5), dict(budget=5, adaptive=True)):  # jvp needs a profile; refused at construction
        with pytest.raises(ValueError, match="need a polynomial estimator"):
            MeanCacheConfig(estimators=("jvp",), **kw)


@pytest.mark.parametrize("n, b", [(8, 4), (28, 9), (50, 10)])
def test_adaptive_budget_mode_makes_exactly_b_calls_and_removal_restores(pipe, n, b):
    full = pipe(**tiny_call_kwargs("flux", num_inference_steps=n))[0]
    out, stats, forwards = _run(pipe, MeanCacheConfig(budget=b, adaptive=True), n)
    assert forwards == stats.transformer_calls == b and stats.schedule.meta["source"] == "adaptive"
    assert stats.schedule.budget == b and (out - full).abs().max() > 0
    again = pipe(**tiny_call_kwargs("flux", num_inference_steps=n))[0]
    torch.testing.assert_close(again, full, rtol=0, atol=0)  # removed: bit-identical to never applied


def test_adaptive_decisions_are_one_for_the_batch_and_both_cfg_branches(pipe):
    n = 12
    kw = dict(negative_prompt="blurry", true_cfg_scale=3.0)
    _, stats, forwards = _run(pipe, MeanCacheConfig(tol=0.02), n, **kw)
    assert stats.calls_per_step == 2 and forwards == 2 * stats.steps_computed  # both branches skipped together
    two, stats2, _ = _run(pipe, MeanCacheConfig(tol=0.02), n, prompt=["a red cube", "a blue ball"],
                          generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    assert two.shape[0] == 2 and stats2.schedule.budget == stats2.steps_computed  # one schedule for the batch


def test_tolerance_zero_computes_every_step_bit_identically(pipe):
    n = 8
    full = pipe(**tiny_call_kwargs("flux", num_inference_steps=n))[0]
    out, stats, forwards = _run(pipe, MeanCacheConfig(tol=0.0), n)
    assert forwards == n and stats.steps_computed == n
    torch.testing.assert_close(out, full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="tol must be"):
        MeanCacheConfig(tol=-1.0)
    with pytest.raises(ValueError, match="not both"):
        MeanCacheConfig(budget=3, tol=0.1)
