"""PSSP solver: C++ == Python reference == brute force (every path enumerated) on random small problems, the
frontier against per-budget solves, constraints, infeasible problems, validation, the fallback without _C, and
fitting a schedule to another sigma grid."""

import itertools
import math
import sys
import warnings

import numpy as np
import pytest

import meancache_kernels as mck
from meancache_kernels import solver as sch
from meancache_kernels.testing import flow_sigmas

try:
    import meancache_kernels._C as _C
except ImportError:  # pragma: no cover - the extension is built in CI
    _C = None

needs_ext = pytest.mark.skipif(_C is None, reason="meancache_kernels._C not built")
BACKENDS = ["python", pytest.param("cpp", marks=needs_ext)]


def _brute_force(costs, budget, gamma, forced, max_skip, k_range):
    """Enumerate every path 0 -> N with `budget` computed steps; return (steps, ks, objective) of the best one under
    the documented rule: key (T_0, p_1, T_1, p_2, ...) with T_k the right-to-left sum of the rest of the path."""
    n = costs.shape[1] - 1
    k_lo, k_hi = k_range
    best_key, best = None, None
    for inner in itertools.combinations(range(1, n), budget - 1):
        steps = (0, *inner)
        if not set(forced) <= set(steps):
            continue
        nodes = steps + (n,)
        terms, ks, ok = [], [], True
        for a, b in zip(nodes, nodes[1:]):
            if b == a + 1:
                terms.append(0.0)
                ks.append(0)
                continue
            if b - a - 1 > max_skip:
                ok = False
                break
            c, kc = math.inf, 0
            for k in range(k_lo, k_hi + 1):
                if costs[k, a, b] < c:
                    c, kc = costs[k, a, b], k
            if c == math.inf:
                ok = False
                break
            terms.append(c * c if gamma == 2.0 else c if gamma == 1.0 else math.pow(c, gamma))
            ks.append(kc)
        if not ok:
            continue
        tails = [0.0] * (len(terms) + 1)
        for e in range(len(terms) - 1, -1, -1):  # last edge first: the documented accumulation order
            tails[e] = terms[e] + tails[e + 1] if e < len(terms) - 1 else terms[e]
        key = []
        for e in range(len(terms)):
            key += [tails[e], nodes[e + 1]]
        key = tuple(key)
        if best_key is None or key < best_key:
            best_key, best = key, (list(steps), ks, tails[0])
    return best


def _random_problem(rng, integer: bool):
    n = int(rng.integers(1, 10))
    kmax = int(rng.integers(1, 4))
    if integer:  # many exact ties, exact arithmetic
        costs = rng.integers(0, 4, size=(kmax + 1, n + 1, n + 1)).astype(np.float64)
    else:
        costs = rng.random((kmax + 1, n + 1, n + 1)) ** 3
    costs[rng.random(costs.shape) < 0.15] = np.inf
    forced = sorted(set(rng.integers(0, n, size=int(rng.integers(0, 3))).tolist()))
    max_skip = int(rng.integers(0, n + 1))
    k_lo = int(rng.integers(1, kmax + 1))
    k_hi = int(rng.integers(k_lo, kmax + 1))
    gamma = float(rng.choice([1.0, 2.0, 0.5, 3.0]))
    return costs, gamma, forced, max_skip, (k_lo, k_hi)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_cpp_equals_python_equals_brute_force(seed, integer):
    rng = np.random.default_rng(1000 * integer + seed)
    checked = 0
    for _ in range(6):
        costs, gamma, forced, max_skip, k_range = _random_problem(rng, integer)
        n = costs.shape[1] - 1
        kw = dict(gamma=gamma, always_compute=forced, max_skip=max_skip, k_range=k_range)
        for budget in range(1, n + 1):
            expected = _brute_force(costs, budget, gamma, {0, *forced}, max_skip, k_range)
            backends = ["python"] + (["cpp"] if _C is not None else [])
            for backend in backends:
                if expected is None:
                    with pytest.raises(ValueError, match="infeasible"):
                        sch.solve_costs(costs, budget, backend=backend, **kw)
                    continue
                got = sch.solve_costs(costs, budget, backend=backend, **kw)
                assert list(got.compute_steps) == expected[0], (backend, budget)
                assert list(got.spans) == expected[1], (backend, budget)
                assert got.objective == expected[2]  # bit-identical: same float operations in the same order
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(4))
def test_frontier_equals_per_budget_solves(seed, backend):
    rng = np.random.default_rng(seed)
    costs, gamma, forced, max_skip, k_range = _random_problem(rng, integer=bool(seed % 2))
    n = costs.shape[1] - 1
    kw = dict(gamma=gamma, always_compute=forced, max_skip=max_skip, k_range=k_range)
    front = sch.frontier_costs(costs, backend=backend, **kw)
    for budget in range(1, n + 1):
        if budget in front:
            assert front[budget] == sch.solve_costs(costs, budget, backend=backend, **kw)
        else:
            with pytest.raises(ValueError, match="infeasible"):
                sch.solve_costs(costs, budget, backend=backend, **kw)


