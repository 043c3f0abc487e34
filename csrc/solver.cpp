// Backward DP for the PSSP schedule problem; see solver.hpp for the problem and the tie-breaking rule.
#include "solver.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace meancache {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// c ** gamma exactly as the Python reference computes it: c * c for gamma = 2, c for gamma = 1 (exact and much
// faster than libm's pow), libm pow otherwise (Python's math.pow calls the same function).
inline double edge_term(double c, double gamma) {
  if (gamma == 2.0) return c * c;
  if (gamma == 1.0) return c;
  return std::pow(c, gamma);
}

// Edge table for lengths d = 1..dmax: w[i * (dmax + 1) + d] (inf when not allowed) and the K attaining it.
struct Edges {
  int dmax = 1;
  std::vector<double> w;
  std::vector<int> k;
  std::vector<int> next_forced;  // smallest forced step > i, or n
};

Edges build_edges(const Problem& p) {
  const int n = p.n;
  Edges e;
  e.dmax = static_cast<int>(std::min<long long>(static_cast<long long>(p.max_skip) + 1, n));
  const int stride = e.dmax + 1;
  e.w.assign(static_cast<size_t>(n) * stride, kInf);
  e.k.assign(static_cast<size_t>(n) * stride, 0);
  const size_t plane = static_cast<size_t>(n + 1) * (n + 1);
  // K outermost so every cost row is read contiguously; K ascending with a strict comparison keeps the smallest K
  // on ties. The inner loop is branch-free (it vectorises); NaN or negative entries among those read are flagged and
  // reported after the loop.
  bool bad = false;
  for (int kk = p.k_lo; kk <= p.k_hi; ++kk) {
    const double* base = p.costs + kk * plane;
    for (int i = 0; i < n; ++i) {
      const double* row = base + static_cast<size_t>(i) * (n + 1) + i;  // row[d] = costs[kk, i, i + d]
      double* wi = &e.w[static_cast<size_t>(i) * stride];
      int* ki = &e.k[static_cast<size_t>(i) * stride];
      const int dlast = std::min(n, i + e.dmax) - i;
      for (int d = 2; d <= dlast; ++d) {
        const double c = row[d];
        bad |= !(c >= 0.0);
        const bool better = c < wi[d];
        wi[d] = better ? c : wi[d];
        ki[d] = better ? kk : ki[d];
      }
    }
  }
  if (bad) {
    for (int kk = p.k_lo; kk <= p.k_hi; ++kk) {
      for (int i = 0; i < n; ++i) {
        for (int j = i + 2; j <= std::min(n, i + e.dmax); ++j) {
          const double c = p.costs[kk * plane + static_cast<size_t>(i) * (n + 1) + j];
          if (!(c >= 0.0)) {
            throw std::invalid_argument("costs must be >= 0 or +inf (no NaN); bad value " + std::to_string(c) +
                                        " at [K, i, j] = [" + std::to_string(kk) + ", " + std::to_string(i) + ", " +
                                        std::to_string(j) + "]");
          }
        }
      }
    }
  }
  for (int i = 0; i < n; ++i) {
    double* wi = &e.w[static_cast<size_t>(i) * stride];
    int* ki = &e.k[static_cast<size_t>(i) * stride];
    wi[1] = 0.0;  // chain edge
    ki[1] = 0;
    const int last = std::min(n, i + e.dmax);
    for (int d = 2; d <= last - i; ++d) {
      if (wi[d] < kInf) wi[d] = edge_term(wi[d], p.gamma);
    }
  }
  std::vector<char> is_forced(n, 0);
  for (int f : p.forced) is_forced[f] = 1;
  e.next_forced.assign(n, n);
  int nxt = n;
  for (int i = n - 1; i >= 0; --i) {
    e.next_forced[i] = nxt;
    if (is_forced[i]) nxt = i;
  }
  return e;
}

