"""PSSP on a calibration :class:`~meancache_kernels.Profile`: :func:`solve` (one budget) and :func:`solve_frontier`
(every budget from one DP), returning :class:`~meancache_kernels.Schedule` objects.

``estimators=("jvp",)`` runs the paper's solver (:mod:`.paper`, one K per edge); any polynomial estimator runs the
per-edge DP whose state carries the previous computed nodes (:mod:`.states`).
"""

from __future__ import annotations

import numpy as np

from ..checks import check_budget, check_estimator_names
from ..profile import Profile
from ..schedule import Schedule
from . import _ext
from .frontier import Frontier
from .paper import SolverResult, _check_solver_args, frontier_costs, solve_costs
from .states import TABLE_BACKENDS, edge_table, frontier_profile, solve_profile

__all__ = ["EDGE_COSTS", "solve", "solve_frontier", "state_costs"]


def _profile_parts(profile):
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    return profile.costs, dict(profile.meta or {})


def _solver_meta(result: SolverResult, gamma, always_compute, max_skip, k_range, solver: str, pmeta: dict,
                 edge_cost: str = "velocity") -> dict:
    meta = {
        "source": "pssp",
        "edge_cost": edge_cost,
        "solver": solver,
        "objective": result.objective,
        "gamma": float(gamma),
        "always_compute": sorted({0, *[int(x) for x in (always_compute or ())]}),
        "max_skip": max_skip,
        "k_range": list(k_range) if k_range is not None else None,
        "estimators": ["jvp"],
    }
    for key in ("model", "resolution", "dtype", "estimator", "num_samples"):
        if key in pmeta:
            meta[f"profile_{key}"] = pmeta[key]
    return meta


EDGE_COSTS = ("velocity", "state")


def _estimator_names(profile, estimators) -> tuple[str, ...]:
    have = profile.estimators
    if estimators is None:  # the polynomial estimators when calibrated: see solve()'s docstring for why not jvp
        return profile.poly_estimators or ("jvp",)
    if estimators == "all":
        return have
    estimators = check_estimator_names(estimators)
    for name in estimators:
        if name not in have:
            raise ValueError(f"estimators: the profile has no costs for {name!r}; it has {list(have)} (calibrate "
                             "with that estimator, e.g. mck.calibrate(..., estimators=None) for all)")
    return estimators


def _k_bounds(profile, k_range) -> tuple[int, int]:
    if k_range is None:
        return 1, profile.k_max
    _check_solver_args(profile.costs, 2.0, (0,), None, k_range)  # the same validation as the paper's solver
    return int(k_range[0]), int(k_range[1])


def _edge_cost(edge_cost, names) -> str:
    if edge_cost is None:
        return "velocity" if names == ("jvp",) else "state"
    if edge_cost not in EDGE_COSTS:
        raise ValueError(f"edge_cost must be one of {EDGE_COSTS} or None, got {edge_cost!r}")
    return edge_cost


def state_costs(costs, sigmas):
    """``costs[K, i, j] * (s_i - s_j)``: the paper's average-velocity error turned into the state error
    ``mean |zhat_j - z_j|`` of the edge (finite entries only; +inf stays +inf)."""
    s = np.asarray(sigmas, dtype=np.float64)
    arr = np.array(costs, dtype=np.float64, copy=True)
    scale = np.abs(s[:, None] - s[None, :])[None]
    np.multiply(arr, np.broadcast_to(scale, arr.shape), out=arr, where=np.isfinite(arr))
    return arr


def _states_args(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost):
    """(None, edge_cost) for jvp only (the paper's solver), else ((table arguments, forced, meta), edge_cost); the
    table arguments are those of :func:`.states.edge_table` (profile, gamma, names, k_lo, k_hi, max_skip)."""
    names = _estimator_names(profile, estimators)
    edge_cost = _edge_cost(edge_cost, names)
    if names == ("jvp",):
        return None, edge_cost
    _, gamma, forced, max_skip_checked, _, _ = _check_solver_args(profile.costs, gamma, always_compute,
                                                                  profile.max_skip if max_skip is None else max_skip,
                                                                  None)
    k_lo, k_hi = _k_bounds(profile, k_range)
    meta = {
        "source": "pssp",
        "edge_cost": edge_cost,
        "gamma": float(gamma),
        "always_compute": sorted({0, *forced}),
        "max_skip": max_skip_checked,
        "k_range": list(k_range) if k_range is not None else None,
        "estimators": list(names),
    }
    for key in ("model", "resolution", "dtype", "num_samples"):
        if key in (profile.meta or {}):
            meta[f"profile_{key}"] = profile.meta[key]
    return ((profile, gamma, names, k_lo, k_hi, max_skip_checked), forced, meta), edge_cost


def _states_setup(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost):
    """:func:`_states_args` with the numpy :func:`.states.edge_table` built: ((table, forced, meta), edge_cost)."""
    setup, edge_cost = _states_args(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost)
    if setup is None:
        return None, edge_cost
    args, forced, meta = setup
    return (edge_table(*args, edge_cost=edge_cost), forced, meta), edge_cost


def _check_table_backend(table_backend: str) -> None:
    if table_backend not in TABLE_BACKENDS:
        raise ValueError(f"table_backend must be one of {TABLE_BACKENDS}, got {table_backend!r}")


