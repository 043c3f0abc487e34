"""MeanCache with offloading and quantized transformers (issue 23, part 5): the same transformer calls and the same
latents as MeanCache alone, over consecutive calls (the pipeline re-installs model offloading after each), and a
removal that leaves the offloading in place.

On this CPU-only machine offloading runs with the onload device = the CPU (the hooks, their order and the
re-installation are what is tested; no memory moves). ``enable_sequential_cpu_offload`` fails with accelerate 1.16 and
torch 2.13 with or without MeanCache (accelerate re-creates each weight with ``type(w)(w, requires_grad=...)`` on a
weight it has turned into a plain Tensor): its test skips naming that error when the uncached pipeline fails so.
accelerate and torchao are optional here (importorskip)."""

import functools

import pytest
import torch

from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline

N, B = 8, 4
CPU = torch.device("cpu")


def _kw():
    return tiny_call_kwargs("flux", num_inference_steps=N)


@pytest.fixture(scope="module")
def reference():
    """Latents of the tiny Flux pipeline uncached and under MeanCache alone (B = 4 of 8)."""
    pipe = tiny_pipeline("flux")
    plain = pipe(**_kw())[0]
    apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    try:
        cached = pipe(**_kw())[0]
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.transformer_calls == B
    return plain, cached


def _check(pipe, reference, *, apply_first: bool, setup):
    """MeanCache applied before or after ``setup(pipe)`` (the offloading): two calls, each B transformer calls and
    MeanCache alone's latents; after removal, the uncached latents."""
    plain, cached = reference
    if apply_first:
        apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
        setup(pipe)
    else:
        setup(pipe)
        apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    try:
        for _ in range(2):
            out = pipe(**_kw())[0]
            stats = get_mean_cache_stats(pipe)
            assert stats.finished and stats.transformer_calls == B and stats.transformer_calls_saved == N - B
            assert torch.equal(out, cached)
    finally:
        remove_mean_cache(pipe)
    assert torch.equal(pipe(**_kw())[0], plain)


@pytest.mark.parametrize("apply_first", [True, False], ids=["meancache-first", "offload-first"])
def test_model_cpu_offload(apply_first, reference):
    pytest.importorskip("accelerate")
    pipe = tiny_pipeline("flux")
    _check(pipe, reference, apply_first=apply_first, setup=lambda p: p.enable_model_cpu_offload(device=CPU))
    # the removal left the offloading in place: accelerate's wrapper is the transformer's forward (without care, a
    # removal put the bare forward back there; and MeanCache applied after the offload was bypassed from the second
    # call on, when the pipeline re-installed the offload)
    assert hasattr(pipe.transformer, "_hf_hook")
    assert isinstance(pipe.transformer.__dict__.get("forward"), functools.partial)
    assert torch.equal(pipe(**_kw())[0], reference[0])


@pytest.mark.parametrize("apply_first", [True, False], ids=["meancache-first", "offload-first"])
def test_sequential_cpu_offload(apply_first, reference):
    pytest.importorskip("accelerate")
    probe = tiny_pipeline("flux")
    probe.enable_sequential_cpu_offload(device=CPU)
    try:
        probe(**_kw())
    except TypeError as err:  # accelerate x torch on this machine, MeanCache not involved
        pytest.skip(f"enable_sequential_cpu_offload fails without MeanCache here: {str(err).splitlines()[0]}")
    pipe = tiny_pipeline("flux")
    _check(pipe, reference, apply_first=apply_first, setup=lambda p: p.enable_sequential_cpu_offload(device=CPU))


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("apply_first", [True, False], ids=["meancache-first", "offload-first"])
def test_group_offload(offload_type, apply_first, reference):
    pipe = tiny_pipeline("flux")
    extra = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}

    def setup(p):
        p.transformer.enable_group_offload(onload_device=CPU, offload_device=CPU, offload_type=offload_type, **extra)

    _check(pipe, reference, apply_first=apply_first, setup=setup)
    hooks = {name for m in pipe.transformer.modules() if hasattr(m, "_diffusers_hook")
             for name in m._diffusers_hook.hooks}
    assert "group_offloading" in hooks and "meancache_hook" not in hooks


def _quantize_dynamic(pipe):
    pipe.transformer = torch.ao.quantization.quantize_dynamic(pipe.transformer, {torch.nn.Linear}, dtype=torch.qint8)


def _quantize_torchao(pipe):
    torchao = pytest.importorskip("torchao")
    torchao.quantization.quantize_(pipe.transformer, torchao.quantization.Int8WeightOnlyConfig())


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("quantize", [_quantize_dynamic, _quantize_torchao], ids=["torch-dynamic-int8", "torchao-int8"])
def test_quantized_transformer(quantize, reference):
    """MeanCache on an int8 transformer: B calls; it departs from MeanCache alone by the quantization error (what
    quantizing does to the uncached pipeline), not much more: measured 0.26 % against 0.26 % (torchao int8
    weight-only) and 0.64 % against 0.51 % (torch dynamic int8); MeanCache alone is 0.65 % off uncached here;
    removal gives the quantized pipeline's own latents."""
    plain, cached = reference
    pipe = tiny_pipeline("flux")
    quantize(pipe)
    plain_q = pipe(**_kw())[0]
    apply_mean_cache(pipe, MeanCacheConfig(budget=B, learn=False))
    try:
        out = pipe(**_kw())[0]
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.finished and stats.transformer_calls == B
    quantization_error = _rel(plain_q, plain)
    assert 0 < quantization_error < 0.05  # the quantization is real and small
    assert _rel(out, cached) < 2 * quantization_error
    assert not torch.equal(out, plain_q)
    assert torch.equal(pipe(**_kw())[0], plain_q)
