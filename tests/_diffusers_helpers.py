"""Helpers shared by the diffusers test modules."""


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
