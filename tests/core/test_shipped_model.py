"""The small FluxPipeline shipped in meancache_kernels/assets: loads offline, is small, and follows its prompts."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from meancache_kernels import Profile, solve  # noqa: E402
from meancache_kernels.demo import SHIPPED_MODEL_DIR, SHIPPED_PROFILE  # noqa: E402
from meancache_kernels.diffusers.loading import load_pipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tools"))
import tiny_flux_data as data  # noqa: E402


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # any hub access would fail: the load must be purely local
    try:
        pipe, kwargs = load_pipeline(None)
    finally:
        mp.undo()
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


def test_assets_are_small_safetensors_in_save_pretrained_format():
    files = [p for p in SHIPPED_MODEL_DIR.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files) + SHIPPED_PROFILE.stat().st_size
    assert total <= 20 * 2**20, f"shipped assets are {total / 2**20:.1f} MiB, the limit is 20 MiB"
    index = json.loads((SHIPPED_MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    for comp in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert comp in index and (SHIPPED_MODEL_DIR / comp).is_dir(), comp
    weights = [p.name for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".safetensors")]
    assert weights and all(w.endswith(".safetensors") for w in weights), weights


def test_pipeline_components_are_the_real_classes(shipped):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    pipe, kwargs = shipped
    assert isinstance(pipe, FluxPipeline)
    assert isinstance(pipe.transformer, FluxTransformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.text_encoder_2, T5EncoderModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert kwargs["height"] == kwargs["width"] == 32
    # every prompt word is one known token (no unknown pieces)
    ids = pipe.tokenizer_2("a large purple triangle at the bottom right").input_ids
    assert pipe.tokenizer_2.unk_token_id not in ids and len(ids) == 9


def _prompt_set():
    """20 prompts: every colour, every position, all shapes, with and without a size word (distinct pairs)."""
    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    return [(colours[k % 6], data.SHAPES[k % 3], positions[k % 5], (None, "small", "large")[(k // 3) % 3])
            for k in range(20)]


def test_prompt_set_covers_every_colour_and_position():
    specs = _prompt_set()
    assert len(specs) == 20 and len({(c, p) for c, _, p, _ in specs}) == 20
    assert {s[0] for s in specs} == set(data.COLOURS) and {s[2] for s in specs} == set(data.POSITIONS)


def test_classifier_on_rendered_images():
    # the judge itself is right on the training distribution (no model involved)
    for c, s, p, z in _prompt_set():
        assert data.classify(data.render(c, s, p, z or "small")) == (c, p)


@pytest.mark.slow  # 186 s measured on a loaded 2-core machine
def test_full_step_outputs_follow_the_prompt(shipped):
    pipe, kwargs = shipped
    specs = _prompt_set()
    prompts = [data.prompt_for(*s) for s in specs]
    gens = [torch.Generator().manual_seed(1000 + k) for k in range(len(prompts))]
    images = pipe(prompts, num_inference_steps=50, generator=gens, output_type="np", **kwargs).images
    assert images.shape == (20, 32, 32, 3) and np.isfinite(images).all()
    got = [data.classify(im) for im in images]
    colour_ok = np.mean([g[0] == s[0] for g, s in zip(got, specs)])
    position_ok = np.mean([g[1] == s[2] for g, s in zip(got, specs)])
    both_ok = np.mean([g == (s[0], s[2]) for g, s in zip(got, specs)])
    assert colour_ok >= 0.9 and position_ok >= 0.9 and both_ok >= 0.9, (colour_ok, position_ok, both_ok, got)


def test_shipped_profile_matches_the_pipeline_and_solves(shipped):
    pipe, kwargs = shipped
    prof = Profile.load(SHIPPED_PROFILE)
    assert prof.num_steps == 50
    pipe.scheduler.set_timesteps(50, mu=_mu(pipe, kwargs), sigmas=np.linspace(1.0, 1 / 50, 50))
    np.testing.assert_allclose(prof.sigmas, pipe.scheduler.sigmas.double().numpy(), rtol=0, atol=1e-6)
    for b in (25, 17, 10):
        sched = solve(prof, b)
        assert sched.budget == b and sched.num_steps == 50


def _mu(pipe, kwargs):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = pipe.scheduler.config
    seq = (kwargs["height"] // (pipe.vae_scale_factor * 2)) * (kwargs["width"] // (pipe.vae_scale_factor * 2))
    return calculate_shift(seq, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)


def test_trainer_smoke_mode_runs_end_to_end(tmp_path):
    import train_tiny_flux
    from diffusers import FluxPipeline

    threads = torch.get_num_threads()
    try:
        argv = ["--smoke", "--out", str(tmp_path / "tf"), "--threads", "1", "--vae-iters", "2",
                "--transformer-iters", "3"]
        assert train_tiny_flux.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((tmp_path / "tf" / "meancache_tiny_flux.json").read_text())
    assert meta["smoke"] is True and meta["transformer_iterations"] == 3 and meta["vae_iterations"] == 2
    pipe = FluxPipeline.from_pretrained(tmp_path / "tf", local_files_only=True)
    assert pipe.transformer.config.in_channels == 16 and pipe.vae.config.latent_channels == 4
