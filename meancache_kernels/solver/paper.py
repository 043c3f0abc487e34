"""The paper's PSSP solver (docs/design.md section 2): one K per edge, costs ``L_K(i, j)`` from a raw cost array.

:func:`solve_costs` / :func:`frontier_costs` run the C++ solver (``meancache_kernels._C``) or the pure-Python
reference (:func:`solve_reference`, :func:`frontier_reference`: the oracle and the fallback); both give bit-identical
results. :class:`SolverResult` is one solution; :class:`Frontier` the optimum of every budget from one DP.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..checks import InfeasibleError, as_int, check_budget, check_gamma, int_list
from ..schedule import Schedule
from . import _ext
from .frontier import Frontier

__all__ = ["SolverResult", "Frontier", "solve_costs", "frontier_costs", "solve_reference", "frontier_reference"]


# ====================================================================================================== PSSP solver
#
# The problem (docs/design.md 2, "PSSP"). Nodes 0..N; a schedule is a path 0 = p_0 < p_1 < ... < p_{B-1} < p_B = N
# whose first B nodes are the computed steps. Edge i -> j costs
#
#     w(i, j) = 0                                              (chain edge, j = i + 1, no skipped step)
#     w(i, j) = (min_{K in [k_lo, k_hi]} L_K(i, j)) ** gamma     (j - i - 1 skipped steps, at most max_skip)
#
# and is not allowed when every L_K(i, j) of the range is +inf. The power is computed as c * c for gamma = 2, c for
# gamma = 1 and libm's pow otherwise, identically in C++ and Python. Forced steps must lie on the path. The objective
# of a path is the float64 sum of its edge terms accumulated from the LAST edge back to the first (the order in which
# the backward dynamic programme below adds them), so every implementation gets bit-identical objectives.
#
# Deterministic tie-breaking (shared by the C++ solver, the Python reference and the tests' brute force):
#   * per edge, K is the smallest K in [k_lo, k_hi] attaining the minimum (K = 0 on chain edges);
#   * paths compare by the key (T_0, p_1, T_1, p_2, T_2, ...) in lexicographic order, where T_k is the objective of
#     the remaining path p_k -> N. So: smallest objective; on an exact tie the smallest next computed step; then
#     the smallest objective of the rest, and so on. With exact arithmetic (e.g. integer costs) this is simply the
#     lexicographically smallest list of computed steps among the optimal ones.
#
# Backward DP over (computed count r, node i): F[r][i] = best objective from computed node i to N with r computed
# nodes (i included): F[1][i] = w(i, N); F[r][i] = min over j of w(i, j) + F[r-1][j], scanning j upwards and
# replacing only on a strictly smaller value. Cost O(B * N * max_skip) after an O(N * max_skip * K) edge table.
# Rounding is monotone, so the DP minimum equals the minimum over all paths even in floating point, and the scan
# order realises the key above.

class SolverResult:
    """One solution of the PSSP problem.

    Attributes:
        compute_steps: the B computed steps (increasing, starting at 0).
        spans: one K per edge (B values): edge ``compute_steps[b] -> compute_steps[b+1]`` (or -> N for the last);
            0 on chain edges (no skipped step).
        objective: sum over edges of the edge term, accumulated from the last edge back to the first.
        num_steps: N.
    """

    __slots__ = ("compute_steps", "spans", "objective", "num_steps")

    def __init__(self, compute_steps, spans, objective: float, num_steps: int):
        self.compute_steps = tuple(int(s) for s in compute_steps)
        self.spans = tuple(int(k) for k in spans)
        self.objective = float(objective)
        self.num_steps = int(num_steps)

    @classmethod
    def _trusted(cls, compute_steps: tuple, spans: tuple, objective: float, num_steps: int) -> "SolverResult":
        # no conversion: for values that are already tuples of Python ints and a float (the solvers' own output)
        self = object.__new__(cls)
        self.compute_steps, self.spans, self.objective, self.num_steps = compute_steps, spans, objective, num_steps
        return self

    @property
    def budget(self) -> int:
        return len(self.compute_steps)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SolverResult):
            return NotImplemented
        return (self.compute_steps, self.spans, self.objective, self.num_steps) == (
            other.compute_steps,
            other.spans,
            other.objective,
            other.num_steps,
        )

    def __hash__(self) -> int:
        return hash((self.compute_steps, self.spans, self.objective, self.num_steps))

    def to_schedule(self, meta: dict | None = None) -> Schedule:
        """The :class:`Schedule` (K of each edge given to every skipped step of that edge)."""
        return Schedule.from_official(list(self.compute_steps), list(self.spans), self.num_steps, meta=meta)

    def __repr__(self) -> str:
        return (
            f"SolverResult(N={self.num_steps}, B={self.budget}, compute_steps={list(self.compute_steps)}, "
            f"spans={list(self.spans)}, objective={self.objective!r})"
        )


def _frontier(objective, steps, spans, num_steps: int) -> Frontier:
    """A :class:`Frontier` of :class:`SolverResult` from the DP's arrays: int32 [N+1, N] of steps and spans (row B
    holds B values, padded with -1)."""
    import numpy as np

    steps, spans = np.asarray(steps), np.asarray(spans)
    objective = np.asarray(objective, dtype=np.float64)
    return Frontier(objective, lambda b: SolverResult._trusted(
        tuple(steps[b, :b].tolist()), tuple(spans[b, :b].tolist()), float(objective[b]), num_steps), num_steps)


def _check_costs(costs, name: str = "costs"):
    import numpy as np

    if hasattr(costs, "detach"):  # torch tensor without importing torch
        costs = costs.detach().cpu().double().numpy()
    arr = np.asarray(costs)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise TypeError(f"{name} must be a real float array [K_max+1, N+1, N+1], got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 2 or arr.shape[0] < 2:
        raise ValueError(
            f"{name} must have shape [K_max+1, N+1, N+1] with K_max >= 1 and N >= 1, got {tuple(arr.shape)}"
        )
    if not (arr >= 0).all():  # one pass; NaN fails the comparison too
        if np.isnan(arr).any():
            idx = tuple(int(x) for x in np.argwhere(np.isnan(arr))[0])
            raise ValueError(f"{name} holds NaN at [K, i, j] = {idx}: use +inf for edges that are not allowed")
        idx = tuple(int(x) for x in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name} must be >= 0 (or +inf), got {arr[idx]} at [K, i, j] = {idx}")
    return arr


def _check_solver_args(costs, gamma, always_compute, max_skip, k_range):
    """Validate and normalise the arguments shared by every solver entry point."""
    arr = _check_costs(costs)
    n = arr.shape[1] - 1
    kmax = arr.shape[0] - 1
    gamma = check_gamma(gamma)
    if always_compute is None:
        always_compute = ()
    if hasattr(always_compute, "tolist"):
        always_compute = always_compute.tolist()
    if isinstance(always_compute, (str, bytes)) or not hasattr(always_compute, "__iter__"):
        raise TypeError(f"always_compute must be an iterable of step indices, got {always_compute!r}")
    forced = sorted(set(int_list(list(always_compute), "always_compute")))
    for f in forced:
        if not 0 <= f < n:
            raise ValueError(f"always_compute holds step {f}, out of range for N={n} steps (valid: 0..{n - 1})")
    if max_skip is None:
        max_skip = n - 1
    max_skip = as_int(max_skip, "max_skip")
    if max_skip < 0:
        raise ValueError(f"max_skip must be >= 0 (0 allows only chain edges), got {max_skip}")
    if k_range is None:
        k_lo, k_hi = 1, kmax
    else:
        if isinstance(k_range, (str, bytes)) or not isinstance(k_range, Sequence) or len(k_range) != 2:
            raise ValueError(f"k_range must be a pair (k_lo, k_hi), got {k_range!r}")
        k_lo, k_hi = as_int(k_range[0], "k_range[0]"), as_int(k_range[1], "k_range[1]")
        if not 1 <= k_lo <= k_hi <= kmax:
            raise ValueError(f"k_range must satisfy 1 <= k_lo <= k_hi <= K_max={kmax}, got ({k_lo}, {k_hi})")
    return arr, gamma, forced, max_skip, k_lo, k_hi


def _infeasible(budget: int, n: int, forced, max_skip: int, k_lo: int, k_hi: int) -> InfeasibleError:
    return InfeasibleError(
        f"infeasible: no path 0 -> {n} with exactly budget={budget} computed steps exists with always_compute="
        f"{list(forced)}, max_skip={max_skip} and k_range=({k_lo}, {k_hi}) (an edge is allowed only when some "
        "L_K(i, j) in the K range is finite); try another budget, a larger max_skip or a wider k_range"
    )


def _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, r_max):
    """Backward DP in plain Python (the oracle). Returns (F rows, choice rows, edge weights, edge Ks, D)."""
    import math

    n = arr.shape[1] - 1
    d_max = min(max_skip + 1, n)
    inf = math.inf
    # edge table: w[i][d], kk[i][d] for j = i + d, d = 1..d_max
    w = [[inf] * (d_max + 1) for _ in range(n)]
    kk = [[0] * (d_max + 1) for _ in range(n)]
    for i in range(n):
        last = min(n, i + d_max)
        w[i][1] = 0.0
        if last >= i + 2:
            block = arr[k_lo : k_hi + 1, i, i + 2 : last + 1].tolist()
            for d in range(2, last - i + 1):
                best, best_k = inf, 0
                for t in range(k_hi - k_lo + 1):
                    c = block[t][d - 2]
                    if c < best:
                        best, best_k = c, k_lo + t
                if best < inf:
                    w[i][d] = best * best if gamma == 2.0 else best if gamma == 1.0 else math.pow(best, gamma)
                    kk[i][d] = best_k
    forced_set = set(forced)
    nf = [n] * n  # next forced step after i (or N)
    nxt_forced = n
    for i in range(n - 1, -1, -1):
        nf[i] = nxt_forced
        if i in forced_set:
            nxt_forced = i
    rows = [None, [inf] * n]
    choice = [None, None]
    f1 = rows[1]
    for i in range(n):
        d = n - i
        if d <= d_max and nf[i] == n:
            f1[i] = w[i][d]
    for r in range(2, r_max + 1):
        prev = rows[r - 1]
        cur = [inf] * n
        ch = [-1] * n
        for i in range(n - r + 1):
            best, arg = inf, -1
            wi = w[i]
            hi = min(i + d_max, nf[i], n - r + 1)  # the rest needs r - 1 nodes in j..n-1
            for j in range(i + 1, hi + 1):
                c = wi[j - i] + prev[j]
                if c < best:
                    best, arg = c, j
            cur[i], ch[i] = best, arg
        rows.append(cur)
        choice.append(ch)
    return rows, choice, w, kk


def _py_path(rows, choice, w, kk, n, budget):
    steps, ks = [0], []
    i = 0
    for r in range(budget, 1, -1):
        j = choice[r][i]
        steps.append(j)
        ks.append(kk[i][j - i])
        i = j
    ks.append(kk[i][n - i])
    return SolverResult._trusted(tuple(steps), tuple(ks), rows[budget][0], n)


def solve_reference(costs, budget: int, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                    k_range: tuple[int, int] | None = None) -> SolverResult:
    """Pure-Python PSSP solver: the oracle of the C++ solver and the fallback when ``meancache_kernels._C`` is missing.

    Args:
        costs: float array [K_max+1, N+1, N+1]; ``costs[K, i, j]`` is L_K(i, j), +inf where not allowed (K = 0 unused).
        budget: B, number of computed steps (1..N); step 0 is always computed.
        gamma: exponent > 0 of each edge's cost in the objective.
        always_compute: steps that must be computed (0 is computed anyway).
        max_skip: longest run of skipped steps per edge (edge i -> j allowed when j - i - 1 <= max_skip);
            None: no limit.
        k_range: ``(k_lo, k_hi)``, the spans K allowed; None: 1..K_max.

    Returns:
        :class:`SolverResult`. Ties follow the rule described above ``SolverResult`` in this module.

    Raises:
        ValueError on invalid input or when no path with exactly ``budget`` computed steps exists.
    """
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    budget = check_budget(budget, n)
    rows, choice, w, kk = _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, budget)
    if not rows[budget][0] < float("inf"):
        raise _infeasible(budget, n, forced, max_skip, k_lo, k_hi)
    return _py_path(rows, choice, w, kk, n, budget)


def frontier_reference(costs, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                       k_range: tuple[int, int] | None = None) -> Frontier:
    """Pure-Python frontier: the optimum for every feasible budget B = 1..N in one DP (a :class:`Frontier`)."""
    import numpy as np

    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    rows, choice, w, kk = _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, n)
    objective = np.full(n + 1, np.inf)
    steps = np.full((n + 1, n), -1, dtype=np.int32)
    spans = np.full((n + 1, n), -1, dtype=np.int32)
    for b in range(1, n + 1):
        if rows[b][0] < float("inf"):
            r = _py_path(rows, choice, w, kk, n, b)
            objective[b] = r.objective
            steps[b, :b] = r.compute_steps
            spans[b, :b] = r.spans
    return _frontier(objective, steps, spans, n)


def solve_costs(costs, budget: int, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                k_range: tuple[int, int] | None = None, backend: str = "auto") -> SolverResult:
    """PSSP on a raw cost array: the C++ solver (``backend="cpp"``), the Python reference (``"python"``), or the
    C++ one when compiled and the Python one otherwise (``"auto"``). Same arguments as :func:`solve_reference`;
    both backends return identical results (objective bits included)."""
    ext = _ext.pick(backend)
    if ext is None:
        return solve_reference(costs, budget, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                               k_range=k_range)
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    budget = check_budget(budget, n)
    try:
        r = ext.solve(arr, budget, gamma, forced, max_skip, k_lo, k_hi)
    except ValueError as e:
        if str(e).startswith("infeasible"):  # same message as the Python reference
            raise _infeasible(budget, n, forced, max_skip, k_lo, k_hi) from None
        raise
    return SolverResult(r["steps"], r["ks"], r["objective"], n)


def frontier_costs(costs, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                   k_range: tuple[int, int] | None = None, backend: str = "auto") -> Frontier:
    """The optimum for every feasible budget in one DP (a :class:`Frontier`, ``frontier[B] -> SolverResult``);
    backends as in :func:`solve_costs`."""
    ext = _ext.pick(backend)
    if ext is None:
        return frontier_reference(costs, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                                  k_range=k_range)
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    objective, steps, spans = ext.frontier(arr, gamma, forced, max_skip, k_lo, k_hi)
    return _frontier(objective, steps, spans, arr.shape[1] - 1)
