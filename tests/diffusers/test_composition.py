"""MeanCache with other caches on the same transformer, and with DiffusionPipeline.from_pipe siblings (issue 23,
part 4)."""

import warnings

import pytest
import torch

from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_image_call_kwargs

N = 8


def _cache_configs():
    from diffusers import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    def timestep():
        return 500

    return {
        "FirstBlockCacheConfig": FirstBlockCacheConfig(threshold=0.1),
        "TaylorSeerCacheConfig": TaylorSeerCacheConfig(),
        "MagCacheConfig": MagCacheConfig(calibrate=True, num_inference_steps=N),
        "FasterCacheConfig": FasterCacheConfig(spatial_attention_block_skip_range=2, is_guidance_distilled=True,
                                               current_timestep_callback=timestep),
        "PyramidAttentionBroadcastConfig": PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                                                           current_timestep_callback=timestep),
    }


def _hooked(pipe) -> bool:
    registry = getattr(pipe.transformer, "_diffusers_hook", None)
    return registry is not None and registry.get_hook("meancache_hook") is not None


@pytest.mark.parametrize("name", list(_cache_configs()))
def test_another_diffusers_cache_is_refused(name, tiny_pipe):
    pipe = tiny_pipe("flux")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FasterCache: "experimental"
        pipe.transformer.enable_cache(_cache_configs()[name])
    try:
        with pytest.raises(ValueError, match=rf"pipe.transformer already has another cache enabled \(diffusers' {name}"
                                             r" \(enable_cache\)"):
            apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
        assert getattr(pipe, "_meancache_context", None) is None and not _hooked(pipe)
        assert "step" not in pipe.scheduler.__dict__  # the scheduler was not adapted either
    finally:
        pipe.transformer.disable_cache()
    apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))  # fine once the other cache is gone
    remove_mean_cache(pipe)


def test_a_diffusers_cache_hook_applied_directly_is_refused(tiny_pipe):
    """apply_first_block_cache without enable_cache: no _cache_config, but its hooks are on the blocks."""
    from diffusers import FirstBlockCacheConfig
    from diffusers.hooks import apply_first_block_cache

    pipe = tiny_pipe("flux")
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.1))
    try:
        assert not pipe.transformer.is_cache_enabled
        with pytest.raises(ValueError, match=r"diffusers hook 'fbc_\w+' on transformer_blocks\.0"):
            apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
    finally:
        for module in pipe.transformer.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                for hook in list(registry.hooks):
                    registry.remove_hook(hook, recurse=False)
    assert getattr(pipe, "_meancache_context", None) is None


def test_cache_dit_is_refused(tiny_pipe):
    """cache-dit replaces the transformer's blocks by its own modules (classes of the cache_dit package)."""
    pipe = tiny_pipe("flux")
    CachedBlocks = type("CachedBlocks", (torch.nn.Module,), {"__module__": "cache_dit.caching.cache_blocks"})
    pipe.transformer.add_module("_cached_blocks", CachedBlocks())
    try:
        with pytest.raises(ValueError, match=r"cache-dit \(CachedBlocks on _cached_blocks\)"):
            apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
    finally:
        del pipe.transformer._cached_blocks
    assert getattr(pipe, "_meancache_context", None) is None


def test_enable_cache_after_mean_cache_raises(tiny_pipe):
    from diffusers import FirstBlockCacheConfig

    pipe = tiny_pipe("flux")
    ref = pipe(**tiny_call_kwargs("flux", num_inference_steps=N))[0]
    apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
    try:
        with pytest.raises(ValueError, match=r"MeanCache is applied to this FluxTransformer2DModel \(pipe.transformer"):
            pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
        assert not pipe.transformer.is_cache_enabled
        pipe(**tiny_call_kwargs("flux", num_inference_steps=N))
        assert get_mean_cache_stats(pipe).transformer_calls == 4
    finally:
        remove_mean_cache(pipe)
    assert "enable_cache" not in pipe.transformer.__dict__
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))  # diffusers' own again
    assert pipe.transformer.is_cache_enabled
    pipe.transformer.disable_cache()
    assert torch.equal(pipe(**tiny_call_kwargs("flux", num_inference_steps=N))[0], ref)


def test_from_pipe_sibling_is_refused_before_any_call(tiny_pipe):
    from diffusers import FluxImg2ImgPipeline

    pipe = tiny_pipe("flux")

    def kw():  # a fresh seeded generator every call
        return tiny_call_kwargs("flux", num_inference_steps=N)

    ref = pipe(**kw())[0]
    sibling = FluxImg2ImgPipeline.from_pipe(pipe)
    sibling.set_progress_bar_config(disable=True)
    assert sibling.scheduler is pipe.scheduler and sibling.transformer is pipe.transformer
    ref_sibling = sibling(**tiny_image_call_kwargs("flux", "img2img", num_inference_steps=N))[0]
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    apply_mean_cache(pipe, MeanCacheConfig(budget=4, learn=False))
    try:
        with pytest.raises(RuntimeError, match=r"runs a FluxImg2ImgPipeline, which shares its scheduler .* the "
                                               r"FluxPipeline MeanCache was applied to \(DiffusionPipeline.from_pipe"):
            sibling(**tiny_image_call_kwargs("flux", "img2img", num_inference_steps=N))
        assert calls == []
        with pytest.raises(ValueError, match="already carries a MeanCache hook .*from_pipe"):
            apply_mean_cache(sibling, MeanCacheConfig(budget=4, learn=False))
        out = pipe(**kw())[0]  # the pipeline MeanCache was applied to is unaffected
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        handle.remove()
    assert stats.finished and stats.transformer_calls == 4 and len(calls) == N
    assert torch.equal(pipe(**kw())[0], ref)
    assert not torch.equal(out, ref)
    # Moved to the sibling: it is accelerated, its interrupt and stats are its own.
    apply_mean_cache(sibling, MeanCacheConfig(budget=2, learn=False))
    try:
        def stop(p, i, t, kwargs):
            p._interrupt = i >= 1
            return kwargs

        sibling(**tiny_image_call_kwargs("flux", "img2img", num_inference_steps=N, callback_on_step_end=stop))
        stats = get_mean_cache_stats(sibling)
        with pytest.raises(ValueError, match="not applied"):
            get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(sibling)
    assert not stats.finished and stats.steps_computed + stats.steps_skipped == 2
    assert torch.equal(sibling(**tiny_image_call_kwargs("flux", "img2img", num_inference_steps=N))[0], ref_sibling)
