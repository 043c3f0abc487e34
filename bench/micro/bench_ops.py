"""Microbenchmarks of the fused ops (pytest-benchmark; not part of the test suite).

    python -m pytest bench/micro/bench_ops.py --benchmark-only -q
    python -m pytest bench/micro/bench_ops.py --benchmark-only --benchmark-group-by=param:size --benchmark-columns=mean

Each op is timed as: ``copy`` (a same-size device copy, the bandwidth ceiling measured in the same run), ``eager``
(the torch reference, ``ops/reference.py``, what a framework without the kernel runs) and, only when CUDA is
present, ``triton`` (the fused kernel; never the CPU interpreter, which measures Python, not the kernel).
``benchmark.extra_info`` holds the bytes moved and the effective GB/s (bytes read + written once / median time).
On CUDA a timed call runs the op ``reps`` times then synchronises, so launch-queue time is not mistaken for work.
On CPU torch runs single-threaded here: on a shared machine, a preempted intra-op thread stalls the whole op for a
scheduler quantum and the timings become noise.
"""

import os

import pytest
import torch

from meancache_kernels import ops
from meancache_kernels.ops import reference

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = "cuda" if CUDA else "cpu"
REPS = 20 if CUDA else 1

# FLUX.1 at 1024x1024: 4096 tokens x 64 channels; HunyuanVideo 720p, 129 frames: 33 x 90 x 160 x 16 (about 7.6M)
SIZES = {"flux1024": 4096 * 64, "hunyuan720p": 33 * 90 * 160 * 16} if CUDA else {"flux1024": 4096 * 64}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(autouse=True, scope="module")
def _single_thread_on_cpu():
    threads = torch.get_num_threads()
    if not CUDA:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _impls():
    impls = ["copy", "eager"]
    if CUDA:
        try:
            import triton  # noqa: F401

            impls.append("triton")
        except ImportError:
            pass
    return impls


def _run(benchmark, fn, nbytes, reps=REPS):
    def timed():
        for _ in range(reps):
            fn()
        if CUDA:
            torch.cuda.synchronize()

    timed()  # warm-up (and JIT compile)
    benchmark(timed)
    # the median: the shared CPU machine has load spikes that drag the mean
    median = benchmark.stats.stats.median / reps
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info["GBps"] = round(nbytes / median / 1e9, 2)
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if CUDA else "cpu"


def _tensors(k, n, dtype):
    return [torch.randn(n, device=DEVICE, dtype=torch.float32).to(dtype) for _ in range(k)]


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("size", list(SIZES), ids=str)
def test_mean_velocity_step(benchmark, impl, dtype, size):
    benchmark.group = f"mean_velocity_step {size} {dtype}"
    n, dt = SIZES[size], DTYPES[dtype]
    z, za, va, vl = _tensors(4, n, dt)
    out_v, out_z = torch.empty_like(vl), torch.empty_like(z)
    nbytes = 6 * n * z.element_size()  # reads z, z_a, v_a, v_last; writes v_hat, z_next
    args = (z, za, va, vl, 0.9, 0.7, 0.55)
    if impl == "copy":
        src, dst = torch.empty(3 * n, device=DEVICE, dtype=dt), torch.empty(3 * n, device=DEVICE, dtype=dt)
        fn = lambda: dst.copy_(src)  # noqa: E731  (3n read + 3n written: the same 6n elements of traffic)
    elif impl == "eager":
        fn = lambda: reference.mean_velocity_step(*args, out_v=out_v, out_z=out_z)  # noqa: E731
    else:
        fn = lambda: ops.mean_velocity_step(*args, out_v=out_v, out_z=out_z, backend="triton")  # noqa: E731
    _run(benchmark, fn, nbytes)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("size", list(SIZES), ids=str)
@pytest.mark.parametrize("terms", [2, 4])
def test_combine_step(benchmark, impl, dtype, size, terms):
    # any estimator: v_hat = sum of `terms` cached tensors (distinct here), z_next = z + ds * v_hat
    benchmark.group = f"combine_step M={terms} {size} {dtype}"
    n, dt = SIZES[size], DTYPES[dtype]
    z, *ts = _tensors(1 + terms, n, dt)
    coeffs = [1.5, -0.5, 0.25, -0.125][:terms]
    out_v, out_z = torch.empty_like(z), torch.empty_like(z)
    nbytes = (terms + 3) * n * z.element_size()  # reads z and every term; writes v_hat, z_next
    if impl == "copy":
        half = (terms + 3) * n // 2
        src, dst = torch.empty(half, device=DEVICE, dtype=dt), torch.empty(half, device=DEVICE, dtype=dt)
        fn = lambda: dst.copy_(src)  # noqa: E731
    elif impl == "eager":
        fn = lambda: reference.combine_step(z, ts, coeffs, -0.02, v_dtype=dt, out_v=out_v, out_z=out_z)  # noqa: E731
    else:
        fn = lambda: ops.combine_step(z, ts, coeffs, -0.02, out_v=out_v, out_z=out_z, backend="triton")  # noqa: E731
    _run(benchmark, fn, nbytes)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("size", list(SIZES), ids=str)
