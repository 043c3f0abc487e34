"""Every estimator through the diffusers adapter: same result as the core sampler; profile configs; tune_pipeline."""

import warnings

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.diffusers import (
    MeanCacheConfig,
    apply_mean_cache,
    calibrate_pipeline,
    get_mean_cache_stats,
    remove_mean_cache,
    tune_pipeline,
)
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline

N = 10
# computed [0, 1, 2, 4, 7, 9]; skipped 3 (taylorc1: corrected at 4), 5 (mean1), 6 (jvp K=2), 8 (taylor2)
MIXED = mck.Schedule(
    [True, True, True, False, True, False, False, True, False, True],
    [0, 0, 0, 1, 0, 1, 2, 0, 2, 0],
    estimators=["", "", "", "taylorc", "", "mean", "jvp", "", "taylor", ""],
)


@pytest.fixture(scope="module")
def flux():
    # one thread for the module (tiny models), restored after it: later modules get the count they started with
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = tiny_pipeline("flux")
        yield pipe
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_estimators_through_the_pipeline_equal_the_core_sampler(flux, dtype, record_steps):
    pipe = flux.to(dtype)
    try:
        reference = pipe(**tiny_call_kwargs("flux", num_inference_steps=N))[0]
        seen, unrecord = record_steps(pipe.scheduler)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=MIXED))
        try:
            out = pipe(**tiny_call_kwargs("flux", num_inference_steps=N))[0]
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
            unrecord()
        assert stats.transformer_calls == MIXED.budget and len(seen) == MIXED.budget
        sigmas = pipe.scheduler.sigmas.double().tolist()
        computed = iter(zip(MIXED.compute_steps, seen))
        # bf16: the scheduler's and the core's Euler steps round sigma differences differently, so after the
        # corrected step an element may land one bf16 ulp apart, carried on by the later steps: one ulp of the
        # largest state (2^-7 of max |z|) is allowed; float32 agrees to 1e-5
        scale = float(reference.abs().max())
        tol = dict(rtol=2**-7, atol=2**-7 * scale) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)

        def model_fn(z, sigma):
            i, (z_pipe, v_pipe) = next(computed)
            assert sigma == sigmas[i]
            if i == 4:  # the scheduler saw the corrected state; the model ran at the uncorrected one
                assert (z - z_pipe).abs().max() > 1e-4
            else:
                torch.testing.assert_close(z, z_pipe, **tol)
            return v_pipe

        expected = mck.sample(model_fn, seen[0][0], sigmas, MIXED)
        assert out.dtype == expected.dtype == dtype
        got = out.reshape(expected.shape)
        torch.testing.assert_close(got, expected, **tol)
        off = ((got.float() - expected.float()).abs() > 1e-5 + 1e-5 * expected.float().abs()).float().mean().item()
        assert off <= 0.02  # in bf16 too, all but a few rounding cases agree to float32 precision
        assert (out - reference).abs().max() > 1e-3
    finally:
        flux.to(torch.float32)


def test_profile_config_uses_every_estimator_by_default_and_tune_pipeline(flux):
    kw = tiny_call_kwargs("flux")
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    profile = calibrate_pipeline(flux, ["a red cube", "a green tree", "two cats"], N, max_span=2, max_skip=4,
                                 batch_size=3, progress=False, **kw)
    assert profile.estimators == ("jvp", "taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2")
    cfg = MeanCacheConfig(profile=profile, budget=4)
    assert cfg._solved == mck.solve(profile, 4)
    paper = MeanCacheConfig(profile=profile, budget=4, estimators=("jvp",))
    assert paper._solved == mck.solve(profile, 4, estimators=("jvp",)) and paper._solved.is_official
    with pytest.raises(ValueError, match="only used with profile"):
        MeanCacheConfig(schedule=MIXED, estimators=("jvp",))
    with pytest.raises(ValueError, match="no costs for 'taylor3'|unknown estimator"):
        MeanCacheConfig(profile=profile, budget=4, estimators=("taylor3",))

    best = tune_pipeline(flux, ["a blue ball", "a yellow star"], profile=profile, budget=4, num_inference_steps=N,
                         metric="latent", progress=False, **kw)
    t = best.meta["tune"]
    errors = [c["error"] for c in t["candidates"]]
    assert best.budget == 4 and len(errors) >= 5 and errors == sorted(errors)
    assert t["model_calls"] == 2 * N + 2 * 4 * len(errors)
    # the untuned default was weighed: kept (returned) only when the lowest-error candidate is within its margin
    d = t["default"]
    assert d is not None and d["margin_se"] == 1.0 and d["kept"] == (t["best"] == d["name"])
    assert (best == mck.solve(profile, 4)) if d["kept"] else (t["best"] == t["lowest"] == t["candidates"][0]["name"])
    # the returned schedule's error is reproducible by running it
    gens = lambda: [torch.Generator().manual_seed(10_000 + k) for k in range(2)]  # noqa: E731
    ref = flux(prompt=["a blue ball", "a yellow star"], num_inference_steps=N, generator=gens(), output_type="latent",
               **kw)[0]
    apply_mean_cache(flux, MeanCacheConfig(schedule=best))
    try:
        got = flux(prompt=["a blue ball", "a yellow star"], num_inference_steps=N, generator=gens(),
                   output_type="latent", **kw)[0]
    finally:
        remove_mean_cache(flux)
    per = ((got.double() - ref.double()).flatten(1).norm(dim=1) / ref.double().flatten(1).norm(dim=1))
    err = per.log().mean().exp().item()  # the geometric mean of the per-prompt relative errors
    chosen = {c["name"]: c["error"] for c in t["candidates"]}[t["best"]]
    assert abs(err - chosen) <= 1e-6 * max(err, 1e-12) + 1e-12
    lowest = tune_pipeline(flux, ["a blue ball", "a yellow star"], profile=profile, budget=4, num_inference_steps=N,
                           default_margin_se=0, progress=False, **kw)
    assert lowest.meta["tune"]["best"] == t["lowest"]  # margin 0: the lowest error, whatever the default
    with pytest.raises(ValueError, match="default_margin_se"):
        tune_pipeline(flux, ["x"], profile=profile, budget=4, num_inference_steps=N, default_margin_se=-0.5,
                      progress=False, **kw)
    conv = tune_pipeline(flux, ["a blue ball"], profile=profile, budget=4, num_inference_steps=N, progress=False,
                         reference_steps=3 * N, candidates={"a": best, "b": mck.Schedule.uniform(N, 4, "taylor1")},
                         **kw)
    assert conv.meta["tune"]["reference_steps"] == 3 * N and conv.meta["tune"]["model_calls"] == 3 * N + 2 * 4
    with pytest.raises(ValueError, match="reference_steps"):
        tune_pipeline(flux, ["x"], profile=profile, budget=4, num_inference_steps=N, reference_steps=0,
                      progress=False, **kw)
    with pytest.raises(ValueError, match="num_inference_steps"):
        tune_pipeline(flux, ["x"], profile=profile, budget=4, num_inference_steps=N + 1, progress=False, **kw)


