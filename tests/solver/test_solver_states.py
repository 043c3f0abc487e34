"""Estimator-aware PSSP (docs/design.md 2b, meancache_kernels/solver/): the C++ DP (_C.frontier_states) equals the numpy
oracle bit for bit, both equal a brute force over every path and every (estimator, parameter) per edge, the jvp-only
solve is still the paper's solver, and bad input to the C++ entry point raises ValueError naming the argument."""

import itertools

import numpy as np
import pytest

import meancache_kernels as mck
from meancache_kernels import solver as sch
from meancache_kernels import solver as slv
from meancache_kernels.solver import pssp as _pssp

try:
    import meancache_kernels._C as _C
except ImportError:  # pragma: no cover - the extension is built in CI
    _C = None

HAVE_STATES = _C is not None and hasattr(_C, "frontier_states")
needs_states = pytest.mark.skipif(not HAVE_STATES, reason="meancache_kernels._C without frontier_states (not built)")
BACKENDS = ["python", pytest.param("cpp", marks=needs_states)]
POLY_NAMES = ["taylor1", "taylor2", "mean1", "mean2"]


def _random_profile(rng, n: int, integer: bool):
    """A Profile with random jvp costs [K+1, N+1, N+1] and polynomial costs [E, N, D+1, D+1, D+1] (+inf sprinkled;
    integer-valued costs make exact ties)."""
    kmax = int(rng.integers(1, 4))
    e = int(rng.integers(1, 4))
    d_poly = int(rng.integers(2, 6))
    shape_c, shape_p = (kmax + 1, n + 1, n + 1), (e, n, d_poly + 1, d_poly + 1, d_poly + 1)
    if integer:
        costs = rng.integers(0, 4, size=shape_c).astype(np.float64)
        poly = rng.integers(0, 4, size=shape_p).astype(np.float64)
    else:
        costs = rng.random(shape_c) ** 3
        poly = rng.random(shape_p) ** 3
    costs[rng.random(shape_c) < 0.15] = np.inf
    poly[rng.random(shape_p) < 0.15] = np.inf
    names = [str(x) for x in rng.permutation(POLY_NAMES)[:e]]
    return mck.Profile(costs, np.linspace(1.0, 0.0, n + 1), poly_costs=poly, poly_estimators=names)


def _random_args(rng, profile):
    n = profile.num_steps
    forced = sorted(set(rng.integers(0, n, size=int(rng.integers(0, 3))).tolist()))
    k_lo = int(rng.integers(1, profile.k_max + 1))
    k_hi = int(rng.integers(k_lo, profile.k_max + 1))
    names = list(profile.estimators)
    pick = [x for x in names if rng.random() < 0.6] or names[1:2]
    return dict(
        gamma=float(rng.choice([1.0, 2.0, 1.5])),
        always_compute=forced,
        max_skip=int(rng.integers(0, n + 1)),
        k_range=(k_lo, k_hi),
        estimators=tuple(pick) if rng.random() < 0.8 else "all",
        edge_cost=str(rng.choice(["velocity", "state"])),
    )


def _power(x, gamma):
    x = np.asarray(x, dtype=np.float64)
    return x * x if gamma == 2.0 else x.copy() if gamma == 1.0 else np.power(x, gamma)


def _state_profile(profile):
    s = profile.sigmas
    costs = profile.costs.copy()
    for i in range(len(s)):
        for j in range(len(s)):
            fin = np.isfinite(costs[:, i, j])
            costs[fin, i, j] = costs[fin, i, j] * abs(s[i] - s[j])
    pc = profile.poly_costs.copy()
    n, d1 = pc.shape[1], pc.shape[4]
    for i in range(n):
        for d in range(d1):
            scale = s[i] - s[min(i + d, n)]
            block = pc[:, i, :, :, d]
            fin = np.isfinite(block)
            block[fin] = block[fin] * scale
    return mck.Profile(costs, s, poly_costs=pc, poly_estimators=list(profile.poly_estimators))


