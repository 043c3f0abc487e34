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

#include <cstddef>
#include <cstdint>
#include <functional>
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
// Estimator-aware PSSP (docs/design.md 2b): the backward DP over (computed count r, node i, a, b) on a precomputed edge
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

// ---------------------------------------------------------------------------------------------------------------
// The estimator-aware edge table built from a profile's raw costs (states.cpp): the C++ twin of the numpy oracle
// meancache_kernels/solver/states.py::edge_table, bit for bit (same candidates, same float operations, the first
// minimum on ties and the first NaN when any candidate is NaN, as numpy.argmin). With d_lim = max(1, min(max_skip + 1,
// N)) the longest edge is D = d_lim when jvp is selected, else min(d_lim, dpoly):
//
//   jvp:  t_K(i, d) = (L_K(i, i + d) [* (s_i - s_{i+d})]) ** gamma   for K = k_lo..k_hi, 2 <= d <= D, i + d <= N
//   poly: t_e(i, a, b, d) = (L_e(i, a, b, d) [* (s_i - s_{min(i+d, N)}) where finite]) ** gamma,  a, b, d <= dpoly
//   w[i, a, b, d] = min over K of t_K, replaced by the min over e of t_e where that is strictly smaller;
//   w[..., 0] = +inf, w[..., 1] = 0 (chain edges); code = 0 there and where no candidate is finite, else 1 + the
//   index of the winner in [jvp K = k_lo..k_hi, then the selected polynomial estimators in poly_index order].
struct StatesTableSpec {
  const double* costs = nullptr;   // [kmax + 1, n + 1, n + 1], row-major
  int kmax = 0;                    // largest K of costs
  int n = 0;                       // number of steps N
  const double* sigmas = nullptr;  // [n + 1]
  const double* poly = nullptr;    // [num_poly, n, dpoly + 1, dpoly + 1, dpoly + 1]; may be null when unused
  int num_poly = 0;
  int dpoly = 0;
  std::vector<int> poly_index;  // the selected polynomial estimators (indices into poly), in candidate order
  bool use_jvp = false;         // jvp with K in k_lo..k_hi among the candidates
  int k_lo = 1;
  int k_hi = 1;
  int max_skip = 0;
  bool state_cost = false;  // edge_cost "state": scale every cost of edge i -> j by (s_i - s_j) before the power
  double gamma = 2.0;
  // c ** gamma in place over a buffer, used for gamma other than 1 and 2 (c * c and c are exact); empty: std::pow.
  // The Python binding passes numpy.power, whose rounding differs from libm's on some machines (SIMD pow).
  std::function<void(double*, size_t)> power;
};

// Throws std::invalid_argument naming the argument (shapes, k range, indices, gamma, max_skip).
void validate_states_table(const StatesTableSpec& s);

// The longest edge D of the table.
int states_table_dmax(const StatesTableSpec& s);

// Fills w (float64) and code (int32), both [n, D+1, D+1, D+1] row-major. No check of the values (as the oracle).
void build_states_table(const StatesTableSpec& s, double* w, int32_t* code);

// The table and the DP (frontier_states' recurrence and tie rule) in one call, over the states (a, b) reachable
// from node 0 only (every state a reachable state leads to is reachable, so their values are the same bits).
// Raises like validate_states on a bad table value. Writes objective[r] for r = 0..r_max (+inf where infeasible
// and at r = 0) and, for each feasible r, steps[r, :r] (the computed steps, from 0) and codes[r, :r] (the code of
// each edge, as in the table); the rest of steps and codes ([r_max + 1, n] int32 each) is -1.
void frontier_profile(const StatesTableSpec& s, const std::vector<int>& forced, int r_max, double* objective,
                      int32_t* steps, int32_t* codes);

}  // namespace meancache
