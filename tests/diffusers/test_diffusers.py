"""MeanCache on diffusers pipelines (tiny random components, CPU, offline)."""

import subprocess
import sys
import warnings

import numpy as np
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
from meancache_kernels.diffusers.testing import CALLS_PER_STEP, KINDS, tiny_call_kwargs  # noqa: E402

N = 8
# computed [0, 1, 2, 4, 7]; skipped 3 (K=1), 5 and 6 (K=2): exercises reuse and the JVP.
SCHEDULE = mck.Schedule.from_official([0, 1, 2, 4, 7], [0, 0, 1, 2], N)


def _latents(out):
    return out[0]


def _count_forwards(module):
    """Count real forward executions (installed under any hook, so skipped calls are not counted)."""
    counter = {"n": 0}
    original = module.forward

    def forward(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    module.forward = forward
    return counter, lambda: module.__dict__.pop("forward", None)


# ---------------------------------------------------------------------------------------------------- config
def test_config_validation():
    assert MeanCacheConfig(schedule=SCHEDULE).schedule is SCHEDULE
    assert MeanCacheConfig(preset="qwen-image", budget=10).budget == 10
    with pytest.raises(ValueError, match="exactly one"):
        MeanCacheConfig()
    with pytest.raises(ValueError, match="exactly one"):
        MeanCacheConfig(schedule=SCHEDULE, preset="qwen-image", budget=10)
    with pytest.raises(TypeError, match="Schedule"):
        MeanCacheConfig(schedule=[0, 1, 2])
    with pytest.raises(ValueError, match="budget"):
        MeanCacheConfig(schedule=SCHEDULE, budget=5)
    with pytest.raises(ValueError, match="budget is required"):
        MeanCacheConfig(preset="qwen-image")
    with pytest.raises(ValueError, match="available budgets"):
        MeanCacheConfig(preset="qwen-image", budget=11)
    with pytest.raises(ValueError, match="unknown preset"):
        MeanCacheConfig(preset="sdxl", budget=10)
    with pytest.raises(TypeError, match="budget must be an int"):
        MeanCacheConfig(preset="qwen-image", budget=10.0)
    with pytest.raises(ValueError, match="gamma"):
        MeanCacheConfig(schedule=SCHEDULE, gamma=0.0)
    with pytest.raises(ValueError, match="backend"):
        MeanCacheConfig(schedule=SCHEDULE, backend="cuda")
    with pytest.raises(TypeError, match="MeanCacheConfig"):
        apply_mean_cache(object(), {"schedule": SCHEDULE})


# ---------------------------------------------------------------------------------------------------- per pipeline
@pytest.mark.parametrize("kind, dtype", [(k, torch.float32) for k in KINDS] + [("flux", torch.bfloat16)])
def test_pipeline_calls_core_equivalence_and_removal(kind, dtype, record_steps, tiny_pipe):
    pipe = tiny_pipe(kind, dtype)
    reference = _latents(pipe(**tiny_call_kwargs(kind, num_inference_steps=N)))  # never accelerated

    counter, uncount = _count_forwards(pipe.transformer)
    seen, unrecord = record_steps(pipe.scheduler)
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        out = _latents(pipe(**tiny_call_kwargs(kind, num_inference_steps=N)))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        uncount()
        unrecord()

    calls = CALLS_PER_STEP[kind]
    assert counter["n"] == SCHEDULE.budget * calls
    assert stats.transformer_calls == SCHEDULE.budget * calls
    assert stats.transformer_calls_saved == (N - SCHEDULE.budget) * calls
    assert (stats.steps_computed, stats.steps_skipped, stats.num_steps) == (SCHEDULE.budget, N - SCHEDULE.budget, N)
    assert stats.calls_per_step == calls and stats.finished and stats.schedule == SCHEDULE
    assert len(seen) == SCHEDULE.budget

    # The core sampler, driven with the pipeline's guided velocity as model function: it must ask for the velocity
    # at the states the pipeline evaluated (checked) and end where the pipeline ended.
    sigmas = pipe.scheduler.sigmas.double().tolist()
    computed = iter(zip(SCHEDULE.compute_steps, seen))

    def model_fn(z, sigma):
        i, (z_pipe, v_pipe) = next(computed)
        assert sigma == sigmas[i]
        torch.testing.assert_close(z, z_pipe, rtol=1e-5, atol=1e-5)
        return v_pipe

    expected = mck.sample(model_fn, seen[0][0], sigmas, SCHEDULE)
    assert out.dtype == expected.dtype == dtype
    torch.testing.assert_close(out.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    assert (out - reference).abs().max() > 1e-3  # skipping steps does change the result

    # Removed: bit-identical to never applied.
    again = _latents(pipe(**tiny_call_kwargs(kind, num_inference_steps=N)))
    assert torch.equal(again, reference)
    assert "step" not in pipe.scheduler.__dict__ and "set_timesteps" not in pipe.scheduler.__dict__
    assert "maybe_free_model_hooks" not in pipe.__dict__ and "forward" not in pipe.transformer.__dict__


@pytest.mark.parametrize("kind", ["flux", "hunyuan-video"])
def test_true_cfg_on_guidance_distilled_pipelines_skips_both_calls(kind, tiny_pipe):
    pipe = tiny_pipe(kind)
    counter, uncount = _count_forwards(pipe.transformer)
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        pipe(**tiny_call_kwargs(kind, num_inference_steps=N, negative_prompt="blurry", true_cfg_scale=3.0))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        uncount()
    assert stats.calls_per_step == 2
    assert counter["n"] == stats.transformer_calls == SCHEDULE.budget * 2
    assert stats.transformer_calls_saved == (N - SCHEDULE.budget) * 2


def test_full_schedule_is_bit_identical_to_no_cache(tiny_pipe):
    pipe = tiny_pipe("qwen-image")
    reference = _latents(pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N)))
    apply_mean_cache(pipe, MeanCacheConfig(schedule=mck.Schedule.full(N)))
    try:
        out = _latents(pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N)))
        assert get_mean_cache_stats(pipe).transformer_calls_saved == 0
    finally:
        remove_mean_cache(pipe)
    assert torch.equal(out, reference)