def _brute_force(profile, budget, gamma, always_compute, max_skip, k_range, estimators, edge_cost="velocity"):
    """Every path 0 = p_0 < ... < p_{B-1} < N and, per edge, every candidate (jvp with each K in k_range, then each
    selected polynomial estimator in profile order at the state a = i - h, b = h - h2). Returns the best path under
    the key (T_0, p_1, T_1, ...) (T_k: the rest of the path summed from its last edge back) as
    (steps, [(family, param) or None per edge], objective), or None when no path exists."""
    n = profile.num_steps
    names = profile.estimators if estimators == "all" else estimators
    k_lo, k_hi = k_range
    if edge_cost == "state":  # every cost of edge i -> j times (s_i - s_j), one multiplication, before the power
        profile = _state_profile(profile)
    jvp = _power(profile.costs, gamma)
    poly = _power(profile.poly_costs, gamma)
    d_poly = profile.poly_costs.shape[2] - 1
    polys = [(e, name) for e, name in enumerate(profile.poly_estimators) if name in names]
    forced = {0, *always_compute}
    best_key, best = None, None
    for inner in itertools.combinations(range(1, n), budget - 1):
        steps = (0, *inner)
        if not forced <= set(steps):
            continue
        nodes = steps + (n,)
        terms, picks = [], []
        for k in range(budget):
            i, j = nodes[k], nodes[k + 1]
            d = j - i
            if d == 1:
                terms.append(0.0)
                picks.append(None)
                continue
            a = i - nodes[k - 1] if k >= 1 else 0
            b = nodes[k - 1] - nodes[k - 2] if k >= 2 else 0
            term, pick = np.inf, None
            if d - 1 <= max_skip:
                if "jvp" in names:
                    for kk in range(k_lo, k_hi + 1):
                        if jvp[kk, i, j] < term:
                            term, pick = float(jvp[kk, i, j]), ("jvp", kk)
                if max(a, b, d) <= d_poly:
                    for e, name in polys:
                        if poly[e, i, a, b, d] < term:
                            term, pick = float(poly[e, i, a, b, d]), (name[:-1], int(name[-1]))
            if pick is None:
                break
            terms.append(term)
            picks.append(pick)
        else:
            tails = [0.0] * budget
            tails[-1] = terms[-1]
            for k in range(budget - 2, -1, -1):  # last edge first
                tails[k] = terms[k] + tails[k + 1]
            key = tuple(x for k in range(budget) for x in (tails[k], nodes[k + 1]))
            if best_key is None or key < best_key:
                best_key, best = key, (list(steps), picks, tails[0])
    return best


def _expected_schedule(n, steps, picks):
    mask, est, params = [False] * n, [""] * n, [0] * n
    for s, e, pick in zip(steps, steps[1:] + [n], picks):
        mask[s] = True
        for t in range(s + 1, e):
            est[t], params[t] = pick
    return mck.Schedule(mask, params, estimators=est)


def _objective_of(schedule, profile, gamma):
    """The objective of a schedule recomputed from its own per-step estimators (right-to-left sum)."""
    n = profile.num_steps
    steps = schedule.compute_steps
    nodes = steps + [n]
    terms = []
    for k in range(len(steps)):
        i, j = nodes[k], nodes[k + 1]
        if j == i + 1:
            terms.append(0.0)
            continue
        fam, p = schedule.estimators[i + 1], schedule.spans[i + 1]
        if fam == "jvp":
            terms.append(float(_power(profile.costs[p, i, j], gamma)))
        else:
            a = i - nodes[k - 1] if k >= 1 else 0
            b = nodes[k - 1] - nodes[k - 2] if k >= 2 else 0
            e = profile.poly_estimators.index(f"{fam}{p}")
            terms.append(float(_power(profile.poly_costs[e, i, a, b, j - i], gamma)))
    total = terms[-1]
    for t in reversed(terms[:-1]):
        total = t + total
    return total


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_solver_equals_brute_force(seed, integer):
    rng = np.random.default_rng(100 * integer + seed)
    checked = infeasible = 0
    for _ in range(4):
        profile = _random_profile(rng, int(rng.integers(1, 13)), integer)
        kw = _random_args(rng, profile)
        if kw["estimators"] == ("jvp",):
            kw["estimators"] = "all"
        n = profile.num_steps
        for budget in range(1, n + 1):
            expected = _brute_force(profile, budget, **kw)
            for backend in ["python"] + (["cpp"] if HAVE_STATES else []):
                if expected is None:
                    with pytest.raises(ValueError, match="infeasible"):
                        mck.solve(profile, budget, backend=backend, **kw)
                    infeasible += 1
                    continue
                got = mck.solve(profile, budget, backend=backend, **kw)
                assert got.meta["objective"] == expected[2], (backend, budget)  # exactly: same float operations
                judged = _state_profile(profile) if kw["edge_cost"] == "state" else profile
                assert _objective_of(got, judged, kw["gamma"]) == expected[2]  # the schedule attains it
                assert got == _expected_schedule(n, *expected[:2]), (backend, budget)  # and the tie rule
                assert got.meta["solver"] == backend
                checked += 1
    assert checked > 0


