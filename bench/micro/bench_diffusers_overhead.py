"""Cost of MeanCache's diffusers bookkeeping per denoising step, against a tiny transformer step (pytest-benchmark).

    python -m pytest bench/micro/bench_diffusers_overhead.py --benchmark-only -q --benchmark-columns=median,iqr,rounds

Groups (one per latent size):
- ``loop-plain``: N = 50 steps of a denoising loop (transformer call + ``scheduler.step``) with a *null* transformer
  (returns a precomputed tensor), no MeanCache: the loop's own cost;
- ``loop-full``: the same loop under ``apply_mean_cache`` with every step computed: hook + adapter + recording;
- ``loop-b10``: the same loop with the published Qwen-Image B=10 schedule: 40 skipped steps (fused estimate) too;
- ``tiny-transformer``: one forward of the tiny FluxTransformer2DModel of ``tiny_pipeline("flux")`` (about 70k
  parameters, 64 image tokens), the smallest real transformer step one would cache.
The bookkeeping per step is (loop-X - loop-plain) / 50; bench/RESULTS.md reports it as a fraction of the tiny
transformer step. Latent sizes: ``tiny`` (1 x 64 x 4, the tiny Flux latent) and ``flux1024`` (1 x 4096 x 64, FLUX.1 at
1024 x 1024), float32 on the CPU.
"""

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline

N = 50
SHAPES = {"tiny": (1, 64, 4), "flux1024": (1, 4096, 64)}


class _NullTransformer(torch.nn.Module):
    """Stands in for the transformer: returns a fixed velocity (the loop's cost without model work)."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, hidden_states, timestep=None):
        return (self.v,)


class _LoopPipe:
    """The part of a diffusers pipeline MeanCache touches: ``transformer``, ``scheduler`` and the loop."""

    def __init__(self, shape):
        from diffusers import FlowMatchEulerDiscreteScheduler

        g = torch.Generator().manual_seed(0)
        self.z0 = torch.randn(shape, generator=g)
        self.transformer = _NullTransformer(torch.randn(shape, generator=g) * 0.1)
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)

    def __call__(self):
        self.scheduler.set_timesteps(N)
        z = self.z0
        for t in self.scheduler.timesteps:
            v = self.transformer(z, t)[0]
            z = self.scheduler.step(v, t, z, return_dict=False)[0]
        return z


SCHEDULES = {"loop-plain": None, "loop-full": mck.Schedule.full(N), "loop-b10": mck.presets.get("qwen-image", 10)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("loop", list(SCHEDULES))
def test_loop(benchmark, loop, shape):
    benchmark.group = f"latent {shape}"
    pipe = _LoopPipe(SHAPES[shape])
    schedule = SCHEDULES[loop]
    if schedule is not None:
        apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule, backend="torch"))
    try:
        out = benchmark(pipe)
    finally:
        if schedule is not None:
            remove_mean_cache(pipe)
    assert out.shape == SHAPES[shape] and torch.isfinite(out).all()
    benchmark.extra_info["steps"] = N


def test_tiny_transformer(benchmark):
    benchmark.group = "latent tiny"
    pipe = tiny_pipeline("flux")
    captured = {}

    def capture(module, args, kwargs):
        captured.setdefault("kwargs", kwargs)

    handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    pipe(**tiny_call_kwargs("flux", num_inference_steps=1))
    handle.remove()
    kwargs = captured["kwargs"]

    @torch.no_grad()
    def step():
        return pipe.transformer(**kwargs)[0]

    out = benchmark(step)
    assert out.shape == kwargs["hidden_states"].shape
