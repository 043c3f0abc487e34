"""tune_pipeline(metric="image"): candidates judged on the decoded images instead of the final latents."""

import warnings

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.diffusers import (
    MeanCacheConfig,
    apply_mean_cache,
    calibrate_pipeline,
    remove_mean_cache,
    tune_pipeline,
)
from meancache_kernels.diffusers.testing import tiny_call_kwargs, tiny_pipeline
from meancache_kernels.metrics import geometric_mean, per_sample_errors

N = 8
PROMPTS = ["a blue ball", "a yellow star"]


@pytest.fixture(scope="module")
def setup():
    # one thread for the module (tiny models), restored after it: later modules get the count they started with
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = tiny_pipeline("flux")
        kw = tiny_call_kwargs("flux")
        for key in ("prompt", "num_inference_steps", "generator", "output_type"):
            kw.pop(key)
        profile = calibrate_pipeline(pipe, ["a red cube", "two cats"], N, max_span=2, max_skip=4, batch_size=2,
                                     progress=False, **kw)
        yield pipe, kw, profile
    finally:
        torch.set_num_threads(threads)


def _images(pipe, schedule, kw):
    gens = [torch.Generator().manual_seed(10_000 + k) for k in range(len(PROMPTS))]
    if schedule is not None:
        apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
    try:
        return pipe(prompt=PROMPTS, num_inference_steps=N, generator=gens, output_type="pt", **kw)[0].float()
    finally:
        if schedule is not None:
            remove_mean_cache(pipe)


def test_image_metric_runs_records_the_metric_and_picks_a_candidate(setup):
    pipe, kw, profile = setup
    candidates = {"default rule": mck.default_schedule(profile.sigmas, 4),
                  "taylor1": mck.Schedule.uniform(N, 4, "taylor1"),
                  "jvp": mck.Schedule.uniform(N, 4, "jvp")}
    best = tune_pipeline(pipe, PROMPTS, profile=profile, budget=4, num_inference_steps=N, candidates=candidates,
                         metric="image", progress=False, **kw)
    t = best.meta["tune"]
    assert t["metric"] == "image" and "decoded image" in t["metric_description"]
    assert t["best"] in candidates and best == candidates[t["best"]] and best.budget == 4
    assert t["model_calls"] == 2 * N + 2 * 4 * len(candidates)
    errors = [c["error"] for c in t["candidates"]]
    assert errors == sorted(errors) and t["best"] == t["candidates"][0]["name"]
    # the recorded error is the decoded images' geometric-mean relative RMSE, pixels in [0, 1]
    ref = _images(pipe, None, kw)
    assert ref.min() >= 0 and ref.max() <= 1 and ref.shape[:2] == (2, 3)
    got = _images(pipe, best, kw)
    err = geometric_mean(per_sample_errors(got, ref))
    assert abs(err - t["candidates"][0]["error"]) <= 1e-6 * err + 1e-12
    # and it differs from the latent metric's error of the same schedule
    lat = tune_pipeline(pipe, PROMPTS[:1], profile=profile, budget=4, num_inference_steps=N,
                        candidates={"only": best}, metric="latent", progress=False, **kw)
    assert lat.meta["tune"]["metric"] == "latent" and lat.meta["tune"]["candidates"][0]["error"] != err


def test_image_metric_with_the_default_candidates_weighs_the_default(setup):
    pipe, kw, profile = setup
    best = tune_pipeline(pipe, PROMPTS, profile=profile, budget=4, num_inference_steps=N, metric="image",
                         progress=False, **kw)
    t = best.meta["tune"]
    names = [c["name"] for c in t["candidates"]]
    assert t["metric"] == "image" and t["best"] in names and len(names) >= 5
    d = t["default"]
    assert d is not None and d["kept"] == (t["best"] == d["name"])


@pytest.mark.parametrize("bad", ["pixels", "", None, 1, "Image"])
def test_bad_metric_raises(setup, bad):
    pipe, kw, profile = setup
    with pytest.raises(ValueError, match=r"metric must be one of \['image', 'latent'\]"):
        tune_pipeline(pipe, ["x"], profile=profile, budget=4, num_inference_steps=N, metric=bad, progress=False, **kw)


def test_output_type_is_set_by_tune_pipeline(setup):
    pipe, kw, profile = setup
    with pytest.raises(ValueError, match="output_type"):
        tune_pipeline(pipe, ["x"], profile=profile, budget=4, num_inference_steps=N, metric="image",
                      output_type="np", progress=False, **kw)
