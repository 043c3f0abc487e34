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