def test_wan_two_transformers(tiny_pipe):
    pipe = tiny_pipe("wan", two_stage=True)
    counters = [_count_forwards(pipe.transformer), _count_forwards(pipe.transformer_2)]
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        pipe(**tiny_call_kwargs("wan", num_inference_steps=N))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        for _, undo in counters:
            undo()
    made = [c["n"] for c, _ in counters]
    assert min(made) > 0  # both stages ran
    assert sum(made) == stats.transformer_calls == SCHEDULE.budget * 2
    assert stats.transformer_calls_saved == (N - SCHEDULE.budget) * 2


def test_double_apply_and_remove_errors(tiny_pipe):
    pipe = tiny_pipe("flux")
    with pytest.raises(ValueError, match="not applied"):
        remove_mean_cache(pipe)
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        with pytest.raises(ValueError, match="already applied"):
            apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    finally:
        remove_mean_cache(pipe)
    with pytest.raises(ValueError, match="not applied"):
        get_mean_cache_stats(pipe)


def test_other_num_steps_resets_and_fits_or_raises(tiny_pipe):
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        first = _latents(pipe(**tiny_call_kwargs("flux", num_inference_steps=N)))
        with pytest.warns(UserWarning, match="fitting"):
            pipe(**tiny_call_kwargs("flux", num_inference_steps=6))
        stats = get_mean_cache_stats(pipe)
        assert stats.num_steps == 6 and stats.finished and stats.schedule.num_steps == 6
        assert stats.steps_computed + stats.steps_skipped == 6
        assert stats.transformer_calls == stats.steps_computed == stats.schedule.budget
        again = _latents(pipe(**tiny_call_kwargs("flux", num_inference_steps=N)))
        assert get_mean_cache_stats(pipe).num_steps == N
    finally:
        remove_mean_cache(pipe)
    assert torch.equal(again, first)