def _random_table(rng, n, d, integer):
    w = (
        rng.integers(0, 4, size=(n, d + 1, d + 1, d + 1)).astype(np.float64)
        if integer
        else rng.random((n, d + 1, d + 1, d + 1))
    )
    w[rng.random(w.shape) < 0.2] = np.inf
    return w


@needs_states
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_cpp_dp_equals_reference_on_raw_tables(seed, integer):
    rng = np.random.default_rng(10 + seed)
    for n, d in [(1, 1), (1, 3), (2, 1), (5, 2), (7, 7), (12, 4), (9, 11), (int(rng.integers(1, 13)), 3)]:
        w = _random_table(rng, n, d, integer)
        forced = sorted(set(rng.integers(0, n, size=int(rng.integers(0, 3))).tolist()))
        for r_max in {1, n, int(rng.integers(1, n + 1))}:
            F, ch = slv.dp_reference(w, forced, r_max)
            obj, choice = _C.frontier_states(w, forced, r_max)
            assert obj.dtype == np.float64 and obj.shape == (r_max + 1,)
            assert choice.dtype == np.int32 and choice.shape == (r_max + 1, n, d + 1, d + 1)
            assert np.array_equal(obj, F[:, 0, 0, 0]), (n, d, r_max)  # +inf included
            assert np.array_equal(choice, ch), (n, d, r_max)
            assert np.isinf(obj[0])


@needs_states
def test_cpp_dp_forced_order_and_duplicates_and_strided_input():
    rng = np.random.default_rng(5)
    w = _random_table(rng, 10, 4, integer=False)
    F, ch = slv.dp_reference(w, [3, 7], 10)
    for forced in ([7, 3], [3, 7, 3, 0]):
        obj, choice = _C.frontier_states(w, forced, 10)
        assert np.array_equal(obj, F[:, 0, 0, 0]) and np.array_equal(choice, ch)
    big = np.zeros((10, 5, 5, 10))
    big[..., ::2] = w  # a non-contiguous view is copied, not misread
    obj, choice = _C.frontier_states(big[..., ::2], [3, 7], 10)
    assert np.array_equal(obj, F[:, 0, 0, 0]) and np.array_equal(choice, ch)


@needs_states
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_cpp_equals_python_on_profiles(seed, integer):
    rng = np.random.default_rng(200 + seed)
    for n in (1, int(rng.integers(2, 13)), 12):
        profile = _random_profile(rng, n, integer)
        kw = _random_args(rng, profile)
        if kw["estimators"] == ("jvp",):
            kw["estimators"] = "all"
        table, forced, _ = _pssp._states_setup(
            profile, kw["gamma"], kw["always_compute"], kw["max_skip"], kw["k_range"], kw["estimators"], kw["edge_cost"]
        )[0]
        F, ch = slv.dp_reference(table.w, forced, n)
        obj, choice = _C.frontier_states(table.w, sorted(set(forced)), n)
        assert np.array_equal(obj, F[:, 0, 0, 0]) and np.array_equal(choice, ch)
        fc = sch.solve_frontier(profile, backend="cpp", **kw)
        fp = sch.solve_frontier(profile, backend="python", **kw)
        assert list(fc) == list(fp) == [b for b in range(1, n + 1) if obj[b] < np.inf]
        for b in fp:
            sc, sp = mck.solve(profile, b, backend="cpp", **kw), mck.solve(profile, b, backend="python", **kw)
            assert sc == sp == fc[b] == fp[b]
            assert sc.meta["objective"] == sp.meta["objective"] == fc[b].meta["objective"] == obj[b]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(4))
