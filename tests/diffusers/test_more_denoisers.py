"""MeanCache on pipelines whose denoiser is not pipe.transformer alone: Ideogram 4 (a second, unconditional
transformer), DreamLite (a UNet) and VisualCloze (its loops run in inner pipelines)."""

import functools
import warnings
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers")

from meancache_kernels.diffusers import (  # noqa: E402
    MeanCacheConfig,
    apply_mean_cache,
    get_mean_cache_stats,
    is_mean_cache_enabled,
    remove_mean_cache,
    zoo,
)
from meancache_kernels.diffusers.hooks import _MEANCACHE_HOOK, _transformers  # noqa: E402

N, B = 6, 3


def _config():
    return MeanCacheConfig(budget=B, learn=False)


@functools.lru_cache(maxsize=None)
def _built(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.build(name)


@pytest.fixture
def built(request):
    """(pipe, kwargs) of the tiny ``request.param``, built once per module; MeanCache is removed after the test."""
    pipe, kwargs = _built(request.param)
    assert not is_mean_cache_enabled(pipe), "an earlier test left MeanCache applied"
    yield pipe, kwargs
    if is_mean_cache_enabled(pipe):
        remove_mean_cache(pipe)


class _Recorder:
    """Which scheduler step (its ``step_index``) each model's real forward ran at: an instance-level wrapper
    installed before MeanCache, so MeanCache's hook wraps it and a skipped call never reaches it."""

    def __init__(self, pipe, names):
        self.pipe, self.names = pipe, names
        self.steps = {name: [] for name in names}
        for name in names:
            module = getattr(pipe, name)
            original = module.forward

            def forward(*args, _name=name, _original=original, **kwargs):
                self.steps[_name].append(self.pipe.scheduler.step_index or 0)  # None before the first step
                return _original(*args, **kwargs)

            module.forward = forward

    def run(self, kwargs, **extra):
        for v in self.steps.values():
            v.clear()
        with torch.no_grad():
            return zoo._first_tensor(self.pipe(**dict(kwargs, **extra), return_dict=False))

    def close(self):
        for name in self.names:
            getattr(self.pipe, name).__dict__.pop("forward", None)


def _has_meancache_hook(module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(_MEANCACHE_HOOK) is not None


# ------------------------------------------------------------------------------ Ideogram 4
@pytest.mark.parametrize("built", ["Ideogram4Pipeline"], indirect=True)
def test_ideogram4_skips_both_models(built):
    pipe, kwargs_fn = built
    names = ("transformer", "unconditional_transformer")
    assert [name for name, _ in _transformers(pipe)] == list(names)
    rec = _Recorder(pipe, names)
    try:
        ref = rec.run(kwargs_fn(N))
        assert rec.steps == {name: list(range(N)) for name in names}
        apply_mean_cache(pipe, _config())
        assert all(_has_meancache_hook(getattr(pipe, name)) for name in names)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = rec.run(kwargs_fn(N))
        # the second model is not a change of model: no warning, no segment
        assert not [w for w in caught if "MeanCache" in str(w.message)]
        stats = get_mean_cache_stats(pipe)
        computed = stats.schedule.compute_steps
        assert len(computed) == B and computed[0] == 0
        # both models run at the computed steps only, B calls each: on a skipped step neither runs
        assert rec.steps == {name: list(computed) for name in names}
        assert stats.calls_per_step == 2
        assert (stats.transformer_calls, stats.transformer_calls_saved) == (2 * B, 2 * (N - B))
        assert (stats.steps_computed, stats.steps_skipped, stats.finished) == (B, N - B, True)
        assert stats.segments == ()
        assert torch.isfinite(out).all() and not torch.equal(out, ref)
        z0 = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))  # the latents the loop starts from
        assert float((out - ref).norm() / (ref - z0).norm()) <= zoo.REL_ERR_BOUND
        remove_mean_cache(pipe)
        assert not any(_has_meancache_hook(getattr(pipe, name)) for name in names)
        assert torch.equal(rec.run(kwargs_fn(N)), ref)
        assert rec.steps == {name: list(range(N)) for name in names}
    finally:
        rec.close()


@pytest.mark.parametrize("built", ["Ideogram4Pipeline"], indirect=True)
def test_ideogram4_unconditional_transformer_shared_is_refused(built):
    """A second pipeline sharing only the unconditional model cannot take MeanCache while the first carries it."""
    pipe, _ = built
    apply_mean_cache(pipe, _config())
    other = SimpleNamespace(unconditional_transformer=pipe.unconditional_transformer, scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="pipe.unconditional_transformer already carries a MeanCache hook"):
        apply_mean_cache(other, _config())


# ------------------------------------------------------------------------------ DreamLite
@pytest.mark.parametrize("built", ["DreamLitePipeline", "DreamLiteMobilePipeline"], indirect=True)
def test_dreamlite_unet_is_the_denoiser(built):
    pipe, kwargs_fn = built
    assert [name for name, _ in _transformers(pipe)] == ["unet"]
    rec = _Recorder(pipe, ("unet",))
    try:
        ref = rec.run(kwargs_fn(N))
        assert rec.steps["unet"] == list(range(N))
        apply_mean_cache(pipe, _config())
        assert _has_meancache_hook(pipe.unet)
        out = rec.run(kwargs_fn(N))
        stats = get_mean_cache_stats(pipe)
        assert rec.steps["unet"] == list(stats.schedule.compute_steps) and len(rec.steps["unet"]) == B
        assert (stats.calls_per_step, stats.transformer_calls, stats.transformer_calls_saved) == (1, B, N - B)
        assert stats.finished and not torch.equal(out, ref)
        # another N: B calls again
        rec.run(kwargs_fn(N + 2))
        assert len(rec.steps["unet"]) == B and get_mean_cache_stats(pipe).num_steps == N + 2
        remove_mean_cache(pipe)
        assert not _has_meancache_hook(pipe.unet)
        assert torch.equal(rec.run(kwargs_fn(N)), ref)
    finally:
        rec.close()