def test_source_grid_for_fitting_is_the_pipeline_grid_at_the_schedule_n():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from meancache_kernels.diffusers.config import same_curve_sigmas
    from meancache_kernels.diffusers.scheduler import _grid_for

    def grid(n, **kw):
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        sched.set_timesteps(n, **kw)
        return sched.sigmas.double().tolist()

    # Default grids (no custom sigmas): recomputed exactly by a fresh scheduler.
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert _grid_for(sched, {"num_inference_steps": 6}, grid(6), 12) == pytest.approx(grid(12), abs=1e-7)
    # Custom linear sigmas linspace(1, 1/N, N) (FLUX.1, Qwen-Image): the same relative positions on the curve.
    flux_like = [1.0 - k / 6 for k in range(6)]
    g6, g12 = grid(6, sigmas=flux_like), grid(12, sigmas=[1.0 - k / 12 for k in range(12)])
    assert _grid_for(sched, {"sigmas": flux_like}, g6, 12)[::2] == pytest.approx(g6, abs=1e-7)
    assert same_curve_sigmas(g6, 3) == pytest.approx(grid(3, sigmas=[1.0, 2 / 3, 1 / 3]), abs=1e-7)
    fitted = same_curve_sigmas(g6, 12)
    assert fitted[-1] == 0.0 and all(a > b for a, b in zip(fitted, fitted[1:]))
    assert max(abs(a - b) for a, b in zip(fitted, g12)) < 0.03  # off-grid points: linear interpolation of the curve


def test_call_that_raised_midway_does_not_poison_the_next(tiny_pipe):
    pipe = tiny_pipe("qwen-image")
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        clean = _latents(pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N)))

        def boom(p, i, t, kwargs):
            if i == 4:
                raise KeyError("user callback failed")
            return kwargs

        with pytest.raises(KeyError, match="user callback"):
            pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N, callback_on_step_end=boom))
        assert get_mean_cache_stats(pipe).finished is False
        after = _latents(pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N)))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert torch.equal(after, clean)
    assert stats.finished and stats.transformer_calls == SCHEDULE.budget * 2


@pytest.mark.parametrize("kind", ["flux", "qwen-image", "sd3"])
def test_batch_of_two_prompts_equals_each_alone(kind, record_steps, tiny_pipe):
    pipe = tiny_pipe(kind)
    prompts = ["a red cube", "two blue spheres"]
    seen, unrecord = record_steps(pipe.scheduler)  # under the adapter: sees the computed steps
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        alone, inits = [], []
        for k, prompt in enumerate(prompts):
            seen.clear()
            alone.append(_latents(pipe(**tiny_call_kwargs(kind, prompt=prompt, num_inference_steps=N, seed=k))))
            inits.append(seen[0][0])
        kw = tiny_call_kwargs(kind, prompt=prompts, num_inference_steps=N, latents=torch.cat(inits))
        if "negative_prompt" in kw:
            kw["negative_prompt"] = [kw["negative_prompt"]] * 2
        both = _latents(pipe(**kw))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
        unrecord()
    assert stats.transformer_calls == SCHEDULE.budget * CALLS_PER_STEP[kind]
    assert (alone[0] - alone[1]).abs().max() > 1e-3
    for k in range(2):
        torch.testing.assert_close(both[k : k + 1], alone[k], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- errors
def test_unsupported_schedulers_raise_type_error(tiny_pipe):
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        FlowMatchHeunDiscreteScheduler,
    )

    pipe = tiny_pipe("flux")
    original = pipe.scheduler
    try:
        for scheduler, match in (
            (DDIMScheduler(), "DDIMScheduler"),  # not flow matching
            (DPMSolverMultistepScheduler(), "flow"),  # DPM-Solver++ outside flow mode
            (FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), "stochastic_sampling"),
            (FlowMatchHeunDiscreteScheduler(), r"jvp.*taylor1.*taylor2"),  # supported, but not with the paper's jvp
        ):
            pipe.scheduler = scheduler
            with pytest.raises(TypeError, match=match):
                apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
            assert getattr(pipe, "_meancache_context", None) is None
            registry = getattr(pipe.transformer, "_diffusers_hook", None)
            assert registry is None or registry.get_hook("meancache_hook") is None
    finally:
        pipe.scheduler = original


