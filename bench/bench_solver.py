"""PSSP solver speed: the C++ extension against the pure-Python reference (pytest-benchmark; not in the test suite).

    python -m pytest bench/bench_solver.py --benchmark-only -q --benchmark-columns=min,mean,rounds

Both backends are called through the public dispatch (``schedule.frontier_costs`` / ``solve_costs``), so the times
include argument validation and the numpy <-> C++ conversion. Cost tensors are random but shaped like a real
profile: K_max = 6, +inf on edges longer than max_skip + 1 (their solves are identical across backends, tested in
tests/test_solver.py). N = 50 (the published presets' step count): the whole frontier (every budget) with
max_skip = N - 1. N = 1000 with max_skip = 64: the frontier in C++, and one budget (B = 100) in both backends (the
Python frontier at N = 1000 takes minutes).

Estimator-aware PSSP (DESIGN.md 2b): ``schedule.solve_frontier(profile)`` with every estimator (jvp with K_max = 6
and 4 polynomial ones, edges of at most D = 13 steps, random costs) at N = 50, C++ DP against the numpy oracle, and
the jvp-only ``solve_frontier`` (the paper's solver; Schedules are built lazily, so the call returns every budget
after one DP), also with every Schedule built.
"""

import numpy as np
import pytest

import meancache_kernels as mck
from meancache_kernels import solver as sch

try:
    import meancache_kernels._C

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


def _profile(n: int, kmax: int, d: int, poly_names, seed: int = 0):
    """A Profile with jvp costs as :func:`_costs` (max_skip = d - 1) and polynomial costs [E, N, D+1, D+1, D+1] that
    grow with the edge length, with noise per state (a, b) and estimator."""
    rng = np.random.default_rng(seed + 100)
    poly = np.full((len(poly_names), n, d + 1, d + 1, d + 1), np.inf)
    dd = np.arange(2, d + 1)
    poly[..., 2:] = 1e-3 * dd**1.5 * (0.3 + rng.random((len(poly_names), n, d + 1, d + 1, d - 1)))
    return mck.Profile(
        _costs(n, kmax, d - 1, seed), np.linspace(1.0, 0.0, n + 1), poly_costs=poly, poly_estimators=list(poly_names)
    )


N50 = _costs(50, 6, 49)
P50 = _profile(50, 6, 13, ["taylor1", "taylor2", "mean1", "mean2"])
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


@pytest.mark.benchmark(group="solve_frontier N=50 D=13 all estimators")
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_ext), "python"])
def test_solve_frontier_states_n50(benchmark, backend):
    if backend == "cpp" and not hasattr(meancache_kernels._C, "frontier_states"):
        pytest.skip("meancache_kernels._C built before frontier_states")
    front = benchmark.pedantic(
        sch.solve_frontier,
        args=(P50,),
        kwargs=dict(backend=backend),
        rounds=20 if backend == "cpp" else 3,
        iterations=1,
        warmup_rounds=1,
    )
    assert sorted(front) == list(range(4, 51))  # ceil(50 / 13) edges at least
    assert front[10].meta["solver"] == backend and not front[10].is_official  # polynomial estimators win edges


@pytest.mark.benchmark(group="solve_frontier N=50 jvp only")
@pytest.mark.parametrize("materialise", [False, True], ids=["lazy", "all-schedules"])
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_ext), "python"])
def test_solve_frontier_jvp_n50(benchmark, backend, materialise):
    def run():
        front = sch.solve_frontier(P50, backend=backend, estimators=("jvp",))
        if materialise:
            for b in front:
                front[b]
        return front

    front = benchmark(run)
    assert sorted(front) == list(range(4, 51)) and front[10].is_official