def test_unet_only_without_a_transformer():
    """The unet is hooked only in a pipeline that has no transformer; a pipeline with neither is refused."""
    unet, transformer = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    assert _transformers(SimpleNamespace(unet=unet)) == [("unet", unet)]
    assert _transformers(SimpleNamespace(unet=unet, transformer=transformer)) == [("transformer", transformer)]
    with pytest.raises(TypeError, match="has no denoiser MeanCache can hook"):
        apply_mean_cache(SimpleNamespace(vae=torch.nn.Linear(1, 1)), _config())


# ------------------------------------------------------------------------------ VisualCloze
@pytest.mark.parametrize("built", ["VisualClozePipeline"], indirect=True)
def test_visualcloze_outer_pipeline(built):
    pipe, kwargs_fn = built
    inner = (pipe.generation_pipe, pipe.upsampling_pipe)
    rec = _Recorder(pipe, ("transformer",))
    try:
        ref = rec.run(kwargs_fn(N))
        apply_mean_cache(pipe, _config())  # not refused: its inner pipelines' calls are its calls
        assert is_mean_cache_enabled(pipe) and _has_meancache_hook(pipe.transformer)
        assert all("maybe_free_model_hooks" in p.__dict__ for p in inner)
        out = rec.run(kwargs_fn(N))
        stats = get_mean_cache_stats(pipe)
        assert rec.steps["transformer"] == list(stats.schedule.compute_steps) and len(rec.steps["transformer"]) == B
        assert (stats.transformer_calls, stats.steps_skipped, stats.finished) == (B, N - B, True)
        assert not torch.equal(out, ref)
        # the inner pipe carries the same transformer: MeanCache is on it already
        with pytest.raises(ValueError, match="already carries a MeanCache hook"):
            apply_mean_cache(pipe.generation_pipe, _config())
        remove_mean_cache(pipe)
        assert not is_mean_cache_enabled(pipe) and not _has_meancache_hook(pipe.transformer)
        assert not any("maybe_free_model_hooks" in p.__dict__ for p in inner)
        assert torch.equal(rec.run(kwargs_fn(N)), ref)
        with pytest.raises(ValueError, match="not applied"):
            get_mean_cache_stats(pipe)
    finally:
        rec.close()


@pytest.mark.parametrize("built", ["VisualClozePipeline"], indirect=True)
def test_visualcloze_interrupt_in_the_inner_pipeline(built):
    """The callback gets the inner generation pipe; its interrupt flag is the one MeanCache reads at the end."""
    pipe, kwargs_fn = built
    seen = []

    def interrupt(p, i, t, kw):
        seen.append(p)
        if i == 1:
            p._interrupt = True
        return kw

    apply_mean_cache(pipe, _config())
    with torch.no_grad():
        pipe(**kwargs_fn(N), callback_on_step_end=interrupt, return_dict=False)  # no "ended after 2 of 6" error
    stats = get_mean_cache_stats(pipe)
    assert seen and all(p is pipe.generation_pipe for p in seen)
    assert not stats.finished and stats.steps_computed + stats.steps_skipped == 2


@pytest.mark.parametrize("built", ["VisualClozePipeline"], indirect=True)
def test_visualcloze_from_pipe_sibling_is_refused(built):
    pipe, kwargs_fn = built
    sibling = type(pipe).from_pipe(pipe)
    apply_mean_cache(pipe, _config())
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(RuntimeError, match="shares its scheduler"), torch.no_grad():
            sibling(**kwargs_fn(N), return_dict=False)
        assert calls == []
    finally:
        handle.remove()


@pytest.mark.slow
@pytest.mark.parametrize("built", ["VisualClozePipeline"], indirect=True)
def test_visualcloze_with_upsampling(built):
    """upsampling_strength > 0: the generation then the upsampling (image-to-image) pass, B calls each."""
    pipe, kwargs_fn = built
    rec = _Recorder(pipe, ("transformer",))
    try:
        for strength, upsampling_steps in ((1.0, N), (0.5, N // 2)):
            extra = dict(upsampling_strength=strength, output_type="pt")
            ref = rec.run(kwargs_fn(N), **extra)
            assert len(rec.steps["transformer"]) == N + upsampling_steps
            apply_mean_cache(pipe, _config())
            out = rec.run(kwargs_fn(N), **extra)
            stats = get_mean_cache_stats(pipe)  # the last generation: the upsampling
            assert len(rec.steps["transformer"]) == 2 * B
            assert (stats.num_steps, stats.transformer_calls, stats.finished) == (upsampling_steps, B, True)
            assert not torch.equal(out, ref)
            remove_mean_cache(pipe)
            assert torch.equal(rec.run(kwargs_fn(N), **extra), ref)
    finally:
        rec.close()