def test_jvp_only_is_the_papers_solver(seed, backend):
    rng = np.random.default_rng(300 + seed)
    profile = _random_profile(rng, int(rng.integers(2, 12)), integer=bool(seed % 2))
    kw = _random_args(rng, profile)
    kw.pop("estimators")
    kw.pop("edge_cost")  # the paper's solver: velocity costs
    n = profile.num_steps
    table = slv.edge_table(profile, kw["gamma"], ("jvp",), *kw["k_range"], kw["max_skip"])
    no_poly = mck.Profile(
        profile.costs,
        profile.sigmas,
        poly_costs=np.full_like(profile.poly_costs, np.inf),
        poly_estimators=list(profile.poly_estimators),
    )
    for budget in range(1, n + 1):
        try:
            paper = sch.solve_costs(profile.costs, budget, backend=backend, **kw)
        except ValueError as e:
            assert "infeasible" in str(e)
            with pytest.raises(ValueError, match="infeasible"):
                mck.solve(profile, budget, backend=backend, estimators=("jvp",), **kw)
            continue
        got = mck.solve(profile, budget, backend=backend, estimators=("jvp",), **kw)
        assert got == paper.to_schedule() and got.is_official
        assert got.meta["objective"] == paper.objective
        # the estimator-aware DP on a jvp-only table is the paper's DP: same path, ties and objective bits
        states = slv.solve_states(table, budget, kw["always_compute"], {}, backend=backend)
        assert states == got and states.meta["objective"] == paper.objective
        # polynomial estimators that are never finite change nothing
        allowed = mck.solve(no_poly, budget, backend=backend, estimators="all", edge_cost="velocity", **kw)
        assert allowed == got and allowed.meta["objective"] == paper.objective


def test_missing_states_extension_falls_back_to_python(monkeypatch):
    rng = np.random.default_rng(9)
    profile = _random_profile(rng, 8, integer=False)
    ref = mck.solve(profile, 4, backend="python", max_skip=7)

    class OldExt:  # an extension built before the estimator-aware DP
        pass

    monkeypatch.setattr(slv._ext, "load", lambda: OldExt())
    got = mck.solve(profile, 4, backend="auto", max_skip=7)
    assert got == ref and got.meta["solver"] == "python" and got.meta["objective"] == ref.meta["objective"]
    with pytest.raises(ImportError, match="backend='cpp'"):
        slv.solve_states(
            slv.edge_table(profile, 2.0, profile.estimators, 1, profile.k_max, 7), 4, [0], {}, backend="cpp"
        )


@needs_states
@pytest.mark.parametrize(
    "w, forced, r_max, match",
    [
        (np.ones((4, 3, 3)), [], 2, "w must have shape"),
        (np.ones((4, 3, 3, 2)), [], 2, "w must have shape"),
        (np.ones((4, 3, 2, 3)), [], 2, "w must have shape"),
        (np.ones((4, 1, 1, 1)), [], 2, "w must have shape.*D >= 1"),
        (np.ones((0, 3, 3, 3)), [], 1, "w must have shape.*N >= 1"),
        (np.ones((4, 3, 3, 3)), [], 0, "r_max must be in 1..N=4, got 0"),
        (np.ones((4, 3, 3, 3)), [], 5, "r_max must be in 1..N=4, got 5"),
        (np.ones((4, 3, 3, 3)), [4], 2, "forced step 4 is out of range"),
        (np.ones((4, 3, 3, 3)), [1, -1], 2, "forced step -1 is out of range"),
    ],
)
def test_cpp_bad_arguments(w, forced, r_max, match):
    with pytest.raises(ValueError, match=match):
        _C.frontier_states(w, forced, r_max)


@needs_states
@pytest.mark.parametrize("bad", [np.nan, -1.0, -np.inf, -0.5e-300])
def test_cpp_bad_edge_values(bad):
    w = np.ones((4, 3, 3, 3))
    w[2, 1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"w must be >= 0 or \+inf \(no NaN\).*\[i, a, b, d\] = \[2, 1, 0, 2\]"):
        _C.frontier_states(w, [], 2)
    w[2, 1, 0, 2] = np.inf  # +inf and -0.0 are fine
    w[0, 0, 0, 1] = -0.0
    _C.frontier_states(w, [], 2)