def test_replaced_scheduler_raises(tiny_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = tiny_pipe("flux")
    original = pipe.scheduler
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler()  # not adapted: must not run silently without MeanCache
        with pytest.raises(RuntimeError, match="scheduler was replaced"):
            pipe(**tiny_call_kwargs("flux", num_inference_steps=N))
    finally:
        pipe.scheduler = original
        remove_mean_cache(pipe)


def test_interrupted_call_is_not_an_error(tiny_pipe):
    pipe = tiny_pipe("flux")

    def stop(p, i, t, kwargs):
        if i == 3:
            p._interrupt = True
        return kwargs

    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        pipe(**tiny_call_kwargs("flux", num_inference_steps=N, callback_on_step_end=stop))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert not stats.finished and stats.steps_computed + stats.steps_skipped == 4


def test_scheduler_misuse_raises(tiny_pipe):
    # (starting mid-schedule is supported: tests/diffusers/test_img2img.py)
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(schedule=SCHEDULE))
    try:
        sched = pipe.scheduler
        z, v = torch.randn(1, 16, 4), torch.randn(1, 16, 4)
        sched.set_timesteps(N)
        with pytest.raises(TypeError, match="per_token_timesteps"):
            sched.step(v, sched.timesteps[0], z, per_token_timesteps=torch.full((1, 16), 1000.0))
        sched.set_timesteps(N)
        for i in range(N):
            z = sched.step(v, sched.timesteps[i], z, return_dict=False)[0]
        with pytest.raises(RuntimeError, match="called 9 times"):
            sched.step(v, sched.timesteps[-1], z)
    finally:
        remove_mean_cache(pipe)


class _ManualEulerPipeline:
    """A loop that integrates by hand instead of calling scheduler.step (MeanCache cannot act on it)."""

    def __new__(cls, transformer, scheduler):
        from diffusers import DiffusionPipeline

        class ManualEulerPipeline(DiffusionPipeline):
            def __init__(self, transformer, scheduler):
                super().__init__()
                self.register_modules(transformer=transformer, scheduler=scheduler)

            def __call__(self, latents, steps, **transformer_kwargs):
                self.scheduler.set_timesteps(steps)
                sigmas = self.scheduler.sigmas
                for i, t in enumerate(self.scheduler.timesteps):
                    v = self.transformer(hidden_states=latents, timestep=t.expand(latents.shape[0]) / 1000,
                                         return_dict=False, **transformer_kwargs)[0]
                    latents = latents + (sigmas[i + 1] - sigmas[i]) * v
                self.maybe_free_model_hooks()
                return latents

        return ManualEulerPipeline(transformer, scheduler)