@needs_ext
def test_frontier_cpp_equals_python_n50():
    rng = np.random.default_rng(7)
    n, kmax = 50, 6
    costs = rng.random((kmax + 1, n + 1, n + 1))
    front_c = sch.frontier_costs(costs, gamma=2.0, max_skip=12, backend="cpp")
    front_p = sch.frontier_costs(costs, gamma=2.0, max_skip=12, backend="python")
    assert front_c == front_p
    assert min(front_c) == 4 and max(front_c) == n  # 0 -> N needs ceil(50 / 13) = 4 edges at max_skip = 12
    assert front_c[n].objective == 0.0 and front_c[n - 1].objective > 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_budget_n_and_budget_1(backend):
    rng = np.random.default_rng(3)
    n = 7
    costs = rng.random((3, n + 1, n + 1))
    full = sch.solve_costs(costs, n, backend=backend)
    assert full.compute_steps == tuple(range(n)) and full.spans == (0,) * n and full.objective == 0.0
    one = sch.solve_costs(costs, 1, gamma=2.0, backend=backend)
    k = int(np.argmin(costs[1:, 0, n])) + 1
    assert one.compute_steps == (0,) and one.spans == (k,)
    assert one.objective == costs[k, 0, n] ** 2
    with pytest.raises(ValueError, match="infeasible"):
        sch.solve_costs(costs, 1, max_skip=n - 2, backend=backend)  # 0 -> N skips N - 1 steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_steps_and_k_range_are_honoured(backend):
    n = 12
    costs = np.full((4, n + 1, n + 1), 1.0)
    costs[3] = 0.01  # K = 3 is much cheaper ...
    res = sch.solve_costs(costs, 3, always_compute=(5, 9), backend=backend)
    assert res.compute_steps == (0, 5, 9)
    assert res.spans == (3, 3, 3)
    res = sch.solve_costs(costs, 3, always_compute=(5, 9), k_range=(1, 2), backend=backend)  # ... unless excluded
    assert res.spans == (1, 1, 1) and res.objective == 3.0
    with pytest.raises(ValueError, match="infeasible"):
        sch.solve_costs(costs, 2, always_compute=(5, 9), backend=backend)  # three forced steps, budget 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget=0), "budget"),
        (dict(budget=9), "budget"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(k_range=(0, 2)), "k_range"),
        (dict(k_range=(2, 5)), "k_range"),
        (dict(max_skip=-1), "max_skip"),
        (dict(always_compute=(8,)), "always_compute"),
    ],
)
def test_invalid_arguments(backend, kwargs, match):
    costs = np.ones((3, 9, 9))
    kw = dict(budget=3, gamma=2.0)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sch.solve_costs(costs, kw.pop("budget"), backend=backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_costs(backend):
    bad = np.ones((3, 6, 6))
    bad[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sch.solve_costs(bad, 2, backend=backend)
    bad[1, 2, 4] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        sch.solve_costs(bad, 2, backend=backend)
    with pytest.raises(ValueError, match="shape"):
        sch.solve_costs(np.ones((3, 6, 5)), 2, backend=backend)
    with pytest.raises(ValueError, match="shape"):
        sch.frontier_costs(np.ones((1, 6, 6)), backend=backend)
    with pytest.raises(ValueError, match="backend"):
        sch.solve_costs(np.ones((3, 6, 6)), 2, backend="cuda")


@needs_ext
def test_extension_raises_value_error_directly():
    with pytest.raises(ValueError, match="k_range"):
        _C.solve(np.ones((3, 6, 6)), 2, 2.0, [0], 3, 0, 2)
    with pytest.raises(ValueError, match="shape"):
        _C.frontier(np.ones((6, 6)), 2.0, [0], 3, 1, 2)
    with pytest.raises(ValueError, match="budget"):
        _C.solve(np.ones((3, 6, 6)), 6, 2.0, [0], 3, 1, 2)
    with pytest.raises(ValueError, match="infeasible"):
        _C.solve(np.ones((3, 6, 6)), 1, 2.0, [0], 1, 1, 2)
    bad = np.ones((3, 6, 6))
    bad[2, 1, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN\); bad value nan at \[K, i, j\] = \[2, 1, 4\]"):
        _C.frontier(bad, 2.0, [0], 5, 1, 2)


def _profile(n=20, kmax=4, seed=0):
    rng = np.random.default_rng(seed)
    costs = rng.random((kmax + 1, n + 1, n + 1))
    costs[0] = np.inf
    i = np.arange(n)
    costs[:, i, i + 1] = 0.0
    costs[:, np.tril_indices(n + 1)[0], np.tril_indices(n + 1)[1]] = np.inf
    return mck.Profile(costs, flow_sigmas(n, 3.0), meta={"model": "unit-test"})


def test_solve_profile_returns_schedule_with_meta():
    prof = _profile()
    s = mck.solve(prof, 6, gamma=1.5, max_skip=5, k_range=(1, 3))
    assert isinstance(s, mck.Schedule) and s.num_steps == 20 and s.budget == 6
    ref = sch.solve_reference(prof.costs, 6, gamma=1.5, max_skip=5, k_range=(1, 3))
    assert s == ref.to_schedule() and s.compute_steps == list(ref.compute_steps)
    assert s.meta["objective"] == ref.objective and s.meta["gamma"] == 1.5
    assert s.meta["solver"] == ("cpp" if _C is not None else "python")
    assert s.meta["profile_model"] == "unit-test"
    assert max(b - a - 1 for a, b in zip(s.compute_steps, s.compute_steps[1:] + [20])) <= 5
    front = sch.solve_frontier(prof, gamma=1.5, max_skip=5, k_range=(1, 3))
    assert front[6] == s and front[6].meta["objective"] == s.meta["objective"]
    with pytest.raises(TypeError, match="Profile"):
        mck.solve(prof.costs, 6)


def test_package_works_without_extension(monkeypatch):
    prof = _profile(seed=1)
    expected = mck.solve(prof, 7, backend="python")
    monkeypatch.setitem(sys.modules, "meancache_kernels._C", None)  # makes `import meancache_kernels._C` fail
    got = mck.solve(prof, 7)
    assert got == expected and got.meta["solver"] == "python"
    assert sch.solve_frontier(prof)[7] == expected
    with pytest.raises(ImportError, match="pip install --no-build-isolation -e ."):
        mck.solve(prof, 7, backend="cpp")


def test_fit_schedule_by_sigma_round_trip():
    s50, s100 = flow_sigmas(50, 3.0), flow_sigmas(100, 3.0)
    preset = mck.presets.get("qwen-image", 10)
    with pytest.warns(UserWarning, match="N=50 steps over to N=100"):
        s = mck.schedule.fit_schedule(preset, s50, s100)
    # flow_sigmas(50)[c] == flow_sigmas(100)[2c]: computed steps double, per-interval K is kept
    assert s.num_steps == 100 and s.compute_steps == [2 * c for c in preset.compute_steps]
    ks = preset.to_official()[1]
    # chains (0 -> 1, and 49 -> N) now skip a step (1, 99): K = 1 there
    assert s.to_official()[1] == [k if k else 1 for k in ks] + [1]
    with pytest.warns(UserWarning):
        back = mck.schedule.fit_schedule(s, s100, s50)
    assert back.compute_steps == preset.compute_steps
    assert back.to_official()[1] == [k if b - a > 1 else 0 for k, (a, b) in
                                     zip(ks, zip(preset.compute_steps, preset.compute_steps[1:] + [50]))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mck.schedule.fit_schedule(preset, s50, s50) is preset  # same grid: unchanged, no warning
    with pytest.raises(ValueError, match="sigmas_from"):
        mck.schedule.fit_schedule(preset, s100, s50)