# ---------------------------------------------------------------------------------------------------------------
# The one-call C++ path (_C.edge_table_states / _C.frontier_profile, what solve / solve_frontier run): its table equals
# the numpy oracle's bit for bit, and its frontiers, schedules, objective bits and errors equal those of the numpy
# table with frontier_states, on every SIMD width this machine has (MEANCACHE_SIMD_WIDTH caps it).

from meancache_kernels.checks import InfeasibleError  # noqa: E402
from meancache_kernels.solver import states as _states  # noqa: E402

HAVE_FUSED = _C is not None and hasattr(_C, "frontier_profile") and hasattr(_C, "edge_table_states")
needs_fused = pytest.mark.skipif(not HAVE_FUSED, reason="meancache_kernels._C without frontier_profile (not built)")
SIMD_WIDTHS = ["2", "4", "8"]
ODD_NAMES = POLY_NAMES + ["taylorc1", "taylorc2"]


def _bits(a):
    """float64 values as their bit patterns: equality of these is equality of every bit (-0.0, NaN included)."""
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _odd_profile(rng, integer: bool, n: int | None = None, d_poly: int | None = None, e: int | None = None,
                 kmax: int | None = None):
    """A Profile of odd shape: N, K_max, E and D drawn (or given), irregular sigmas, +inf, exact zeros and -0.0
    sprinkled (integer-valued costs make exact ties)."""
    n = int(rng.integers(1, 15)) if n is None else n
    kmax = int(rng.integers(1, 5)) if kmax is None else kmax
    e = int(rng.integers(1, len(ODD_NAMES) + 1)) if e is None else e
    d_poly = int(rng.integers(2, 10)) if d_poly is None else d_poly
    shape_c, shape_p = (kmax + 1, n + 1, n + 1), (e, n, d_poly + 1, d_poly + 1, d_poly + 1)
    if integer:
        costs = rng.integers(0, 4, size=shape_c).astype(np.float64)
        poly = rng.integers(0, 4, size=shape_p).astype(np.float64)
    else:
        costs = rng.random(shape_c) ** 3
        poly = rng.random(shape_p) ** 3
    for arr, shape in ((costs, shape_c), (poly, shape_p)):
        u = rng.random(shape)
        arr[u < 0.15] = np.inf
        arr[(u >= 0.15) & (u < 0.18)] = -0.0
    sigmas = np.append(np.cumsum(rng.random(n) + 0.01)[::-1], 0.0)
    names = [str(x) for x in rng.permutation(ODD_NAMES)[:e]]
    return mck.Profile(costs, sigmas, poly_costs=poly, poly_estimators=names)


def _odd_args(rng, profile):
    kw = _random_args(rng, profile)
    kw["gamma"] = float(rng.choice([1.0, 2.0, 1.5, 0.5, 3.0]))
    if rng.random() < 0.2:  # every edge allowed, also through a max_skip beyond a C int
        kw["max_skip"] = profile.num_steps + int(rng.integers(0, 5)) if rng.random() < 0.7 else 2**40
    if kw["estimators"] == ("jvp",):
        kw["estimators"] = "all"
    return kw


def _table_of(profile, kw, backend="python"):
    names = _pssp._estimator_names(profile, kw["estimators"])
    return slv.edge_table(profile, kw["gamma"], names, *kw["k_range"], kw["max_skip"], edge_cost=kw["edge_cost"],
                          backend=backend)


def _assert_same_frontier(got, ref):
    assert np.array_equal(_bits(got.objective), _bits(ref.objective))
    assert list(got) == list(ref)
    for b in ref:
        assert got[b] == ref[b] and got[b].meta == ref[b].meta, b


