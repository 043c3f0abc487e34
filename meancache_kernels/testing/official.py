"""The paper's sampling loop written the slow, obvious way: the oracle the fused path is tested against.

A straightforward transcription of the public MeanCache release's sampling loop.

It keeps the whole history (every latent before and after each step, every velocity and sigma) and recomputes the
JVP at every skipped step from the logged tensors, exactly as the release's ``compute_current_jvp`` does, with the
span of the interval holding step i-1 (``edge_order[i - 1]``). Written from docs/design.md section 2 and the release's
published description, for float64 comparison with ``meancache_kernels.sample`` (which must match it; the test
suite checks it for every preset). It is slow and holds every latent: use it to check, never to generate.
"""

__all__ = ["official_sample"]


def official_jvp(log, steps, work_dtype):
    n_logged = len(log["v"])
    k = min(steps, n_logged)
    i1 = n_logged - 1
    i0 = n_logged - k
    x_start = log["latents_pre"][i0].to(work_dtype)
    x_end = log["latents"][i1].to(work_dtype)
    s_start = log["sigmas_pre"][i0]
    s_end = log["sigmas"][i1]
    denom = s_end - s_start
    avg_u = (x_end - x_start) / denom
    return (log["v"][i0].to(work_dtype) - avg_u) / denom


def official_sample(model_fn, z, sigmas, compute_steps, spans_per_interval, work_dtype=None):
    """Euler sampling with the release's JVP estimate on the steps not in ``compute_steps``; ``spans_per_interval``
    holds the span K of each interval between computed steps (``Schedule.to_official()[1]``). ``work_dtype``:
    arithmetic precision (default: z's dtype); results are stored back in z's dtype."""
    work_dtype = work_dtype or z.dtype
    sigmas = [float(s) for s in sigmas]
    n = len(sigmas) - 1
    should_calc = [False] * n
    for i in compute_steps:
        should_calc[i] = True
    edge_order = [0] * n
    ends = list(compute_steps[1:]) + [n]
    for a, b, k in zip(compute_steps, ends, spans_per_interval):
        for pos in range(a, b):
            edge_order[pos] = k
    log = {"latents_pre": [], "latents": [], "sigmas_pre": [], "sigmas": [], "v": []}
    latents = z.clone()
    for i in range(n):
        if should_calc[i]:
            v = model_fn(latents, sigmas[i])
            v_work = v.to(work_dtype)
        else:
            jvp = official_jvp(log, edge_order[i - 1], work_dtype)
            v_work = log["v"][-1].to(work_dtype) - jvp * (sigmas[i + 1] - sigmas[i])
            v = v_work.to(z.dtype)
        log["latents_pre"].append(latents)
        log["sigmas_pre"].append(sigmas[i])
        log["sigmas"].append(sigmas[i + 1])
        log["v"].append(v)
        # the step uses the estimate before it is rounded to the storage dtype (the fused op's behaviour)
        latents = (latents.to(work_dtype) + (sigmas[i + 1] - sigmas[i]) * v_work).to(z.dtype)
        log["latents"].append(latents)
    return latents