def solve(profile, budget: int, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
          k_range: tuple[int, int] | None = None, backend: str = "auto", estimators=None,
          edge_cost: str | None = None) -> Schedule:
    """The optimal MeanCache schedule with ``budget`` computed steps for a calibration :class:`Profile`.

    Minimises ``sum over edges (min over candidates of the edge cost) ** gamma`` over paths 0 -> N with exactly
    ``budget`` computed steps (docs/design.md sections 2 and 2b, PSSP), exactly, with the C++ solver (or the Python
    reference when the extension is missing or ``backend="python"``). The candidates of an edge are the paper's
    ``jvp`` with every allowed K and each selected polynomial estimator (:mod:`meancache_kernels.estimators`),
    whose cost depends on the computed nodes before the edge (:mod:`meancache_kernels.solver`).

    Args:
        profile: the calibration profile (edge costs of N steps).
        budget: B, number of computed steps, 1..N.
        gamma: exponent > 0; gamma > 1 penalises single large-error edges.
        always_compute: steps forced to be computed (step 0 always is).
        max_skip: longest run of consecutive skipped steps; None: as calibrated (``profile.max_skip``).
        k_range: ``(k_lo, k_hi)``, the allowed JVP spans; None: every calibrated span.
        backend: ``"auto"``, ``"cpp"`` or ``"python"``.
        estimators: the estimator names allowed on skipped steps. ``("jvp",)``: the paper's PSSP exactly (the
            schedule it has always given). ``"all"``: every estimator the profile has. None (default): the
            polynomial estimators the profile has (``profile.poly_estimators``; ``("jvp",)`` for a profile without
            them). jvp is left out by default because its calibrated cost is measured with the true full-step
            history before the edge, which a schedule that skips steps does not have: mixed in, its edges look
            cheaper than they run (measured in bench/RESULTS.md, "Estimators"). The polynomial estimators read only
            computed velocities, whose history the DP state carries exactly.
        edge_cost: ``"velocity"``: the paper's edge cost L (the mean error of the average velocity over the edge);
            ``"state"``: L * (s_i - s_j), the mean error of the state at the edge's end, which adds up along a path
            as the final error does. None: ``"velocity"`` for ``estimators=("jvp",)`` (the paper), ``"state"``
            otherwise (lower final error on the analytic flows and the shipped model at most budgets; bench/RESULTS.md).

    Returns:
        The :class:`Schedule`; its ``meta`` records objective, gamma, solver, estimators and the constraints.
    """
    return _solve(profile, budget, gamma, always_compute, max_skip, k_range, backend, estimators, edge_cost)


def _solve(profile, budget, gamma=2.0, always_compute=(0,), max_skip=None, k_range=None, backend="auto",
           estimators=None, edge_cost=None, table_backend: str = "auto") -> Schedule:
    """:func:`solve`; ``table_backend`` picks how the per-edge DP's table is built (:func:`.states.solve_profile`:
    ``"auto"`` in C++ with the DP when the extension can, ``"numpy"`` the numpy table); the same schedule either
    way, kept callable for the benchmarks and tests."""
    _check_table_backend(table_backend)
    costs, pmeta = _profile_parts(profile)
    setup, edge_cost = _states_args(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost)
    if setup is not None:
        args, forced, meta = setup
        _ext.pick(backend)
        return solve_profile(*args, check_budget(budget, profile.num_steps), forced, meta, edge_cost=edge_cost,
                             backend=backend, table_backend=table_backend)
    if edge_cost == "state":
        costs = state_costs(costs, profile.sigmas)
    if max_skip is None:
        max_skip = profile.max_skip  # as calibrated (longer edges are +inf anyway)
    ext = _ext.pick(backend)
    solver = "python" if ext is None else "cpp"
    res = solve_costs(costs, budget, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                      k_range=k_range, backend=solver)
    return res.to_schedule(_solver_meta(res, gamma, always_compute, max_skip, k_range, solver, pmeta, edge_cost))


def solve_frontier(profile, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                   k_range: tuple[int, int] | None = None, backend: str = "auto", estimators=None,
                   edge_cost: str | None = None):
    """:func:`solve` for every feasible budget at once (one DP): a read-only mapping ``{B: Schedule}``, objective in
    each ``meta``; each Schedule is built on first access."""
    return _solve_frontier(profile, gamma, always_compute, max_skip, k_range, backend, estimators, edge_cost)


def _solve_frontier(profile, gamma=2.0, always_compute=(0,), max_skip=None, k_range=None, backend="auto",
                    estimators=None, edge_cost=None, table_backend: str = "auto"):
    """:func:`solve_frontier` with ``table_backend`` as :func:`_solve`."""
    _check_table_backend(table_backend)
    costs, pmeta = _profile_parts(profile)
    setup, edge_cost = _states_args(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost)
    if setup is not None:
        args, forced, meta = setup
        _ext.pick(backend)
        return frontier_profile(*args, forced, meta, edge_cost=edge_cost, backend=backend,
                                table_backend=table_backend)
    if edge_cost == "state":
        costs = state_costs(costs, profile.sigmas)
    if max_skip is None:
        max_skip = profile.max_skip  # as calibrated (longer edges are +inf anyway)
    ext = _ext.pick(backend)
    solver = "python" if ext is None else "cpp"
    res = frontier_costs(costs, gamma=gamma, always_compute=always_compute, max_skip=max_skip, k_range=k_range,
                         backend=solver)
    return Frontier(res.objective, lambda b: (r := res[b]).to_schedule(
        _solver_meta(r, gamma, always_compute, max_skip, k_range, solver, pmeta, edge_cost)), res.num_steps)
