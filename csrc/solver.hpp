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

}  // namespace meancache