class _PlainVelocity(torch.nn.Module):
    """A transformer stand-in without diffusers' CacheMixin (like SD3's and Z-Image's transformers)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, hidden_states, timestep, return_dict=False):
        return (self.proj(hidden_states),)


@pytest.mark.parametrize("steps", [3, 8])
@pytest.mark.parametrize("model", ["flux", "plain"])
def test_loop_without_scheduler_step_raises_at_first_call(steps, model, tiny_pipe):
    flux = tiny_pipe("flux")
    if model == "flux":
        transformer = flux.transformer
        kw = {
            "encoder_hidden_states": torch.randn(1, 4, 32),
            "pooled_projections": torch.randn(1, 32),
            "txt_ids": torch.zeros(4, 3),
            "img_ids": torch.zeros(16, 3),
        }
    else:
        transformer, kw = _PlainVelocity(), {}
    manual = _ManualEulerPipeline(transformer, flux.scheduler)
    apply_mean_cache(manual, MeanCacheConfig(schedule=mck.Schedule.full(steps)))
    try:
        with pytest.raises(RuntimeError, match="scheduler.step"):
            manual(torch.randn(1, 16, 4), steps, **kw)
    finally:
        remove_mean_cache(manual)
    assert "maybe_free_model_hooks" not in manual.__dict__


# ---------------------------------------------------------------------------------------------------- faithfulness
def test_qwen_image_preset_matches_loop_written_from_the_design(tiny_pipe):
    """Qwen-Image B=10 preset, 50 steps, true CFG: equals a loop written directly from docs/design.md section 2."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    pipe = tiny_pipe("qwen-image")
    n, scale = 50, 4.0
    sched = mck.presets.get("qwen-image", 10)
    kw = tiny_call_kwargs("qwen-image", num_inference_steps=n, true_cfg_scale=scale)

    # --- the loop from the design: both CFG passes, guidance combine, norm rescale, estimator on the guided v.
    with torch.no_grad():
        pe, pm = pipe.encode_prompt(prompt=kw["prompt"], device="cpu", max_sequence_length=16)
        ne, nm = pipe.encode_prompt(prompt=kw["negative_prompt"], device="cpu", max_sequence_length=16)
        h = w = 32
        z = pipe.prepare_latents(1, pipe.transformer.config.in_channels // 4, h, w, pe.dtype, "cpu",
                                 torch.Generator().manual_seed(0), None)
        img_shapes = [[(1, h // pipe.vae_scale_factor // 2, w // pipe.vae_scale_factor // 2)]]
        cfg = pipe.scheduler.config
        mu = calculate_shift(z.shape[1], cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
        pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
        ts, s = pipe.scheduler.timesteps, pipe.scheduler.sigmas.double().tolist()
        zs, vs = [], []
        full = z.clone()
        for i in range(n):
            def guided(x):
                args = dict(hidden_states=x, timestep=ts[i].expand(1) / 1000, img_shapes=img_shapes, return_dict=False)
                cond = pipe.transformer(encoder_hidden_states=pe, encoder_hidden_states_mask=pm, **args)[0]
                uncond = pipe.transformer(encoder_hidden_states=ne, encoder_hidden_states_mask=nm, **args)[0]
                comb = uncond + scale * (cond - uncond)
                return comb * (cond.norm(dim=-1, keepdim=True) / comb.norm(dim=-1, keepdim=True))

            if sched.compute[i]:
                v = guided(z)
            else:
                k = min(sched.spans[i], i)
                a = i - k
                avg = (z - zs[a]) / (s[i] - s[a])
                jvp = (vs[a] - avg) / (s[i] - s[a])
                v = vs[i - 1] - jvp * (s[i + 1] - s[i])
            zs.append(z)
            vs.append(v)
            z = z + (s[i + 1] - s[i]) * v
            full = full + (s[i + 1] - s[i]) * guided(full)

    apply_mean_cache(pipe, MeanCacheConfig(preset="qwen-image", budget=10))
    try:
        out = _latents(pipe(**kw))
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.transformer_calls == 20 and stats.transformer_calls_saved == 80
    torch.testing.assert_close(out, z, rtol=1e-5, atol=1e-5)
    assert (out - full).abs().max() > 1e-3  # the tolerance above can tell MeanCache from the full loop


# ---------------------------------------------------------------------------------------------------- layering
def test_testing_module_forwards_tiny_pipelines_lazily():
    code = (
        "import sys, meancache_kernels.testing as t\n"
        "assert 'diffusers' not in sys.modules, 'importing meancache_kernels.testing imported diffusers'\n"
        "assert t.tiny_pipeline.__module__ == 'meancache_kernels.diffusers.testing'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import meancache_kernels.testing as t

    with pytest.raises(AttributeError):
        t.no_such_helper  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="kind must be one of"):
            t.tiny_pipeline("sdxl")


# ---------------------------------------------------------------------------------------------------- calibration
def test_recorded_trajectory_is_the_pipeline_generation(tiny_pipe):
    from meancache_kernels.diffusers.calibration import record_trajectory

    pipe = tiny_pipe("flux")
    out = _latents(pipe(**tiny_call_kwargs("flux", num_inference_steps=N)))
    z, v, sigmas = record_trajectory(pipe, **tiny_call_kwargs("flux", num_inference_steps=N))
    assert z.shape == (N + 1, *out.shape) and v.shape == (N, *out.shape) and len(sigmas) == N + 1
    assert torch.equal(z[-1], out)
    for i in range(N):  # every recorded state follows from the previous one with the recorded velocity
        torch.testing.assert_close(z[i + 1], z[i] + (sigmas[i + 1] - sigmas[i]) * v[i], rtol=1e-6, atol=1e-6)
    assert "step" not in pipe.scheduler.__dict__


def test_profile_config_solves_for_the_pipeline(tiny_pipe):
    from meancache_kernels.diffusers.calibration import calibrate_pipeline

    pipe = tiny_pipe("qwen-image")
    kw = tiny_call_kwargs("qwen-image")
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    profile = calibrate_pipeline(pipe, ["a red cube", "a green tree", "two cats"], N, max_span=3, batch_size=2,
                                 progress=False, **kw)
    assert profile.num_steps == N and profile.meta["num_samples"] == 3
    assert profile.meta["pipeline"] == "QwenImagePipeline"
    with pytest.raises(ValueError, match="budget"):
        MeanCacheConfig(profile=profile, budget=N + 1)
    with pytest.raises(TypeError, match="Profile"):
        MeanCacheConfig(profile={"costs": None}, budget=4)
    config = MeanCacheConfig(profile=profile, budget=4, gamma=2.0)
    expected = mck.solve(profile, 4, gamma=2.0)
    apply_mean_cache(pipe, config)
    try:
        pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=N))
        stats = get_mean_cache_stats(pipe)
        with pytest.warns(UserWarning, match="fitting"):
            pipe(**tiny_call_kwargs("qwen-image", num_inference_steps=12))
        fitted = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    assert stats.schedule == expected and stats.transformer_calls == 4 * 2
    assert fitted.num_steps == 12 and fitted.finished and fitted.schedule.compute[0]


def test_cli_calibrate_writes_a_profile(tmp_path, capsys, tiny_pipe):
    from meancache_kernels.cli import main

    pipe_dir = tmp_path / "tiny-flux"
    tiny_pipe("flux").save_pretrained(pipe_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# calibration prompts\na red cube\n\ntwo blue spheres\n", encoding="utf-8")
    out = tmp_path / "flux.profile"
    argv = ["calibrate", "--pipeline", str(pipe_dir), "--prompts", str(prompts), "--steps", "6", "--out", str(out),
            "--height", "16", "--width", "16", "--max-span", "2", "--no-progress"]
    assert main(argv) == 0
    profile = mck.Profile.load(out)
    assert profile.num_steps == 6 and profile.k_max == 2
    assert profile.meta["num_samples"] == 2 and profile.meta["pipeline"] == "FluxPipeline"
    assert "calibrated FluxPipeline on 2 prompts x 6 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--steps"):
        main(argv[:6] + ["1"] + argv[7:])


# ---------------------------------------------------------------------------------------------------- examples
@pytest.mark.parametrize("example, kind, args", [
    ("flux.py", "flux", ["--size", "16", "--budget", "17"]),
    ("qwen_image.py", "qwen-image", ["--size", "32", "--budget", "10"]),
])
def test_examples_run_on_a_local_tiny_pipeline(tmp_path, capsys, example, kind, args, tiny_pipe):
    import runpy
    from pathlib import Path

    model_dir = tmp_path / kind
    tiny_pipe(kind).save_pretrained(model_dir)
    path = Path(__file__).resolve().parents[2] / "python" / "examples" / example
    module = runpy.run_path(str(path), run_name="example")
    out = tmp_path / "out.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert module["main"](["--model", str(model_dir), "--device", "cpu", "--out", str(out), *args]) == 0
    assert out.stat().st_size > 0
    printed = capsys.readouterr().out
    budget = args[args.index("--budget") + 1]
    assert f"MeanCache B={budget}/50" in printed