@needs_fused
@pytest.mark.parametrize("width", SIMD_WIDTHS)
@pytest.mark.parametrize("seed", range(6))
def test_cpp_edge_table_equals_numpy_oracle(seed, width, monkeypatch):
    monkeypatch.setenv("MEANCACHE_SIMD_WIDTH", width)
    rng = np.random.default_rng(500 + seed)
    for k in range(10):
        profile = _odd_profile(rng, integer=bool(k % 2))
        kw = _odd_args(rng, profile)
        if k == 0:
            kw["estimators"] = ("jvp",)  # no polynomial part at all
        ref, got = _table_of(profile, kw), _table_of(profile, kw, backend="cpp")
        assert got.w.shape == ref.w.shape and got.w.dtype == np.float64 and got.code.dtype == np.int32
        assert np.array_equal(_bits(got.w), _bits(ref.w)), kw
        assert np.array_equal(got.code, ref.code), kw
        assert got.candidates == ref.candidates and got.num_steps == ref.num_steps
        assert _table_of(profile, kw, backend="auto").candidates == ref.candidates


@needs_fused
@pytest.mark.parametrize("width", SIMD_WIDTHS)
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_fused_frontier_equals_numpy_table(seed, integer, width, monkeypatch):
    """Every budget's schedule, objective bits and meta; solve() per budget, and the infeasible ones' error."""
    monkeypatch.setenv("MEANCACHE_SIMD_WIDTH", width)
    rng = np.random.default_rng(600 + 10 * integer + seed)
    for _ in range(4):
        profile = _odd_profile(rng, integer)
        kw = _odd_args(rng, profile)
        ref = _pssp._solve_frontier(profile, backend="cpp", table_backend="numpy", **kw)
        got = _pssp._solve_frontier(profile, backend="cpp", table_backend="cpp", **kw)
        _assert_same_frontier(got, ref)
        assert _pssp._solve_frontier(profile, backend="auto", **kw).objective.tobytes() == ref.objective.tobytes()
        for b in range(1, profile.num_steps + 1):
            if b in ref:
                one = _pssp._solve(profile, b, backend="cpp", table_backend="cpp", **kw)
                assert one == ref[b] and one.meta == ref[b].meta
                continue
            with pytest.raises(InfeasibleError) as want:
                _pssp._solve(profile, b, backend="cpp", table_backend="numpy", **kw)
            with pytest.raises(InfeasibleError) as have:
                _pssp._solve(profile, b, backend="cpp", table_backend="cpp", **kw)
            assert str(have.value) == str(want.value)


@needs_fused
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_fused_paths_equal_dp_reference(seed, integer):
    """_C.frontier_profile against the numpy oracles end to end: dp_reference on the numpy table, then the path walk
    of every budget (steps and codes), for r_max = N and a smaller one."""
    rng = np.random.default_rng(700 + 10 * integer + seed)
    for _ in range(4):
        profile = _odd_profile(rng, integer)
        kw = _odd_args(rng, profile)
        n = profile.num_steps
        names = _pssp._estimator_names(profile, kw["estimators"])
        table = _table_of(profile, kw)
        F, ch = slv.dp_reference(table.w, kw["always_compute"], n)
        args = _states._table_args(profile, kw["gamma"], names, *kw["k_range"], kw["max_skip"], kw["edge_cost"])
        obj, steps, codes = _C.frontier_profile(*args, kw["always_compute"], n)
        assert np.array_equal(_bits(obj), _bits(F[:, 0, 0, 0]))
        assert steps.shape == codes.shape == (n + 1, n) and steps.dtype == codes.dtype == np.int32
        for b in range(n + 1):
            if b >= 1 and obj[b] < np.inf:
                want_steps, want_codes = _states._path(lambda r, i, a, c: ch[r, i, a, c], table.code, n, b)
                assert steps[b, :b].tolist() == want_steps and codes[b, :b].tolist() == want_codes
                assert (steps[b, b:] == -1).all() and (codes[b, b:] == -1).all()
            else:
                assert (steps[b] == -1).all() and (codes[b] == -1).all()
        r_max = int(rng.integers(1, n + 1))
        obj2, steps2, codes2 = _C.frontier_profile(*args, kw["always_compute"], r_max)
        assert np.array_equal(_bits(obj2), _bits(obj[: r_max + 1]))
        assert np.array_equal(steps2, steps[: r_max + 1]) and np.array_equal(codes2, codes[: r_max + 1])


