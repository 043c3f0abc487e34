// PSSP schedule solver: exact dynamic programme over (computed count, node) for MeanCache schedules.
//
// Nodes 0..N; a schedule with budget B is a path 0 = p_0 < ... < p_{B-1} < p_B = N (p_0..p_{B-1} are computed).
// Edge i -> j costs 0 when j = i + 1 (chain) and otherwise (min over K in [k_lo, k_hi] of L_K(i, j)) ** gamma,
// allowed when j - i - 1 <= max_skip and that minimum is finite. Forced steps must lie on the path.
// The objective is accumulated from the last edge back to the first. Ties: smallest K per edge; between paths
// the key (T_0, p_1, T_1, p_2, ...) in lexicographic order (T_k: objective of the rest of the path from p_k),
// i.e. the lexicographically smallest computed-step list among the optimal ones when arithmetic is exact.
// The Python reference (meancache_kernels/schedule.py) implements the same rule with the same float operations.
#pragma once

#include <cstdint>
#include <vector>

namespace meancache {

struct Problem {
  const double* costs = nullptr;  // [kmax + 1, n + 1, n + 1], row-major
  int kmax = 0;                   // largest K of the cost array
  int n = 0;                      // number of steps N
  double gamma = 2.0;
  std::vector<int> forced;  // steps that must be computed (any order, duplicates allowed)
  int max_skip = 0;
  int k_lo = 1;
  int k_hi = 1;
};

struct Solution {
  bool feasible = false;
  std::vector<int> steps;  // computed steps (B values, first is 0)
  std::vector<int> ks;     // K per edge (B values; 0 on chain edges)
  double objective = 0.0;
};

// Throws std::invalid_argument on invalid input (bad shapes, out-of-range arguments). NaN or negative costs are
// reported by solve/frontier for the entries they read (edges within max_skip, K in [k_lo, k_hi]).
void validate(const Problem& p);

// Optimum with exactly `budget` computed steps; Solution::feasible is false when no such path exists.
Solution solve(const Problem& p, int budget);

// Optimum for every budget B = 0..N (index B; entry 0 and infeasible budgets have feasible = false), one DP.
std::vector<Solution> frontier(const Problem& p);

// ---------------------------------------------------------------------------------------------------------------
// Estimator-aware PSSP (DESIGN.md 2b): the backward DP over (computed count r, node i, a, b) on a precomputed edge
// table w[i, a, b, d] (a = i - h, b = h - h2 for the computed nodes h, h2 before i; d = the edge length). The Python
// oracle is meancache_kernels/solver.py::dp_reference; this one matches it bit for bit (same loops, same scan
// order, one add per candidate, replace only on a strictly smaller value):
//
//   F[1][i][a][b] = w[i, a, b, N - i]                  (N - i <= D and no forced step after i; else +inf)
//   F[r][i][a][b] = min over d = 1.. of w[i, a, b, d] + F[r-1][i+d][d][a]
//                   for i <= N - r, i + d <= min(i + D, next forced step after i, N - r + 1), d ascending.
struct StatesProblem {
  const double* w = nullptr;  // [n, dmax + 1, dmax + 1, dmax + 1], row-major: w[i, a, b, d]
  int n = 0;                  // number of steps N
  int dmax = 0;               // longest edge D
  std::vector<int> forced;    // steps that must be computed (any order, duplicates allowed)
  int r_max = 0;              // largest budget solved
};

// Throws std::invalid_argument naming the argument: n >= 1, dmax >= 1, 1 <= r_max <= n, forced in 0..n-1, every
// entry of w >= 0 or +inf (no NaN).
void validate_states(const StatesProblem& p);

// Runs the DP for r = 1..r_max. Writes objective[r] = F[r][0][0][0] (r_max + 1 values; +inf where infeasible and
// at r = 0) and choice[r, i, a, b] = the chosen d (int32 [r_max + 1, n, dmax + 1, dmax + 1]; 0 where none; row 1
// holds N - i wherever N - i <= D and no forced step follows i, even where w is +inf, as the oracle). Memory beyond
// the outputs: O(n * dmax^3).
void frontier_states(const StatesProblem& p, double* objective, int32_t* choice);

}  // namespace meancache
