"""PSSP solver speed: the C++ extension against the pure-Python reference (pytest-benchmark; not in the test suite).

    python -m pytest bench/bench_solver.py --benchmark-only -q --benchmark-columns=min,mean,rounds

Both backends are called through the public dispatch (``schedule.frontier_costs`` / ``solve_costs``), so the times
include argument validation and the numpy <-> C++ conversion. Cost tensors are random but shaped like a real
profile: K_max = 6, +inf on edges longer than max_skip + 1 (their solves are identical across backends, tested in
tests/test_solver.py). N = 50 (the published presets' step count): the whole frontier (every budget) with
max_skip = N - 1. N = 1000 with max_skip = 64: the frontier in C++, and one budget (B = 100) in both backends (the
Python frontier at N = 1000 takes minutes).
"""

import numpy as np
import pytest

from meancache_kernels import schedule as sch

try:
    import meancache_kernels._C  # noqa: F401

    HAVE_EXT = True
except ImportError:  # pragma: no cover
    HAVE_EXT = False

needs_ext = pytest.mark.skipif(not HAVE_EXT, reason="meancache_kernels._C not built")


def _costs(n: int, kmax: int, max_skip: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    costs = np.full((kmax + 1, n + 1, n + 1), np.inf)
    for i in range(n):
        costs[:, i, i + 1] = 0.0
        last = min(n, i + 1 + max_skip)
        d = np.arange(2, last - i + 1)
        # grows with the edge length, with per-K noise: a realistic landscape, not a degenerate one
        costs[1:, i, i + 2 : last + 1] = 1e-3 * d[None] ** 1.5 * (0.5 + rng.random((kmax, d.size)))
    return costs


N50 = _costs(50, 6, 49)
N1000 = _costs(1000, 6, 64, seed=1)


@pytest.mark.benchmark(group="frontier N=50 K_max=6")
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_ext), "python"])
def test_frontier_n50(benchmark, backend):
    front = benchmark(sch.frontier_costs, N50, gamma=2.0, backend=backend)
    assert sorted(front) == list(range(1, 51))


@needs_ext
@pytest.mark.benchmark(group="frontier N=1000 max_skip=64")
def test_frontier_n1000_cpp(benchmark):
    front = benchmark.pedantic(
        sch.frontier_costs, args=(N1000,), kwargs=dict(gamma=2.0, max_skip=64, backend="cpp"), rounds=3, iterations=1
    )
    assert min(front) == 16 and max(front) == 1000  # ceil(1000 / 65) edges at least


@pytest.mark.benchmark(group="solve N=1000 max_skip=64 B=100")
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_ext), "python"])
def test_solve_n1000_b100(benchmark, backend):
    res = benchmark.pedantic(
        sch.solve_costs,
        args=(N1000, 100),
        kwargs=dict(gamma=2.0, max_skip=64, backend=backend),
        rounds=3 if backend == "cpp" else 1,
        iterations=1,
    )
    assert res.budget == 100
