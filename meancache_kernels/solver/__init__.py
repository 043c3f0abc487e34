"""The PSSP solver (docs/design.md sections 2 and 2b): which steps to compute, chosen by a budget-constrained,
peak-suppressed shortest path over calibrated edge costs.

- :mod:`.pssp`: :func:`solve` / :func:`solve_frontier` on a :class:`~meancache_kernels.Profile` (the public face);
- :mod:`.paper`: the paper's DP on a raw cost array ``L_K(i, j)`` (C++ with a Python oracle);
- :mod:`.states`: the per-edge DP over (estimator, parameter) whose state carries the previous computed nodes;
- :mod:`.frontier`: :class:`Frontier`, every budget's optimum from one DP;
- :mod:`._ext`: the one loader of the compiled extension ``meancache_kernels._C``.
"""

from .frontier import Frontier
from .paper import SolverResult, frontier_costs, frontier_reference, solve_costs, solve_reference
from .pssp import EDGE_COSTS, solve, solve_frontier, state_costs
from .states import EdgeTable, dp_reference, edge_table, frontier_states, solve_states

__all__ = [
    "EDGE_COSTS",
    "EdgeTable",
    "Frontier",
    "SolverResult",
    "dp_reference",
    "edge_table",
    "frontier_costs",
    "frontier_reference",
    "frontier_states",
    "solve",
    "solve_costs",
    "solve_frontier",
    "solve_reference",
    "solve_states",
    "state_costs",
]
