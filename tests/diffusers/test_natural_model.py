"""The trained tiny FluxPipeline with FLUX.1's early dynamics (meancache_kernels/assets/tiny_flux_natural, built by
python/tools/train_natural_flux.py): its dynamics signature and its calibrated PSSP schedule."""

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels._assets import NATURAL_MODEL_DIR
from meancache_kernels.calibration import profile_from_trajectories
from meancache_kernels.diffusers.calibration import record_trajectory
from meancache_kernels.diffusers.dynamics import pipeline_signature
from meancache_kernels.dynamics import FLUX1

PROMPTS = [f"a photo of {s}" for s in ("astronaut", "coffee", "chelsea", "rocket")] * 2
CALL = dict(height=32, width=32, max_sequence_length=8)


@pytest.fixture(scope="module")
def pipe():
    from diffusers import FluxPipeline

    p = FluxPipeline.from_pretrained(NATURAL_MODEL_DIR)
    p.set_progress_bar_config(disable=True)
    return p


def _gens():
    return [torch.Generator().manual_seed(1000 + k) for k in range(len(PROMPTS))]


def test_signature_within_25_percent_of_flux1(pipe):
    sig = pipeline_signature(pipe, prompt=PROMPTS, num_inference_steps=28, generator=_gens(), **CALL)
    # measured 0.510 / 1.628 (FLUX.1: 0.507 / 1.860): both within 25 %, where the shipped tiny model has 0.04 / 1.06
    assert abs(sig.early5 / FLUX1.early5 - 1) <= 0.25, sig.early5
    assert abs(sig.prod10 / FLUX1.prod10 - 1) <= 0.25, sig.prod10
    assert sig.regime == "early phase" and sig.num_steps == 28
    assert "FLUX.1-dev" in sig.format()


def test_pssp_jvp_schedule_is_dense_at_the_start(pipe):
    z, v, sigmas = record_trajectory(pipe, prompt=PROMPTS, num_inference_steps=50, generator=_gens(),
                                     output_type="latent", **CALL)
    profile = profile_from_trajectories([(z, v)], sigmas, estimators=("jvp",))
    steps = mck.solve(profile, 17, estimators=("jvp",)).compute_steps
    assert steps[:5] == [0, 1, 2, 3, 4]  # measured 0-5 computed back to back, like the paper's real-model presets


def test_pipeline_signature_refuses_an_accelerated_pipeline(pipe):
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, remove_mean_cache

    apply_mean_cache(pipe, MeanCacheConfig(budget=4))
    try:
        with pytest.raises(ValueError, match="remove_mean_cache"):
            pipeline_signature(pipe, prompt=PROMPTS[:1], num_inference_steps=8, **CALL)
    finally:
        remove_mean_cache(pipe)