def test_cli_calibrate_then_tune_writes_the_best_schedule(flux, tmp_path, capsys):
    from meancache_kernels.cli import main

    pipe_dir = tmp_path / "tiny-flux"
    flux.save_pretrained(pipe_dir)
    cal = tmp_path / "cal.txt"
    cal.write_text("a red cube\ntwo blue spheres\n", encoding="utf-8")
    tun = tmp_path / "tune.txt"
    tun.write_text("# tuning prompts\na green tree\n", encoding="utf-8")
    prof = tmp_path / "p.npz"
    common = ["--pipeline", str(pipe_dir), "--steps", "6", "--height", "16", "--width", "16", "--no-progress"]
    assert main(["calibrate", *common, "--prompts", str(cal), "--out", str(prof), "--max-span", "2",
                 "--max-skip", "3"]) == 0
    assert mck.Profile.load(prof).estimators == ("jvp", "taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2")
    out = tmp_path / "best.json"
    capsys.readouterr()
    assert main(["tune", *common, "--prompts", str(tun), "--profile", str(prof), "--budget", "3",
                 "--out", str(out), "--gammas", "2", "--halving"]) == 0
    text = capsys.readouterr().out
    best = mck.Schedule.from_json(out)
    assert best.budget == 3 and best.meta["tune"]["best"] in text and "model calls" in text
    with pytest.raises(SystemExit, match="meancache tune: .*profile"):
        main(["tune", *common, "--prompts", str(tun), "--profile", str(cal), "--budget", "3", "--out", str(out)])


@pytest.mark.parametrize("kind", ["qwen-image", "wan"])
def test_calibrate_and_tune_on_cfg_pipelines(kind):
    """The recommended path on a true-CFG pipeline (two transformer calls per step) and on Wan's two-stage one
    (two transformers): calibrate, tune, apply; the chosen candidate's recorded error is what it gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = tiny_pipeline(kind, two_stage=(kind == "wan"))
    kw = tiny_call_kwargs(kind, num_inference_steps=N)
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    prompts = ["a red cube", "a green tree"]
    profile = calibrate_pipeline(pipe, prompts, N, max_span=2, max_skip=4, progress=False, **kw)
    assert "taylorc2" in profile.estimators
    best = tune_pipeline(pipe, prompts, profile=profile, budget=5, num_inference_steps=N, progress=False,
                         gammas=(2.0,), metric="latent", **kw)
    t = best.meta["tune"]
    assert best.budget == 5 and t["default"] is not None and t["best"] in {c["name"] for c in t["candidates"]}
    gens = [torch.Generator().manual_seed(10_000 + k) for k in range(2)]
    ref = pipe(prompt=prompts, num_inference_steps=N, generator=gens, output_type="latent", **kw)[0]
    apply_mean_cache(pipe, MeanCacheConfig(schedule=best))
    try:
        gens = [torch.Generator().manual_seed(10_000 + k) for k in range(2)]
        got = pipe(prompt=prompts, num_inference_steps=N, generator=gens, output_type="latent", **kw)[0]
        stats = get_mean_cache_stats(pipe)
    finally:
        remove_mean_cache(pipe)
    # two transformer calls per computed step: conditional and unconditional (Qwen's true CFG; Wan's CFG on the
    # transformer active at that step), none on the skipped ones
    assert stats.transformer_calls == 2 * best.budget
    per = ((got.double() - ref.double()).flatten(1).norm(dim=1) / ref.double().flatten(1).norm(dim=1))
    chosen = {c["name"]: c["error"] for c in t["candidates"]}[t["best"]]
    assert abs(per.log().mean().exp().item() - chosen) <= 1e-6 * chosen + 1e-12