// Runs the DP for r = 1..r_max. Returns the F rows' value at node 0 for each r (index r) and fills `choice`
// (r_max + 1 rows of n entries; rows 0 and 1 unused).
std::vector<double> run_dp(const Problem& p, const Edges& e, int r_max, std::vector<int32_t>& choice) {
  const int n = p.n;
  const int stride = e.dmax + 1;
  std::vector<double> prev(n, kInf), cur(n, kInf);
  std::vector<double> at0(r_max + 1, kInf);
  choice.assign(static_cast<size_t>(r_max + 1) * n, -1);
  for (int i = 0; i < n; ++i) {
    const int d = n - i;
    if (d <= e.dmax && e.next_forced[i] == n) prev[i] = e.w[static_cast<size_t>(i) * stride + d];
  }
  at0[1] = prev[0];
  for (int r = 2; r <= r_max; ++r) {
    std::fill(cur.begin(), cur.end(), kInf);
    int32_t* ch = &choice[static_cast<size_t>(r) * n];
    for (int i = 0; i <= n - r; ++i) {
      const double* wi = &e.w[static_cast<size_t>(i) * stride];
      // j <= n - r + 1: the rest of the path needs r - 1 computed nodes in j..n-1 (F is +inf beyond anyway)
      const int hi = std::min(std::min(i + e.dmax, e.next_forced[i]), n - r + 1);
      double best = kInf;
      int arg = -1;
      for (int j = i + 1; j <= hi; ++j) {
        const double c = wi[j - i] + prev[j];
        if (c < best) {  // strict: the smallest next step wins ties
          best = c;
          arg = j;
        }
      }
      cur[i] = best;
      ch[i] = arg;
    }
    at0[r] = cur[0];
    std::swap(prev, cur);
  }
  return at0;
}

Solution path(const Problem& p, const Edges& e, const std::vector<int32_t>& choice, double objective, int budget) {
  const int n = p.n;
  const int stride = e.dmax + 1;
  Solution s;
  s.feasible = true;
  s.objective = objective;
  s.steps.reserve(budget);
  s.ks.reserve(budget);
  s.steps.push_back(0);
  int i = 0;
  for (int r = budget; r > 1; --r) {
    const int j = choice[static_cast<size_t>(r) * n + i];
    s.ks.push_back(e.k[static_cast<size_t>(i) * stride + (j - i)]);
    s.steps.push_back(j);
    i = j;
  }
  s.ks.push_back(e.k[static_cast<size_t>(i) * stride + (n - i)]);
  return s;
}

// One row of the DP's relaxation: best[b] = w[b] + pa and arg[b] = d where that sum is strictly smaller than
// best[b] (so the smallest d wins ties). Branch-free: the comparisons are data-dependent. GCC/Clang vector extensions
// process two lanes at once (the same IEEE add and compare as the scalar tail, so the result is identical).
inline void relax_row(const double* w, double pa, double d, double* best, double* arg, size_t len) {
  size_t b = 0;
#if defined(__GNUC__) || defined(__clang__)
  typedef double v2d __attribute__((vector_size(16)));
  const v2d pv = {pa, pa};
  const v2d dv = {d, d};
  for (; b + 2 <= len; b += 2) {
    v2d c, o, g;
    std::memcpy(&c, w + b, sizeof c);
    std::memcpy(&o, best + b, sizeof o);
    std::memcpy(&g, arg + b, sizeof g);
    c += pv;
    const auto m = c < o;
    o = m ? c : o;
    g = m ? dv : g;
    std::memcpy(best + b, &o, sizeof o);
    std::memcpy(arg + b, &g, sizeof g);
  }
#endif
  for (; b < len; ++b) {
    const double c = w[b] + pa;
    const bool m = c < best[b];
    best[b] = m ? c : best[b];
    arg[b] = m ? d : arg[b];
  }
}

}  // namespace

