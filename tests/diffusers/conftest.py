"""Fixtures of the diffusers tests."""

import pytest


def record_steps(scheduler):
    """Record (z, v) at every scheduler.step that reaches the scheduler's own step (computed steps under MeanCache);
    returns the list and a function that removes the recorder."""
    seen = []
    original = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        seen.append((sample.clone(), model_output.clone()))
        return original(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = step
    return seen, lambda: scheduler.__dict__.pop("step", None)


@pytest.fixture(name="record_steps")
def record_steps_fixture():
    """:func:`record_steps`, for tests that record what reaches the scheduler's own step."""
    return record_steps


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster and deterministic on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_pipe():
    """``tiny_pipe(kind, dtype=torch.float32, **kw)``: a tiny offline pipeline (meancache_kernels.diffusers.testing),
    built once per test module and argument set; asserts that no earlier test left MeanCache applied to it."""
    import warnings

    import torch

    from meancache_kernels.diffusers.testing import tiny_pipeline

    built = {}

    def get(kind, dtype=torch.float32, **kw):
        key = (kind, dtype, tuple(sorted(kw.items())))
        if key not in built:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[key] = tiny_pipeline(kind, **kw).to(dtype)
        pipe = built[key]
        assert getattr(pipe, "_meancache_context", None) is None, "a previous test left MeanCache applied"
        return pipe

    return get
