"""PSSP over (estimator, parameter) per edge: the exact DP with the previous computed nodes in its state.

docs/design.md section 2b. The polynomial estimators of an edge i -> j read the velocities of the computed nodes before
i, so their edge cost ``L_e(h, i, j)`` depends on the path: the state of the dynamic programme at computed node i is
``(a, b)`` with ``a = i - h`` (h: the computed node before i; 0 at i = 0) and ``b = h - h2`` (h2: the one before
h; 0 when h = 0). Edge i -> i + d from state (a, b) costs

    w(i, a, b, d) = 0                                                         (chain edge, d = 1)
    w(i, a, b, d) = min( (min_K L_K(i, i+d)) ** gamma,  min_e L_e(i, a, b, d) ** gamma )     (d >= 2)

over the allowed candidates (``jvp`` with K in the allowed range; each selected polynomial estimator), and leads to
state (d, a) at node i + d. Per edge the first candidate attaining the minimum wins, in the order jvp K = k_lo..k_hi,
then the polynomial estimators in the order of :attr:`Profile.poly_estimators`. Powers as in the paper's solver
(c * c for gamma = 2, c for gamma = 1, ``numpy.power`` otherwise); :func:`edge_table` builds the table with numpy
(the oracle) and both DP backends read it, so their objectives are bit-identical.

:func:`solve_profile` / :func:`frontier_profile` (what :func:`meancache_kernels.solve` and
:func:`~meancache_kernels.solve_frontier` run) skip the Python table when the compiled extension has
``frontier_profile``: it builds the same table in C++ (the same float operations in the same order, numpy's argmin
rule, ``numpy.power`` called back for other gammas) and runs the DP over the states reachable from node 0 only, so
schedules and objective bits equal those of the numpy table with either DP (tests/solver/test_solver_states.py). The
numpy table stays the path of ``backend="python"``, of an extension built before it, and of ``table_backend="numpy"``.

Backward DP over (computed count r, node i, a, b):

    F[1][i][a][b] = w(i, a, b, N - i)                       (no forced step after i)
    F[r][i][a][b] = min over j = i + d of  w(i, a, b, d) + F[r-1][j][d][a]

scanning d upwards and replacing only on a strictly smaller value (the paper solver's tie rule: smallest objective,
then the smallest next computed step). The answer is F[B][0][0][0]. Cost O(B N D^3) for the longest edge D.
``estimators=("jvp",)`` never comes here: :func:`meancache_kernels.solve` then runs the paper's solver (:mod:`.paper`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..checks import InfeasibleError
from ..estimators import parse
from ..schedule import Schedule
from . import _ext
from .frontier import Frontier

__all__ = [
    "EdgeTable",
    "TABLE_BACKENDS",
    "edge_table",
    "dp_reference",
    "solve_states",
    "frontier_states",
    "solve_profile",
    "frontier_profile",
]

TABLE_BACKENDS = ("auto", "numpy", "cpp")


class EdgeTable:
    """Per-state edge weights and the candidate chosen on each edge.

    Attributes:
        w: float64 [N, D+1, D+1, D+1], ``w[i, a, b, d]`` (+inf where not allowed).
        code: int32 of w's shape: 0 on chain edges / not allowed, else 1 + index into ``candidates``.
        candidates: ``[(family, param), ...]`` the codes refer to.
        num_steps: N.
    """

    __slots__ = ("w", "code", "candidates", "num_steps")

    def __init__(self, w: np.ndarray, code: np.ndarray, candidates: list[tuple[str, int]], num_steps: int):
        self.w, self.code, self.candidates, self.num_steps = w, code, candidates, num_steps

    @property
    def d_max(self) -> int:
        return self.w.shape[3] - 1


def _power(c: np.ndarray, gamma: float) -> np.ndarray:
    if gamma == 2.0:
        return c * c
    if gamma == 1.0:
        return c.copy()
    return np.power(c, gamma)


def _selection(profile, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int):
    """(use_jvp, poly names, their indices in ``profile.poly_estimators``, candidates, longest edge D) of a table."""
    n = profile.num_steps
    use_jvp = "jvp" in estimators
    poly = [e for e in estimators if e != "jvp"]
    pidx = [profile.poly_estimators.index(e) for e in poly]
    d_poly = profile.poly_costs.shape[2] - 1 if poly else 1
    d_lim = max(1, min(max_skip + 1, n))
    d_max = d_lim if use_jvp else min(d_lim, d_poly)
    candidates: list[tuple[str, int]] = [("jvp", k) for k in range(k_lo, k_hi + 1)] if use_jvp else []
    candidates.extend(parse(name) for name in poly)
    return use_jvp, poly, pidx, candidates, d_max


def _table_args(profile, gamma: float, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int,
                edge_cost: str) -> tuple:
    """The positional arguments of ``_C.edge_table_states`` / ``_C.frontier_profile`` (before forced, r_max)."""
    use_jvp, _, pidx, _, _ = _selection(profile, estimators, k_lo, k_hi, max_skip)
    sig = np.asarray(profile.sigmas, dtype=np.float64)
    poly = profile.poly_costs if pidx else None
    # max_skip >= N allows every edge either way; clamped, any Python int fits the extension's int
    return (profile.costs, sig, poly, pidx, use_jvp, k_lo, k_hi, min(max_skip, profile.num_steps), edge_cost,
            float(gamma))


def edge_table(profile, gamma: float, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int, *,
               edge_cost: str = "velocity", backend: str = "python") -> EdgeTable:
    """Build the :class:`EdgeTable` of a profile for the selected estimator names (``"jvp"`` and/or polynomial
    ones the profile has), JVP spans ``k_lo..k_hi`` and runs of at most ``max_skip`` skipped steps. ``edge_cost``
    ``"state"`` multiplies every cost of edge i -> j by (s_i - s_j) before the power (the state error at j).

    ``backend``: ``"python"`` (default): numpy, the oracle; ``"cpp"``: the extension's ``edge_table_states``
    (bit-identical; ImportError when the extension lacks it); ``"auto"``: C++ when available."""
    if backend not in ("python", "cpp", "auto"):
        raise ValueError(f"backend must be 'auto', 'cpp' or 'python', got {backend!r}")
    if backend != "python":
        ext = _ext.pick(backend, need="edge_table_states")
        if ext is not None:
            _, _, _, candidates, _ = _selection(profile, estimators, k_lo, k_hi, max_skip)
            w, code = ext.edge_table_states(*_table_args(profile, gamma, estimators, k_lo, k_hi, max_skip, edge_cost))
            return EdgeTable(w, code, candidates, profile.num_steps)
    return _edge_table_numpy(profile, gamma, estimators, k_lo, k_hi, max_skip, edge_cost)


def _edge_table_numpy(profile, gamma: float, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int,
                      edge_cost: str) -> EdgeTable:
    n = profile.num_steps
    sig = np.asarray(profile.sigmas, dtype=np.float64)
    use_jvp = "jvp" in estimators
    poly = [e for e in estimators if e != "jvp"]
    pidx = [profile.poly_estimators.index(e) for e in poly]
    d_poly = profile.poly_costs.shape[2] - 1 if poly else 1
    d_lim = max(1, min(max_skip + 1, n))
    d_max = d_lim if use_jvp else min(d_lim, d_poly)
    shape = (n, d_max + 1, d_max + 1, d_max + 1)
    candidates: list[tuple[str, int]] = []
    w2 = np.full((n, d_max + 1), np.inf)  # the jvp part, independent of (a, b)
    code2 = np.zeros((n, d_max + 1), dtype=np.int32)
    if use_jvp:
        # min over K of L_K(i, i + d), the smallest K on ties (argmin returns the first minimum)
        candidates.extend(("jvp", k) for k in range(k_lo, k_hi + 1))
        ck = np.full((k_hi - k_lo + 1, n, d_max + 1), np.inf)
        ii = np.arange(n)
        for d in range(2, min(d_max, max_skip + 1) + 1):
            ok = ii + d <= n
            ck[:, ok, d] = profile.costs[k_lo : k_hi + 1, ii[ok], ii[ok] + d]
            if edge_cost == "state":
                ck[:, ok, d] *= sig[ii[ok]] - sig[ii[ok] + d]
        terms = _power(ck, gamma)
        arg = np.argmin(terms, axis=0)
        w2 = np.take_along_axis(terms, arg[None], axis=0)[0]
        code2 = np.where(np.isfinite(w2), arg + 1, 0).astype(np.int32)
    w = np.broadcast_to(w2[:, None, None, :], shape).copy()
    code = np.broadcast_to(code2[:, None, None, :], shape).copy()
    if poly:
        # the polynomial estimators, first in profile order on ties; they replace jvp only when strictly better
        first = len(candidates)
        for name in poly:
            candidates.append(parse(name))
        dd = min(d_poly, d_max)
        pc = profile.poly_costs[pidx][:, :, : dd + 1, : dd + 1, : dd + 1]
        if edge_cost == "state":
            jj = np.minimum(np.arange(n)[:, None] + np.arange(dd + 1)[None, :], n)
            scale = sig[:n, None] - sig[jj]  # [N, d]; 0 for d = 0 (chain and d = 0 entries are reset below)
            pc = pc.copy()
            np.multiply(pc, np.broadcast_to(scale[None, :, None, None, :], pc.shape), out=pc, where=np.isfinite(pc))
        terms = _power(pc, gamma)
        arg = np.argmin(terms, axis=0)
        pw = np.take_along_axis(terms, arg[None], axis=0)[0]
        pw[..., :2] = np.inf  # chain edges are set below
        sub_w = w[:, : dd + 1, : dd + 1, : dd + 1]
        sub_c = code[:, : dd + 1, : dd + 1, : dd + 1]
        better = pw < sub_w
        sub_w[better] = pw[better]
        sub_c[better] = (arg[better] + first + 1).astype(np.int32)
    w[..., 0] = np.inf
    w[..., 1] = 0.0
    code[..., :2] = 0
    return EdgeTable(np.ascontiguousarray(w), np.ascontiguousarray(code), candidates, n)


def _next_forced(n: int, forced) -> np.ndarray:
    fs = set(int(f) for f in forced)
    nf = np.full(n, n, dtype=np.int64)
    nxt = n
    for i in range(n - 1, -1, -1):
        nf[i] = nxt
        if i in fs:
            nxt = i
    return nf


def dp_reference(w: np.ndarray, forced, r_max: int) -> tuple[np.ndarray, np.ndarray]:
    """The backward DP in numpy (the oracle of the C++ one): ``(F [r_max+1, N+1, D+1, D+1], choice d [r_max+1, N,
    D+1, D+1] int32, 0 where none)``."""
    n, d1 = w.shape[0], w.shape[1]
    d_max = d1 - 1
    nf = _next_forced(n, forced)
    inf = math.inf
    F = np.full((r_max + 1, n + 1, d1, d1), inf)
    ch = np.zeros((r_max + 1, n, d1, d1), dtype=np.int32)
    for i in range(n):
        d = n - i
        if d <= d_max and nf[i] == n:
            F[1, i] = w[i, :, :, d]
            ch[1, i] = d
    for r in range(2, r_max + 1):
        prev = F[r - 1]
        for i in range(n - r + 1):
            best = np.full((d1, d1), inf)
            arg = np.zeros((d1, d1), dtype=np.int32)
            hi = min(i + d_max, int(nf[i]), n - r + 1)
            for j in range(i + 1, hi + 1):
                d = j - i
                c = w[i, :, :, d] + prev[j, d, :][:, None]
                better = c < best
                best = np.where(better, c, best)
                arg[better] = d
            F[r, i] = best
            ch[r, i] = arg
    return F, ch


def _path(choice_of, code: np.ndarray, n: int, budget: int) -> tuple[list[int], list[int]]:
    steps, codes = [0], []
    i, a, b = 0, 0, 0
    for r in range(budget, 0, -1):
        d = int(choice_of(r, i, a, b))
        codes.append(int(code[i, a, b, d]))
        i, a, b = i + d, d, a
        if r > 1:
            steps.append(i)
    assert i == n
    return steps, codes


def _run_dp(table: EdgeTable, forced, r_max: int, backend: str):
    """(objective per budget [r_max+1], choice accessor) from the C++ DP or the numpy reference."""
    ext = _ext.pick(backend, need="frontier_states")
    if ext is None:
        F, ch = dp_reference(table.w, forced, r_max)
        return F[:, 0, 0, 0].copy(), (lambda r, i, a, b: ch[r, i, a, b]), "python"
    obj, ch = ext.frontier_states(table.w, sorted(set(int(f) for f in forced)), r_max)
    return np.asarray(obj), (lambda r, i, a, b: ch[r, i, a, b]), "cpp"


def _schedule(table: EdgeTable, steps: list[int], codes: list[int], meta: dict) -> Schedule:
    return _schedule_of(table.num_steps, table.candidates, steps, codes, meta)


def _schedule_of(n: int, candidates, steps: list[int], codes: list[int], meta: dict) -> Schedule:
    mask, est, params = [False] * n, [""] * n, [0] * n
    ends = steps[1:] + [n]
    for s, e, c in zip(steps, ends, codes):
        mask[s] = True
        if e - s > 1:
            fam, p = candidates[c - 1]
            est[s + 1 : e] = [fam] * (e - s - 1)
            params[s + 1 : e] = [p] * (e - s - 1)
    return Schedule(mask, params, meta=meta, estimators=est)


def _infeasible(n: int, budget: int, forced, d_max: int) -> InfeasibleError:
    return InfeasibleError(
        f"infeasible: no path 0 -> {n} with exactly budget={budget} computed steps exists with "
        f"always_compute={sorted(set(int(f) for f in forced))} and edges of at most {d_max} steps for the "
        "selected estimators; try another budget or a larger max_skip"
    )


def solve_states(table: EdgeTable, budget: int, forced, meta: dict, backend: str = "auto"):
    """The optimal :class:`Schedule` with ``budget`` computed steps (ValueError when infeasible)."""
    obj, choice, solver = _run_dp(table, forced, budget, backend)
    if not obj[budget] < math.inf:
        raise _infeasible(table.num_steps, budget, forced, table.d_max)
    steps, codes = _path(choice, table.code, table.num_steps, budget)
    return _schedule(table, steps, codes, dict(meta, objective=float(obj[budget]), solver=solver))


def frontier_states(table: EdgeTable, forced, meta: dict, backend: str = "auto") -> Frontier:
    """:func:`solve_states` for every feasible budget, from one DP."""
    n = table.num_steps
    obj, choice, solver = _run_dp(table, forced, n, backend)
    def build(b: int):
        steps, codes = _path(choice, table.code, n, b)
        return _schedule(table, steps, codes, dict(meta, objective=float(obj[b]), solver=solver))

    return Frontier(obj, build, n)


def _fused_ext(backend: str, table_backend: str):
    """The extension for the one-call table + DP (None: build the numpy table and run :func:`solve_states`)."""
    if table_backend not in TABLE_BACKENDS:
        raise ValueError(f"table_backend must be one of {TABLE_BACKENDS}, got {table_backend!r}")
    _ext.pick(backend)  # validates backend; "cpp" without an extension raises
    if table_backend == "numpy" or backend == "python":
        if table_backend == "cpp":
            raise ValueError("table_backend='cpp' needs backend 'auto' or 'cpp'")
        return None
    ext = _ext.load()  # backend "cpp" with an extension built before frontier_profile: the numpy table, its DP
    if ext is not None and not hasattr(ext, "frontier_profile"):
        ext = None
    if ext is None and table_backend == "cpp":
        raise ImportError("table_backend='cpp' needs meancache_kernels._C with frontier_profile; rebuild it with "
                          "`pip install --no-build-isolation -e .`")
    return ext


def _fused(ext, profile, gamma, estimators, k_lo, k_hi, max_skip, forced, r_max: int, edge_cost: str):
    args = _table_args(profile, gamma, estimators, k_lo, k_hi, max_skip, edge_cost)
    return ext.frontier_profile(*args, sorted(set(int(f) for f in forced)), r_max)


def solve_profile(profile, gamma: float, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int,
                  budget: int, forced, meta: dict, *, edge_cost: str = "velocity", backend: str = "auto",
                  table_backend: str = "auto") -> Schedule:
    """:func:`solve_states` on the :func:`edge_table` of a profile, in one C++ call when the extension has it
    (``table_backend="auto"``; ``"numpy"``: the numpy table, then the DP of ``backend``; ``"cpp"``: the C++ call or
    ImportError). The same schedule, objective bits and errors either way."""
    ext = _fused_ext(backend, table_backend)
    if ext is None:
        table = edge_table(profile, gamma, estimators, k_lo, k_hi, max_skip, edge_cost=edge_cost)
        return solve_states(table, budget, forced, meta, backend=backend)
    _, _, _, candidates, d_max = _selection(profile, estimators, k_lo, k_hi, max_skip)
    obj, steps, codes = _fused(ext, profile, gamma, estimators, k_lo, k_hi, max_skip, forced, budget, edge_cost)
    if not obj[budget] < math.inf:
        raise _infeasible(profile.num_steps, budget, forced, d_max)
    return _schedule_of(profile.num_steps, candidates, steps[budget, :budget].tolist(),
                        codes[budget, :budget].tolist(), dict(meta, objective=float(obj[budget]), solver="cpp"))


def frontier_profile(profile, gamma: float, estimators: Sequence[str], k_lo: int, k_hi: int, max_skip: int, forced,
                     meta: dict, *, edge_cost: str = "velocity", backend: str = "auto",
                     table_backend: str = "auto") -> Frontier:
    """:func:`frontier_states` on the :func:`edge_table` of a profile (``table_backend`` as :func:`solve_profile`);
    each Schedule is built on first access."""
    ext = _fused_ext(backend, table_backend)
    if ext is None:
        table = edge_table(profile, gamma, estimators, k_lo, k_hi, max_skip, edge_cost=edge_cost)
        return frontier_states(table, forced, meta, backend=backend)
    n = profile.num_steps
    _, _, _, candidates, _ = _selection(profile, estimators, k_lo, k_hi, max_skip)
    obj, steps, codes = _fused(ext, profile, gamma, estimators, k_lo, k_hi, max_skip, forced, n, edge_cost)

    def build(b: int):
        return _schedule_of(n, candidates, steps[b, :b].tolist(), codes[b, :b].tolist(),
                            dict(meta, objective=float(obj[b]), solver="cpp"))

    return Frontier(obj, build, n)