void validate(const Problem& p) {
  if (p.costs == nullptr) throw std::invalid_argument("costs must not be null");
  if (p.n < 1) throw std::invalid_argument("costs must have shape [K_max+1, N+1, N+1] with N >= 1");
  if (p.kmax < 1) throw std::invalid_argument("costs must have K_max >= 1 (shape[0] >= 2)");
  if (!(p.gamma > 0.0) || !std::isfinite(p.gamma)) {
    throw std::invalid_argument("gamma must be finite and > 0, got " + std::to_string(p.gamma));
  }
  if (p.max_skip < 0) throw std::invalid_argument("max_skip must be >= 0, got " + std::to_string(p.max_skip));
  if (!(1 <= p.k_lo && p.k_lo <= p.k_hi && p.k_hi <= p.kmax)) {
    throw std::invalid_argument("k_range must satisfy 1 <= k_lo <= k_hi <= K_max=" + std::to_string(p.kmax) +
                                ", got (" + std::to_string(p.k_lo) + ", " + std::to_string(p.k_hi) + ")");
  }
  for (int f : p.forced) {
    if (f < 0 || f >= p.n) {
      throw std::invalid_argument("forced step " + std::to_string(f) + " is out of range for N=" +
                                  std::to_string(p.n) + " (valid: 0.." + std::to_string(p.n - 1) + ")");
    }
  }
}

Solution solve(const Problem& p, int budget) {
  validate(p);
  if (budget < 1 || budget > p.n) {
    throw std::invalid_argument("budget must be in 1..N=" + std::to_string(p.n) + ", got " + std::to_string(budget));
  }
  const Edges e = build_edges(p);
  std::vector<int32_t> choice;
  const std::vector<double> at0 = run_dp(p, e, budget, choice);
  if (!(at0[budget] < kInf)) return Solution{};
  return path(p, e, choice, at0[budget], budget);
}

std::vector<Solution> frontier(const Problem& p) {
  validate(p);
  const Edges e = build_edges(p);
  std::vector<int32_t> choice;
  const std::vector<double> at0 = run_dp(p, e, p.n, choice);
  std::vector<Solution> out(p.n + 1);
  for (int b = 1; b <= p.n; ++b) {
    if (at0[b] < kInf) out[b] = path(p, e, choice, at0[b], b);
  }
  return out;
}

void validate_states(const StatesProblem& p) {
  if (p.w == nullptr) throw std::invalid_argument("w must not be null");
  if (p.n < 1) throw std::invalid_argument("w must have N >= 1 steps (shape[0] >= 1), got " + std::to_string(p.n));
  if (p.dmax < 1) {
    throw std::invalid_argument("w must have D >= 1 (shape [N, D+1, D+1, D+1] with D+1 >= 2), got D=" +
                                std::to_string(p.dmax));
  }
  if (p.r_max < 1 || p.r_max > p.n) {
    throw std::invalid_argument("r_max must be in 1..N=" + std::to_string(p.n) + ", got " + std::to_string(p.r_max));
  }
  for (int f : p.forced) {
    if (f < 0 || f >= p.n) {
      throw std::invalid_argument("forced step " + std::to_string(f) + " is out of range for N=" +
                                  std::to_string(p.n) + " (valid: 0.." + std::to_string(p.n - 1) + ")");
    }
  }
  const size_t d1 = static_cast<size_t>(p.dmax) + 1;
  const size_t total = static_cast<size_t>(p.n) * d1 * d1 * d1;
  bool bad = false;
  for (size_t k = 0; k < total; ++k) bad |= !(p.w[k] >= 0.0);  // branch-free; NaN fails the comparison
  if (!bad) return;
  for (size_t k = 0; k < total; ++k) {
    if (!(p.w[k] >= 0.0)) {
      const size_t d = k % d1, b = k / d1 % d1, a = k / (d1 * d1) % d1, i = k / (d1 * d1 * d1);
      throw std::invalid_argument("w must be >= 0 or +inf (no NaN); bad value " + std::to_string(p.w[k]) +
                                  " at [i, a, b, d] = [" + std::to_string(i) + ", " + std::to_string(a) + ", " +
                                  std::to_string(b) + ", " + std::to_string(d) + "]");
    }
  }
}

