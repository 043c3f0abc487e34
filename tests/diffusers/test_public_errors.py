"""The bad-input paths of the public diffusers entry points, each checked with its exact message: calibrate_pipeline,
load_pipeline, tune_pipeline, and MeanCacheStats.speedup / copy. Every refusal here happens before (or instead of) a
full generation, so the module runs on the tiny FluxPipeline in a few seconds."""

import math
import re
from pathlib import Path

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.diffusers import (
    MeanCacheConfig,
    MeanCacheStats,
    apply_mean_cache,
    calibrate_pipeline,
    get_mean_cache_stats,
    load_pipeline,
    remove_mean_cache,
    tune_pipeline,
)
from meancache_kernels.diffusers import loading as loading_module
from meancache_kernels.diffusers.testing import tiny_call_kwargs

N = 4
PROFILE_PATH = Path(__file__).resolve().parents[2] / "meancache_kernels" / "assets" / "tiny_flux_profile.npz"


def _kw():
    """The tiny FluxPipeline's call arguments without the ones calibrate_pipeline / tune_pipeline set themselves."""
    kw = tiny_call_kwargs("flux")
    for key in ("prompt", "num_inference_steps", "generator", "output_type"):
        kw.pop(key)
    return kw


def _exactly(message: str) -> str:
    """A pytest.raises match= pattern for exactly ``message``."""
    return "^" + re.escape(message) + "$"


# ---------------------------------------------------------------------------------------------- calibrate_pipeline
@pytest.mark.parametrize("prompts", ["a red cube", [], ()], ids=["a string", "empty list", "empty tuple"])
def test_calibrate_pipeline_refuses_prompts_that_are_not_a_non_empty_list(tiny_pipe, prompts):
    with pytest.raises(ValueError, match=_exactly(f"prompts must be a non-empty list of strings, got {prompts!r}")):
        calibrate_pipeline(tiny_pipe("flux"), prompts, N, progress=False, **_kw())


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "2"])
def test_calibrate_pipeline_refuses_a_bad_batch_size(tiny_pipe, batch_size):
    with pytest.raises(ValueError, match=_exactly(f"batch_size must be an int >= 1, got {batch_size!r}")):
        calibrate_pipeline(tiny_pipe("flux"), ["a red cube"], N, batch_size=batch_size, progress=False, **_kw())


def test_calibrate_pipeline_refuses_a_pipeline_under_mean_cache(tiny_pipe):
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(budget=2, learn=False))
    try:
        with pytest.raises(ValueError, match=_exactly(
                "calibration needs full-step generations: remove_mean_cache(pipe) first")):
            calibrate_pipeline(pipe, ["a red cube"], N, progress=False, **_kw())
    finally:
        remove_mean_cache(pipe)


def test_calibrate_pipeline_refuses_a_loop_that_skips_scheduler_steps(tiny_pipe):
    # an interrupted generation (diffusers' pipe._interrupt, set from the step callback) leaves the last timesteps
    # without a scheduler.step: there is no full trajectory to calibrate on
    pipe = tiny_pipe("flux")

    def interrupt_after_two(p, i, t, kwargs):
        p._interrupt = i >= 1
        return kwargs

    try:
        with pytest.raises(RuntimeError, match=_exactly(
                f"the pipeline called scheduler.step 2 times for {N} timesteps: its loop cannot be calibrated at the "
                "scheduler step")):
            calibrate_pipeline(pipe, ["a red cube"], N, progress=False, callback_on_step_end=interrupt_after_two,
                               **_kw())
    finally:
        pipe._interrupt = False
    assert "step" not in pipe.scheduler.__dict__  # the recorder was taken off the scheduler again


# --------------------------------------------------------------------------------------------------- load_pipeline
@pytest.mark.parametrize("dtype", ["float64", "fp16", "bf16"])
def test_load_pipeline_refuses_an_unknown_dtype_name(dtype):
    with pytest.raises(ValueError, match=_exactly(
            f"dtype must be one of ['bfloat16', 'float16', 'float32'] or a torch.dtype, got {dtype!r}")):
        load_pipeline(None, dtype=dtype)


@pytest.mark.parametrize("dtype, type_name", [(32, "int"), (torch.zeros(1), "Tensor"), (float, "type")])
def test_load_pipeline_refuses_a_dtype_of_another_type(dtype, type_name):
    with pytest.raises(TypeError, match=_exactly(
            f"dtype must be None, a string or a torch.dtype, got {type_name}")):
        load_pipeline(None, dtype=dtype)


def test_load_pipeline_names_a_missing_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setattr(loading_module, "SHIPPED_MODEL_DIR", tmp_path / "tiny_flux")
    with pytest.raises(FileNotFoundError, match=_exactly(
            f"the shipped pipeline is missing from {tmp_path / 'tiny_flux'} (a broken install?); reinstall "
            "meancache_kernels or pass a model")):
        load_pipeline(None)


# --------------------------------------------------------------------------------------------------- tune_pipeline
@pytest.fixture(scope="module")
def profile():
    return mck.Profile.load(PROFILE_PATH)


