"""PSSP solver speed: the C++ extension against the pure-Python reference (pytest-benchmark; not in the test suite).

    python -m pytest bench/micro/bench_solver.py --benchmark-only -q --benchmark-columns=min,mean,rounds

Both backends are called through the public dispatch (``schedule.frontier_costs`` / ``solve_costs``), so the times
include argument validation and the numpy <-> C++ conversion. Cost tensors are random but shaped like a real
profile: K_max = 6, +inf on edges longer than max_skip + 1 (their solves are identical across backends, tested in
tests/solver/test_solver.py). N = 50 (the published presets' step count): the whole frontier (every budget) with
max_skip = N - 1. N = 1000 with max_skip = 64: the frontier in C++, and one budget (B = 100) in both backends (the
Python frontier at N = 1000 takes minutes).

Estimator-aware PSSP (design 2b): ``solve_frontier(profile)`` with the polynomial estimators (4 of them on random
costs, edges of at most D = 13 steps, "P50") at N = 50, and on the shipped profile (6 estimators): ``table=cpp`` is
what the public call runs (the edge table and the DP in one C++ call, ``_C.frontier_profile``), ``table=numpy`` the
path before it (the numpy edge table, then the C++ DP ``_C.frontier_states``; bit-identical results, tested in
tests/solver/test_solver_states.py), ``python`` the numpy table with the numpy DP oracle. The edge table alone: numpy
against ``_C.edge_table_states``. And the jvp-only ``solve_frontier`` (the paper's solver; Schedules are built lazily,
so the call returns every budget after one DP), also with every Schedule built.
"""

import numpy as np
import pytest

import meancache_kernels as mck
from meancache_kernels import solver as sch
from meancache_kernels._assets import SHIPPED_PROFILE
from meancache_kernels.solver import pssp

try:
    import meancache_kernels._C

    HAVE_EXT = True
except ImportError:  # pragma: no cover
    HAVE_EXT = False

needs_ext = pytest.mark.skipif(not HAVE_EXT, reason="meancache_kernels._C not built")
HAVE_FUSED = HAVE_EXT and hasattr(meancache_kernels._C, "frontier_profile")
needs_fused = pytest.mark.skipif(not HAVE_FUSED, reason="meancache_kernels._C built before frontier_profile")


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
SHIPPED = mck.Profile.load(SHIPPED_PROFILE)
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


# (backend, table): "cpp"/"cpp" is the public solve_frontier; "cpp"/"numpy" the path before the one-call C++ table
STATES_PATHS = [
    pytest.param("cpp", "cpp", marks=needs_fused, id="cpp-table=cpp"),
    pytest.param("cpp", "numpy", marks=needs_ext, id="cpp-table=numpy"),
    pytest.param("python", "numpy", id="python-table=numpy"),
]
ROUNDS = {"cpp": 200, "numpy": 20, "python": 3}


def _states_frontier(benchmark, profile, backend, table):
    if backend == "cpp" and table == "numpy" and not hasattr(meancache_kernels._C, "frontier_states"):
        pytest.skip("meancache_kernels._C built before frontier_states")
    return benchmark.pedantic(
        pssp._solve_frontier,
        args=(profile,),
        kwargs=dict(backend=backend, table_backend=table),
        rounds=ROUNDS["python" if backend == "python" else table],
        iterations=1,
        warmup_rounds=2,
    )


@pytest.mark.benchmark(group="solve_frontier N=50 D=13 4 polynomial estimators (P50)")
@pytest.mark.parametrize("backend, table", STATES_PATHS)
def test_solve_frontier_states_n50(benchmark, backend, table):
    front = _states_frontier(benchmark, P50, backend, table)
    assert sorted(front) == list(range(4, 51))  # ceil(50 / 13) edges at least
    assert front[10].meta["solver"] == backend and not front[10].is_official  # polynomial estimators win edges


@pytest.mark.benchmark(group="solve_frontier shipped profile N=50 D=13 6 polynomial estimators")
@pytest.mark.parametrize("backend, table", STATES_PATHS[:2])
def test_solve_frontier_states_shipped(benchmark, backend, table):
    front = _states_frontier(benchmark, SHIPPED, backend, table)
    ref = pssp._solve_frontier(SHIPPED, backend=backend, table_backend="numpy")
    assert front.objective.tobytes() == ref.objective.tobytes() and front[10] == ref[10]


@pytest.mark.benchmark(group="edge table N=50 D=13 4 polynomial estimators (P50)")
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_fused), "python"])
def test_edge_table_n50(benchmark, backend):
    table = benchmark.pedantic(
        sch.edge_table,
        args=(P50, 2.0, P50.poly_estimators, 1, P50.k_max, P50.max_skip),
        kwargs=dict(edge_cost="state", backend=backend),
        rounds=200 if backend == "cpp" else 20,
        iterations=1,
        warmup_rounds=2,
    )
    assert table.w.shape == (50, 14, 14, 14)


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