void frontier_states(const StatesProblem& p, double* objective, int32_t* choice) {
  validate_states(p);
  const int n = p.n;
  const int dmax = p.dmax;
  const size_t d1 = static_cast<size_t>(dmax) + 1;
  const size_t s2 = d1 * d1;  // one (a, b) plane
  // wt[i][d][a][b] = w[i][a][b][d]: each candidate edge (i, d) then reads one contiguous (a, b) plane.
  std::vector<double> wt(static_cast<size_t>(n) * d1 * s2);
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    for (size_t a = 0; a < d1; ++a) {
      for (size_t b = 0; b < d1; ++b) {
        const double* src = p.w + ((i * d1 + a) * d1 + b) * d1;
        for (size_t d = 0; d < d1; ++d) wt[(i * d1 + d) * s2 + a * d1 + b] = src[d];
      }
    }
  }
  std::vector<char> is_forced(n, 0);
  for (int f : p.forced) is_forced[f] = 1;
  std::vector<int> next_forced(n, n);  // smallest forced step > i, or n
  for (int i = n - 1, nxt = n; i >= 0; --i) {
    next_forced[i] = nxt;
    if (is_forced[i]) nxt = i;
  }

  // F[r - 1] and F[r] over (i, a, b); node N is never a source (j <= N - r + 1 < N for r >= 2).
  std::vector<double> prev(static_cast<size_t>(n) * s2, kInf), cur(static_cast<size_t>(n) * s2, kInf);
  std::vector<double> arg(s2);  // the chosen d of one node as doubles: the blend below runs in double lanes
  const size_t row = static_cast<size_t>(n) * s2;  // one r of the choice table
  std::fill(choice, choice + static_cast<size_t>(p.r_max + 1) * row, 0);
  std::fill(objective, objective + p.r_max + 1, kInf);
  for (int i = 0; i < n; ++i) {
    const int d = n - i;
    if (d <= dmax && next_forced[i] == n) {
      std::copy_n(&wt[(static_cast<size_t>(i) * d1 + d) * s2], s2, &prev[static_cast<size_t>(i) * s2]);
      std::fill_n(choice + row + static_cast<size_t>(i) * s2, s2, d);
    }
  }
  objective[1] = prev[0];
  for (int r = 2; r <= p.r_max; ++r) {
    std::fill(cur.begin(), cur.end(), kInf);
    for (int i = 0; i <= n - r; ++i) {
      double* best = &cur[static_cast<size_t>(i) * s2];
      std::fill(arg.begin(), arg.end(), 0.0);
      // j <= N - r + 1: the rest of the path needs r - 1 computed nodes in j..N-1
      const int hi = std::min(std::min(i + dmax, next_forced[i]), n - r + 1);
      for (int j = i + 1; j <= hi; ++j) {
        const int d = j - i;
        const double* wd = &wt[(static_cast<size_t>(i) * d1 + d) * s2];
        const double* pj = &prev[(static_cast<size_t>(j) * d1 + d) * d1];  // F[r-1][j][d][a] over a
        for (size_t a = 0; a < d1; ++a) {
          const double pa = pj[a];
          if (!(pa < kInf)) continue;  // w + inf = inf never beats best (w has no NaN or -inf)
          relax_row(wd + a * d1, pa, static_cast<double>(d), best + a * d1, arg.data() + a * d1, d1);
        }
      }
      int32_t* out = choice + static_cast<size_t>(r) * row + static_cast<size_t>(i) * s2;
      for (size_t k = 0; k < s2; ++k) out[k] = static_cast<int32_t>(arg[k]);
    }
    objective[r] = cur[0];
    std::swap(prev, cur);
  }
}

}  // namespace meancache