def _tune(pipe, good_profile, **overrides):
    args = dict(prompts=["a blue ball"], profile=good_profile, budget=10, num_inference_steps=good_profile.num_steps,
                progress=False)
    args.update(overrides)
    return tune_pipeline(pipe, args.pop("prompts"), **args, **_kw())


@pytest.mark.parametrize("bad, type_name", [({"costs": 1}, "dict"), ("profile.npz", "str"), (None, "NoneType")])
def test_tune_pipeline_refuses_a_profile_that_is_not_a_profile(tiny_pipe, profile, bad, type_name):
    with pytest.raises(TypeError, match=_exactly(f"profile must be a meancache_kernels.Profile, got {type_name}")):
        _tune(tiny_pipe("flux"), profile, profile=bad)


@pytest.mark.parametrize("metric", ["image", "latent"])
def test_tune_pipeline_sets_output_type_itself(tiny_pipe, profile, metric):
    with pytest.raises(ValueError, match=_exactly(
            f"tune_pipeline sets output_type itself (metric={metric!r}); leave it out of the arguments")):
        _tune(tiny_pipe("flux"), profile, metric=metric, output_type="pil")


@pytest.mark.parametrize("prompts", ["a blue ball", []], ids=["a string", "empty list"])
def test_tune_pipeline_refuses_prompts_that_are_not_a_non_empty_list(tiny_pipe, profile, prompts):
    with pytest.raises(ValueError, match=_exactly(f"prompts must be a non-empty list of strings, got {prompts!r}")):
        _tune(tiny_pipe("flux"), profile, prompts=prompts)


def test_tune_pipeline_refuses_a_step_count_other_than_the_profiles(tiny_pipe, profile):
    n = profile.num_steps
    with pytest.raises(ValueError, match=_exactly(
            f"num_inference_steps={n - 1} differs from the profile's N={n}")):
        _tune(tiny_pipe("flux"), profile, num_inference_steps=n - 1)


def test_tune_pipeline_refuses_a_pipeline_under_mean_cache(tiny_pipe, profile):
    pipe = tiny_pipe("flux")
    apply_mean_cache(pipe, MeanCacheConfig(budget=2, learn=False))
    try:
        with pytest.raises(ValueError, match=_exactly(
                "tune_pipeline needs the pipeline without MeanCache: remove_mean_cache(pipe) first")):
            _tune(pipe, profile)
    finally:
        remove_mean_cache(pipe)


@pytest.mark.parametrize("reference_steps", [0, -3, True, 2.0, "50"])
def test_tune_pipeline_refuses_a_bad_reference_step_count(tiny_pipe, profile, reference_steps):
    with pytest.raises(ValueError, match=_exactly(
            f"reference_steps must be an int >= 1 or None, got {reference_steps!r}")):
        _tune(tiny_pipe("flux"), profile, reference_steps=reference_steps)


# ---------------------------------------------------------------------------------------------------- MeanCacheStats
def test_stats_speedup_is_the_call_ratio_and_nan_without_calls():
    assert MeanCacheStats(transformer_calls=10, transformer_calls_saved=40).speedup == 5.0
    assert MeanCacheStats(transformer_calls=34, transformer_calls_saved=66).speedup == 100 / 34
    assert MeanCacheStats(transformer_calls=7).speedup == 1.0  # nothing skipped
    # no transformer call yet (a fresh context, or a generation that ran no step): no ratio, NaN rather than a
    # ZeroDivisionError or an infinite speedup
    assert math.isnan(MeanCacheStats().speedup)
    assert math.isnan(MeanCacheStats(transformer_calls=0, transformer_calls_saved=5).speedup)


def test_stats_copy_is_equal_and_independent():
    schedule = mck.Schedule.uniform(8, 4, "taylorc2")
    stats = MeanCacheStats(num_steps=8, steps_computed=4, steps_skipped=4, transformer_calls=4,
                           transformer_calls_saved=4, calls_per_step=1, schedule=schedule, finished=True)
    copy = stats.copy()
    assert copy == stats and copy is not stats and type(copy) is MeanCacheStats
    copy.transformer_calls += 1
    copy.finished = False
    assert (stats.transformer_calls, stats.finished) == (4, True)  # the original is untouched
    assert copy.schedule is schedule  # a Schedule is immutable: shared, not copied


def test_get_mean_cache_stats_returns_a_copy_and_refuses_a_pipeline_without_mean_cache(tiny_pipe):
    pipe = tiny_pipe("flux")
    with pytest.raises(ValueError, match=_exactly("MeanCache is not applied to this pipeline: no statistics")):
        get_mean_cache_stats(pipe)
    apply_mean_cache(pipe, MeanCacheConfig(budget=2, learn=False))
    try:
        pipe(**tiny_call_kwargs("flux", num_inference_steps=N))
        first = get_mean_cache_stats(pipe)
        assert (first.transformer_calls, first.transformer_calls_saved, first.speedup) == (2, 2, 2.0)
        first.transformer_calls = 99
        assert get_mean_cache_stats(pipe).transformer_calls == 2  # the caller's copy, not the live counters
    finally:
        remove_mean_cache(pipe)
