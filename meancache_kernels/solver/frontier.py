"""Frontier: the optimum of every feasible budget from one dynamic programme, as a read-only mapping."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["Frontier"]


class Frontier(Mapping):
    """``frontier[B]``: the optimum with B computed steps (a :class:`~.paper.SolverResult` from the raw-cost solvers, a
    :class:`~meancache_kernels.Schedule` from :func:`~meancache_kernels.solve_frontier`), built on first access.

    A read-only mapping over the feasible budgets (ascending). ``objective`` is a float64 array [N+1] indexed by B
    (+inf for B = 0 and infeasible budgets).
    """

    __slots__ = ("objective", "num_steps", "_build", "_budgets", "_cache")

    def __init__(self, objective, build: Callable[[int], object], num_steps: int):
        self.objective = np.asarray(objective, dtype=np.float64)
        self.num_steps = int(num_steps)
        self._build = build
        self._budgets = (np.flatnonzero(self.objective[1:] < np.inf) + 1).tolist()
        self._cache: dict[int, object] = {}

    def __getitem__(self, budget: int):
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= self.num_steps:
            raise KeyError(budget)
        if not self.objective[budget] < np.inf:
            raise KeyError(budget)
        out = self._cache.get(budget)
        if out is None:
            out = self._cache[budget] = self._build(budget)
        return out

    def __iter__(self):
        return iter(self._budgets)

    def __len__(self) -> int:
        return len(self._budgets)

    def __repr__(self) -> str:
        if not self._budgets:
            return f"Frontier(N={self.num_steps}, no feasible budget)"
        return f"Frontier(N={self.num_steps}, feasible budgets {self._budgets[0]}..{self._budgets[-1]})"