@needs_fused
@pytest.mark.parametrize("width", SIMD_WIDTHS)
def test_fused_long_rows_and_bench_sized(width, monkeypatch):
    """Rows longer than two vectors (D = 23 with jvp: 24 lanes), polynomial planes narrower than the table, and a
    profile shaped like bench/bench_solver.py's P50 (N = 50, D = 13, 4 estimators, every state finite)."""
    monkeypatch.setenv("MEANCACHE_SIMD_WIDTH", width)
    rng = np.random.default_rng(800)
    long_rows = _odd_profile(rng, integer=False, n=24, d_poly=9, e=3, kmax=3)
    bench_like = _odd_profile(rng, integer=False, n=50, d_poly=13, e=4, kmax=6)
    bench_like.poly_costs[..., 2:] = rng.random(bench_like.poly_costs[..., 2:].shape) * 1e-3
    cases = [
        (long_rows, dict(estimators="all", max_skip=22, gamma=2.0, edge_cost="state", always_compute=[0, 7])),
        (long_rows, dict(estimators="all", max_skip=30, gamma=1.5, edge_cost="velocity")),
        (long_rows, dict(estimators=("taylor1", "mean1", "jvp"), max_skip=5, gamma=1.0, edge_cost="state")),
        (bench_like, dict(estimators=None, gamma=2.0, edge_cost="state")),
        (bench_like, dict(estimators="all", max_skip=12, gamma=2.0, edge_cost="velocity", always_compute=[0, 25])),
    ]
    for profile, kw in cases:
        names = _pssp._estimator_names(profile, kw["estimators"])
        kw = {**kw, "estimators": [n for n in names if n in profile.estimators]}
        ref = _pssp._solve_frontier(profile, backend="cpp", table_backend="numpy", **kw)
        got = _pssp._solve_frontier(profile, backend="cpp", table_backend="cpp", **kw)
        _assert_same_frontier(got, ref)
        assert len(ref) > 0


def _mutations(profile, rng):
    """In-place changes after construction that a Profile refuses at construction (a Profile's arrays are mutable):
    a NaN or negative polynomial cost at a reachable and at an unreachable state (a = 0 at i > 0), a NaN jvp cost
    (refused before any table), sigmas that increase (negative state costs) or repeat (+inf * 0 = NaN)."""
    n = profile.num_steps

    def poly(value, a):
        profile.poly_costs[0, n - 1, a, 0, 2] = value

    def jvp(value):
        profile.costs[1, 0, 2] = value

    def sigmas(k, value):
        profile.sigmas[k] = value

    return [lambda: poly(np.nan, 1), lambda: poly(-1.0, 1), lambda: poly(-1.0, 0), lambda: poly(np.nan, 0),
            lambda: jvp(np.nan), lambda: sigmas(3, profile.sigmas[0] + 1.0), lambda: sigmas(3, profile.sigmas[1])]