def test_euler_step(benchmark, impl, dtype, size):
    benchmark.group = f"euler_step {size} {dtype}"
    n, dt = SIZES[size], DTYPES[dtype]
    z, v = _tensors(2, n, dt)
    out = torch.empty_like(z)
    nbytes = 3 * n * z.element_size()
    if impl == "copy":
        src, dst = torch.empty(3 * n // 2, device=DEVICE, dtype=dt), torch.empty(3 * n // 2, device=DEVICE, dtype=dt)
        fn = lambda: dst.copy_(src)  # noqa: E731
    elif impl == "eager":
        fn = lambda: reference.euler_step(z, v, -0.02, out=out)  # noqa: E731
    else:
        fn = lambda: ops.euler_step(z, v, -0.02, out=out, backend="triton")  # noqa: E731
    _run(benchmark, fn, nbytes)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("size", list(SIZES), ids=str)
def test_velocity_delta(benchmark, impl, dtype, size):
    benchmark.group = f"velocity_delta {size} {dtype}"
    n, dt = SIZES[size], DTYPES[dtype]
    a, b = _tensors(2, n, dt)
    nbytes = 2 * n * a.element_size()  # two reads, two scalars written
    if impl == "copy":
        src, dst = torch.empty(n, device=DEVICE, dtype=dt), torch.empty(n, device=DEVICE, dtype=dt)
        fn = lambda: dst.copy_(src)  # noqa: E731
    elif impl == "eager":
        fn = lambda: reference.velocity_delta(a, b)  # noqa: E731
    else:
        fn = lambda: ops.velocity_delta(a, b, backend="triton")  # noqa: E731
    _run(benchmark, fn, nbytes)


# Calibration: the edge errors of every (i, K) of an N-step trajectory. CPU: a small latent (the eager roll-out is
# O(N * max_span * max_skip) passes over it); CUDA: a FLUX 1024x1024 latent.
CAL = (
    dict(n=20, samples=2, numel=4096, max_span=4, max_skip=6)
    if not CUDA
    else dict(n=50, samples=2, numel=4096 * 64, max_span=4, max_skip=10)
)


@pytest.mark.parametrize("impl", ["eager", "triton"] if "triton" in _impls() else ["eager"])
def test_calibration_errors(benchmark, impl):
    benchmark.group = "calibration_errors"
    n, s, d = CAL["n"], CAL["samples"], CAL["numel"]
    z = torch.randn(n + 1, s, d, device=DEVICE)
    v = torch.randn(n, s, d, device=DEVICE)
    sigmas = torch.linspace(1.0, 0.0, n + 1).tolist()
    fn = lambda: ops.calibration_errors(  # noqa: E731
        z, v, sigmas, CAL["max_span"], CAL["max_skip"], backend="torch" if impl == "eager" else "triton"
    )
    # the kernel reads each trajectory window once per (i, K): that is the traffic counted
    pairs = (n - 1) * CAL["max_span"]
    nbytes = pairs * (CAL["max_skip"] + 3) * s * d * 4
    _run(benchmark, fn, nbytes, reps=1)
    benchmark.extra_info.update(CAL)


# Polynomial calibration: E coefficient rows of M slots over T = 2N + 1 trajectory tensors (N + 1 states, N velocities).
EDGE = (
    dict(n=20, samples=2, numel=4096, edges=600, slots=5)
    if not CUDA
    else dict(n=50, samples=2, numel=4096 * 64, edges=4000, slots=6)
)


@pytest.mark.parametrize("impl", ["eager", "triton"] if "triton" in _impls() else ["eager"])
def test_edge_errors(benchmark, impl):
    benchmark.group = "edge_errors"
    n, s, d, e, m = EDGE["n"], EDGE["samples"], EDGE["numel"], EDGE["edges"], EDGE["slots"]
    g = torch.Generator().manual_seed(0)
    sources = torch.randn(2 * n + 1, s, d, device=DEVICE)
    index = torch.randint(0, 2 * n + 1, (e, m), generator=g).to(DEVICE)
    coef = torch.randn(e, m, generator=g, dtype=torch.float64).to(DEVICE)
    backend = "torch" if impl == "eager" else "triton"
    fn = lambda: ops.edge_errors(sources, index, coef, backend=backend)  # noqa: E731
    # every edge gathers M rows of S * D elements (from L2 on a GPU once the element block is resident)
    nbytes = e * m * s * d * 4
    _run(benchmark, fn, nbytes, reps=1)
    benchmark.extra_info.update(EDGE)