@needs_fused
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("gamma", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("edge_cost", ["velocity", "state"])
@pytest.mark.parametrize("which", range(7))
def test_fused_mutated_profile_same_result_or_error(which, edge_cost, gamma):
    """The oracle's NaN rules (numpy.argmin's first NaN; a NaN polynomial candidate never replaces) and
    frontier_states' error on a bad table value, through both paths: the same frontier or the same ValueError."""
    rng = np.random.default_rng(900 + which)
    profile = _odd_profile(rng, integer=False, n=6, d_poly=4, e=2, kmax=2)
    _mutations(profile, rng)[which]()
    outcomes = []
    for table_backend in ("numpy", "cpp"):
        try:
            outcomes.append(_pssp._solve_frontier(profile, backend="cpp", table_backend=table_backend, gamma=gamma,
                                                  estimators="all", edge_cost=edge_cost, max_skip=4))
        except ValueError as e:
            outcomes.append(str(e))
    ref, got = outcomes
    if isinstance(ref, str):
        assert got == ref
    else:
        _assert_same_frontier(got, ref)


def test_table_backend_fallbacks_and_arguments(monkeypatch):
    rng = np.random.default_rng(11)
    profile = _random_profile(rng, 8, integer=False)
    ref = _pssp._solve_frontier(profile, backend="python", max_skip=7)
    assert ref[4].meta["solver"] == "python"
    with pytest.raises(ValueError, match="table_backend must be one of"):
        _pssp._solve_frontier(profile, table_backend="torch")
    with pytest.raises(ValueError, match="table_backend must be one of"):
        _pssp._solve(profile, 4, table_backend="torch")
    with pytest.raises(ValueError, match="table_backend='cpp' needs backend"):
        _pssp._solve_frontier(profile, backend="python", table_backend="cpp")
    if not HAVE_STATES:
        return

    class DPOnly:  # an extension built before frontier_profile: the numpy table, then its DP
        frontier_states = staticmethod(_C.frontier_states)

    monkeypatch.setattr(slv._ext, "load", lambda: DPOnly())
    got = mck.solve_frontier(profile, backend="cpp", max_skip=7)
    assert got[4].meta["solver"] == "cpp"
    _assert_same_frontier(got, _pssp._solve_frontier(profile, backend="cpp", max_skip=7, table_backend="numpy"))
    assert mck.solve(profile, 4, backend="cpp", max_skip=7) == ref[4]
    assert np.array_equal(_bits(got.objective), _bits(ref.objective))
    with pytest.raises(ImportError, match="frontier_profile"):
        _pssp._solve_frontier(profile, backend="auto", max_skip=7, table_backend="cpp")
    with pytest.raises(ImportError, match="backend='cpp'"):
        slv.edge_table(profile, 2.0, profile.estimators, 1, profile.k_max, 7, backend="cpp")
    assert slv.edge_table(profile, 2.0, profile.estimators, 1, profile.k_max, 7, backend="auto").w.shape[0] == 8


def _fused_kwargs():
    return dict(costs=np.zeros((3, 5, 5)), sigmas=np.linspace(1.0, 0.0, 5), poly_costs=np.ones((2, 4, 3, 3, 3)),
                poly_index=[0, 1], use_jvp=True, k_lo=1, k_hi=2, max_skip=3, edge_cost="state", gamma=2.0)


@needs_fused
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(costs=np.zeros((3, 5, 4))), "costs must have shape"),
        (dict(costs=np.zeros((1, 5, 5))), "costs must have shape"),
        (dict(sigmas=np.linspace(1.0, 0.0, 4)), r"sigmas must have shape \(N\+1,\) = \(5,\)"),
        (dict(poly_costs=np.ones((2, 3, 3, 3, 3))), "poly_costs must have shape"),
        (dict(poly_costs=np.ones((2, 4, 3, 3, 2))), "poly_costs must have shape"),
        (dict(poly_index=[0, 2]), "poly_index 2 is out of range for 2"),
        (dict(poly_costs=None), "poly_index given without poly_costs"),
        (dict(k_lo=0), "k_range must satisfy"),
        (dict(k_hi=3), "k_range must satisfy"),
        (dict(max_skip=-1), "max_skip must be >= 0"),
        (dict(edge_cost="states"), "edge_cost must be 'velocity' or 'state'"),
        (dict(gamma=0.0), "gamma must be finite and > 0"),
        (dict(gamma=float("nan")), "gamma must be finite and > 0"),
        (dict(power="fast"), "power must be 'numpy' or 'libm'"),
    ],
)
def test_fused_bad_arguments(change, match):
    kw = {**_fused_kwargs(), **change}
    with pytest.raises(ValueError, match=match):
        _C.edge_table_states(**kw)
    with pytest.raises(ValueError, match=match):
        _C.frontier_profile(**kw, forced=[0], r_max=4)


@needs_fused
@pytest.mark.parametrize(
    "forced, r_max, match",
    [([0], 0, "r_max must be in 1..N=4, got 0"), ([0], 5, "r_max must be in 1..N=4, got 5"),
     ([4], 2, "forced step 4 is out of range"), ([1, -1], 2, "forced step -1 is out of range")],
)
def test_fused_bad_forced_and_r_max(forced, r_max, match):
    with pytest.raises(ValueError, match=match):
        _C.frontier_profile(**_fused_kwargs(), forced=forced, r_max=r_max)
    obj, steps, codes = _C.frontier_profile(**_fused_kwargs(), forced=[3, 1, 3], r_max=4)  # any order, duplicates
    w, code = _C.edge_table_states(**_fused_kwargs())
    F, _ = slv.dp_reference(w, [1, 3], 4)
    assert np.array_equal(_bits(obj), _bits(F[:, 0, 0, 0]))
