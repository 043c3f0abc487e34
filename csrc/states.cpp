// The estimator-aware PSSP straight from a profile's raw costs (docs/design.md 2b): the edge table of
// meancache_kernels/solver/states.py::edge_table rebuilt in C++ bit for bit, and a DP over the reachable states only
// (the recurrence and tie rule of frontier_states in solver.cpp) that returns every budget's path. See solver.hpp.
//
// Bit-identity: every value goes through the oracle's operations one by one (one multiplication by the sigma gap,
// then c * c, c, or numpy.power; strict comparisons; w + F then a strict comparison in the DP). SIMD lanes run the
// same IEEE operations as scalar code, and no multiply-add is ever fused (the vector code is compiled for AVX2 /
// AVX-512F without FMA, and the only addition, w + F, adds two values loaded from memory).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "solver.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define MEANCACHE_VEC 1
#define MEANCACHE_INLINE __attribute__((always_inline)) inline
#else
#define MEANCACHE_INLINE inline
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MEANCACHE_X86_DISPATCH 1
#endif

namespace meancache {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// numpy.argmin's rule on one more candidate: keep the first NaN once there is one, else take v when strictly
// smaller (the first minimum on ties). `!(v >= best)` is true for v < best and for a NaN v.
inline bool takes(double v, double best) { return best == best && !(v >= best); }

inline bool finite(double v) { return v - v == 0.0; }  // false for +-inf and NaN

#ifdef MEANCACHE_VEC
template <int W>
struct Lanes;  // W doubles as one GCC/Clang vector (vector_size cannot depend on a template parameter directly)
template <>
struct Lanes<2> {
  typedef double type __attribute__((vector_size(16)));
};
template <>
struct Lanes<4> {
  typedef double type __attribute__((vector_size(32)));
};
template <>
struct Lanes<8> {
  typedef double type __attribute__((vector_size(64)));
};
template <int W>
struct IntLanes;  // W int32 values
template <>
struct IntLanes<2> {
  typedef int32_t type __attribute__((vector_size(8)));
};
template <>
struct IntLanes<4> {
  typedef int32_t type __attribute__((vector_size(16)));
};
template <>
struct IntLanes<8> {
  typedef int32_t type __attribute__((vector_size(32)));
};
template <int W>
struct ByteLanes;  // W uint8 values
template <>
struct ByteLanes<2> {
  typedef uint8_t type __attribute__((vector_size(2)));
};
template <>
struct ByteLanes<4> {
  typedef uint8_t type __attribute__((vector_size(4)));
};
template <>
struct ByteLanes<8> {
  typedef uint8_t type __attribute__((vector_size(8)));
};

// W int32 in [0, 255] stored as W bytes. GCC's generic int32 -> uint8 conversion goes lane by lane; a byte shuffle of
// the little-endian int32 lanes is one vpshufb (AVX2) or two (AVX-512F).
template <int W>
struct Narrow {
  static MEANCACHE_INLINE void store(const typename IntLanes<W>::type& q, uint8_t* out) {
    const typename ByteLanes<W>::type b = __builtin_convertvector(q, typename ByteLanes<W>::type);
    std::memcpy(out, &b, sizeof b);
  }
};
#if defined(__GNUC__) && !defined(__clang__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
template <>
struct Narrow<4> {
  typedef uint8_t B __attribute__((vector_size(16)));
  static MEANCACHE_INLINE void store(const IntLanes<4>::type& q, uint8_t* out) {
    B b;
    std::memcpy(&b, &q, sizeof b);
    const B r = __builtin_shuffle(b, B{0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    std::memcpy(out, &r, 4);
  }
};
template <>
struct Narrow<8> {
  typedef uint8_t B __attribute__((vector_size(32)));
  static MEANCACHE_INLINE void store(const IntLanes<8>::type& q, uint8_t* out) {
    B b;
    std::memcpy(&b, &q, sizeof b);
    const B r = __builtin_shuffle(b, B{0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 0,  0,  0,  0,  0, 0, 0, 0, 0, 0, 0, 0});
    std::memcpy(out, &r, 8);
  }
};
#endif

#endif

// Elementwise kernels over m contiguous doubles: W lanes at a time, then a scalar tail doing the same operations.

// out = src * sc where src is finite, else src (numpy.multiply(..., where=isfinite))
template <int W>
MEANCACHE_INLINE void v_scale(double* out, const double* src, const double* sc, size_t m) {
  size_t k = 0;
#ifdef MEANCACHE_VEC
  typedef typename Lanes<W>::type V;
  for (; k + W <= m; k += W) {
    V x, f;
    std::memcpy(&x, src + k, sizeof x);
    std::memcpy(&f, sc + k, sizeof f);
    const V y = x * f;
    x = (x - x) == 0.0 ? y : x;
    std::memcpy(out + k, &x, sizeof x);
  }
#endif
  for (; k < m; ++k) out[k] = finite(src[k]) ? src[k] * sc[k] : src[k];
}

template <int W>
MEANCACHE_INLINE void v_square(double* p, size_t m) {
  size_t k = 0;
#ifdef MEANCACHE_VEC
  typedef typename Lanes<W>::type V;
  for (; k + W <= m; k += W) {
    V x;
    std::memcpy(&x, p + k, sizeof x);
    x = x * x;
    std::memcpy(p + k, &x, sizeof x);
  }
#endif
  for (; k < m; ++k) p[k] = p[k] * p[k];
}

// best, arg <- candidate e (values t) where t < best; returns whether t holds a NaN. Without NaN this is takes()
// (the caller redoes a plane with NaN in scalar code): GCC scalarises the vector code of takes() itself.
template <int W>
MEANCACHE_INLINE bool v_argmin_step(const double* t, double e, double* best, double* arg, size_t m) {
  size_t k = 0;
  bool nan = false;
#ifdef MEANCACHE_VEC
  typedef typename Lanes<W>::type V;
  const V ev = e - V{};  // e in every lane
  V acc = {};
  for (; k + W <= m; k += W) {
    V v, b, g;
    std::memcpy(&v, t + k, sizeof v);
    std::memcpy(&b, best + k, sizeof b);
    std::memcpy(&g, arg + k, sizeof g);
    const auto take = v < b;
    b = take ? v : b;
    g = take ? ev : g;
    const auto num = v == v;
    acc = num ? acc : v;  // a NaN lane stays NaN
    std::memcpy(best + k, &b, sizeof b);
    std::memcpy(arg + k, &g, sizeof g);
  }
  for (int l = 0; l < W; ++l) nan |= acc[l] != acc[l];
#endif
  for (; k < m; ++k) {
    nan |= t[k] != t[k];
    const bool take = t[k] < best[k];
    best[k] = take ? t[k] : best[k];
    arg[k] = take ? e : arg[k];
  }
  return nan;
}

// where best < w: w = best and code = arg + off (arg holds small non-negative integers as doubles)
template <int W>
MEANCACHE_INLINE void v_merge(const double* best, const double* arg, int32_t off, double* w, int32_t* code,
                              size_t m) {
  size_t k = 0;
#ifdef MEANCACHE_VEC
  typedef typename Lanes<W>::type V;
  typedef typename IntLanes<W>::type VI;
  const VI offv = off - VI{};
  for (; k + W <= m; k += W) {
    V b, x, g;
    VI c;
    std::memcpy(&b, best + k, sizeof b);
    std::memcpy(&x, w + k, sizeof x);
    std::memcpy(&g, arg + k, sizeof g);
    std::memcpy(&c, code + k, sizeof c);
    const auto m2 = b < x;
    x = m2 ? b : x;
    const VI m4 = __builtin_convertvector(m2, VI);
    c = m4 ? __builtin_convertvector(g, VI) + offv : c;
    std::memcpy(w + k, &x, sizeof x);
    std::memcpy(code + k, &c, sizeof c);
  }
#endif
  for (; k < m; ++k) {
    const bool m2 = best[k] < w[k];
    w[k] = m2 ? best[k] : w[k];
    code[k] = m2 ? static_cast<int32_t>(arg[k]) + off : code[k];
  }
}

// c ** gamma: c * c (gamma = 2), c (gamma = 1), else the callback (numpy.power) or std::pow
enum class PowerKind { kSquare, kIdentity, kCallback, kLibm };

PowerKind power_kind(const StatesTableSpec& s) {
  if (s.gamma == 2.0) return PowerKind::kSquare;
  if (s.gamma == 1.0) return PowerKind::kIdentity;
  return s.power ? PowerKind::kCallback : PowerKind::kLibm;
}

// c ** gamma in place, scalar (the jvp part) or through the callback
void apply_power(const StatesTableSpec& s, double* p, size_t m) {
  switch (power_kind(s)) {
    case PowerKind::kSquare:
      for (size_t k = 0; k < m; ++k) p[k] = p[k] * p[k];
      break;
    case PowerKind::kIdentity:
      break;
    case PowerKind::kCallback:
      s.power(p, m);
      break;
    case PowerKind::kLibm:
      for (size_t k = 0; k < m; ++k) p[k] = std::pow(p[k], s.gamma);
      break;
  }
}

// Lanes of the vector kernels: 8 with AVX-512F, 4 with AVX2, else 2 (SSE2 or generic). MEANCACHE_SIMD_WIDTH=2 or 4
// caps it (the tests run every kernel this machine has; they give the same bits).
int simd_width() {
  int width = 2;
#ifdef MEANCACHE_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    width = 8;
  } else if (__builtin_cpu_supports("avx2")) {
    width = 4;
  }
#endif
  if (const char* cap = std::getenv("MEANCACHE_SIMD_WIDTH")) {
    const int c = std::atoi(cap);
    if (c == 2 || c == 4 || c == 8) width = std::min(width, c);
  }
  return width;
}

}  // namespace

int states_table_dmax(const StatesTableSpec& s) {
  const int d_poly = s.poly_index.empty() ? 1 : s.dpoly;
  const long long lim = std::min<long long>(static_cast<long long>(s.max_skip) + 1, s.n);
  const int d_lim = static_cast<int>(std::max<long long>(1, lim));
  return s.use_jvp ? d_lim : std::min(d_lim, d_poly);
}

void validate_states_table(const StatesTableSpec& s) {
  if (s.costs == nullptr || s.sigmas == nullptr) throw std::invalid_argument("costs and sigmas must not be null");
  if (s.n < 1) throw std::invalid_argument("costs must have shape [K_max+1, N+1, N+1] with N >= 1");
  if (s.kmax < 1) throw std::invalid_argument("costs must have K_max >= 1 (shape[0] >= 2)");
  if (s.use_jvp && !(1 <= s.k_lo && s.k_lo <= s.k_hi && s.k_hi <= s.kmax)) {
    throw std::invalid_argument("k_range must satisfy 1 <= k_lo <= k_hi <= K_max=" + std::to_string(s.kmax) +
                                ", got (" + std::to_string(s.k_lo) + ", " + std::to_string(s.k_hi) + ")");
  }
  if (s.max_skip < 0) throw std::invalid_argument("max_skip must be >= 0, got " + std::to_string(s.max_skip));
  if (!(s.gamma > 0.0) || !std::isfinite(s.gamma)) {
    throw std::invalid_argument("gamma must be finite and > 0, got " + std::to_string(s.gamma));
  }
  if (!s.poly_index.empty()) {
    if (s.poly == nullptr || s.num_poly < 1 || s.dpoly < 1) {
      throw std::invalid_argument("poly_costs must have shape [E, N, D+1, D+1, D+1] with E >= 1 and D >= 1");
    }
    for (int e : s.poly_index) {
      if (e < 0 || e >= s.num_poly) {
        throw std::invalid_argument("poly_index " + std::to_string(e) + " is out of range for " +
                                    std::to_string(s.num_poly) + " polynomial cost tables");
      }
    }
  }
}

namespace {

// Scratch memory of one thread, reused across calls (the fresh pages of a few MiB per call cost about as much as the
// DP); grow-only, dropped after a call that needed more than kKeepBytes.
struct Workspace {
  std::vector<double> w2, jt, planes, poly_buf, wplane, wt, prev, cur;
  std::vector<int32_t> c2, code;
  std::vector<uint8_t> choice8;
  std::vector<int32_t> choice32;
  std::vector<int> next_forced;
  size_t bytes() const {
    size_t b = 0;
    for (const auto* v : {&w2, &jt, &planes, &poly_buf, &wplane, &wt, &prev, &cur}) b += v->capacity() * 8;
    for (const auto* v : {&c2, &code, &choice32}) b += v->capacity() * 4;
    return b + choice8.capacity() + next_forced.capacity() * sizeof(int);
  }
};
constexpr size_t kKeepBytes = size_t(64) << 20;

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// The polynomial part of the table, one (i, a) plane [b][d] at a time.
struct PolyPlanes {
  const StatesTableSpec* s;
  int n, ne, dd;
  size_t d1, q1, e1, P;  // table stride, source stride, plane side dd + 1, plane size
  bool src_flat, callback;
  PowerKind pk;
  double* sc;    // [P] the sigma gap of each (b, d) (the same for every b)
  double* best;  // [P]
  double* arg;   // [P]
};

// the scaled (and, unless through the callback, powered) candidate planes [e][b][d] of (i, a)
template <int W>
MEANCACHE_INLINE void poly_fill(const PolyPlanes& c, int i, int a, double* t) {
  const StatesTableSpec& s = *c.s;
  for (int e = 0; e < c.ne; ++e) {
    const double* src = s.poly + ((static_cast<size_t>(s.poly_index[e]) * c.n + i) * c.q1 + a) * c.q1 * c.q1;
    double* te = t + e * c.P;
    if (!c.src_flat) {
      for (size_t b = 0; b < c.e1; ++b) std::memcpy(te + b * c.e1, src + b * c.q1, c.e1 * sizeof(double));
      src = te;
    }
    if (s.state_cost) {
      v_scale<W>(te, src, c.sc, c.P);
    } else if (src != te) {
      std::memcpy(te, src, c.P * sizeof(double));
    }
    if (c.pk == PowerKind::kSquare) {
      v_square<W>(te, c.P);
    } else if (c.pk == PowerKind::kLibm) {
      for (size_t k = 0; k < c.P; ++k) te[k] = std::pow(te[k], s.gamma);
    }
  }
}

// c.best / c.arg = the first minimum over the candidate planes t (numpy.argmin: the first NaN when there is one)
template <int W>
MEANCACHE_INLINE void poly_reduce(const PolyPlanes& c, const double* t) {
  std::fill_n(c.best, c.P, kInf);
  std::fill_n(c.arg, c.P, 0.0);
  bool nan = false;
  for (int e = 0; e < c.ne; ++e) nan |= v_argmin_step<W>(t + e * c.P, static_cast<double>(e), c.best, c.arg, c.P);
  if (!nan) return;
  for (size_t k = 0; k < c.P; ++k) {
    double bk = t[k];
    double gk = 0.0;
    for (int e = 1; e < c.ne; ++e) {
      if (takes(t[e * c.P + k], bk)) bk = t[e * c.P + k], gk = e;
    }
    c.best[k] = bk;
    c.arg[k] = gk;
  }
}

// poly_fill then poly_reduce in one pass, the candidates kept in registers: for flat source planes and the power
// c * c or c. Returns false when a candidate is NaN (the caller then runs the two-pass version for numpy's rule).
template <int W>
MEANCACHE_INLINE bool poly_fused(const PolyPlanes& c, int i, int a) {
  const StatesTableSpec& s = *c.s;
  const double* src[64];
  for (int e = 0; e < c.ne; ++e) {
    src[e] = s.poly + ((static_cast<size_t>(s.poly_index[e]) * c.n + i) * c.q1 + a) * c.q1 * c.q1;
  }
  const bool square = c.pk == PowerKind::kSquare;
  size_t k = 0;
  bool nan = false;
#ifdef MEANCACHE_VEC
  typedef typename Lanes<W>::type V;
  V acc = {};
  for (; k + W <= c.P; k += W) {
    V f, best = kInf - V{}, arg = {};
    std::memcpy(&f, c.sc + k, sizeof f);
    for (int e = 0; e < c.ne; ++e) {
      V v;
      std::memcpy(&v, src[e] + k, sizeof v);
      if (s.state_cost) {
        const V y = v * f;
        v = (v - v) == 0.0 ? y : v;
      }
      if (square) v = v * v;
      const auto take = v < best;
      best = take ? v : best;
      arg = take ? static_cast<double>(e) - V{} : arg;
      const auto num = v == v;
      acc = num ? acc : v;
    }
    std::memcpy(c.best + k, &best, sizeof best);
    std::memcpy(c.arg + k, &arg, sizeof arg);
  }
  for (int l = 0; l < W; ++l) nan |= acc[l] != acc[l];
#endif
  for (; k < c.P; ++k) {
    double best = kInf, arg = 0.0;
    for (int e = 0; e < c.ne; ++e) {
      double v = src[e][k];
      if (s.state_cost) v = finite(v) ? v * c.sc[k] : v;
      if (square) v = v * v;
      nan |= v != v;
      if (v < best) best = v, arg = e;
    }
    c.best[k] = best;
    c.arg[k] = arg;
  }
  return !nan;
}

void set_scale(const PolyPlanes& c, int i) {
  for (size_t d = 0; d < c.e1; ++d) c.sc[d] = c.s->sigmas[i] - c.s->sigmas[std::min<size_t>(i + d, c.n)];
  for (size_t b = 1; b < c.e1; ++b) std::memcpy(&c.sc[b * c.e1], &c.sc[0], c.e1 * sizeof(double));
}

// Where the planes go. The table layout: plane (i, a) is w[i, a, :, :] and code[i, a, :, :], written in place.
struct TableSink {
  double* w;
  int32_t* code;
  size_t d1;
  double* plane_w(int i, int a) { return w + (static_cast<size_t>(i) * d1 + a) * d1 * d1; }
  int32_t* plane_code(int i, int a) { return code + (static_cast<size_t>(i) * d1 + a) * d1 * d1; }
  void done(int, int) {}
};

// The DP's layout: plane (i, a) goes to wt[i][d][a][b] (b padded to bs with +inf) through one scratch plane, its
// values checked on the way (bad: some value is NaN or < 0); codes stay in the table layout.
struct DpSink {
  double* scratch;  // [d1 * d1]
  double* wt;
  int32_t* code;
  size_t d1, bs;
  bool bad = false;
  double* plane_w(int, int) { return scratch; }
  int32_t* plane_code(int i, int a) { return code + (static_cast<size_t>(i) * d1 + a) * d1 * d1; }
  void done(int i, int a) {
    const size_t plane = d1 * bs;
    double* base = wt + static_cast<size_t>(i) * d1 * plane + static_cast<size_t>(a) * bs;
    bool b_ad = false;
    for (size_t d = 0; d < d1; ++d) {
      double* row = base + d * plane;
      for (size_t b = 0; b < d1; ++b) {
        const double v = scratch[b * d1 + d];
        b_ad |= !(v >= 0.0);
        row[b] = v;
      }
      for (size_t b = d1; b < bs; ++b) row[b] = kInf;
    }
    bad |= b_ad;
  }
};

template <int W, class Sink>
MEANCACHE_INLINE void build_body(const StatesTableSpec& s, Workspace& ws, Sink& sink) {
  const int n = s.n;
  const int dmax = states_table_dmax(s);
  const size_t d1 = static_cast<size_t>(dmax) + 1;
  const int nj = s.use_jvp ? s.k_hi - s.k_lo + 1 : 0;
  const double* sig = s.sigmas;

  // jvp: w2[i][d], c2[i][d], independent of (a, b); +inf / 0 where no K is allowed (d < 2 or i + d > N)
  double* w2 = grow(ws.w2, static_cast<size_t>(n) * d1);
  int32_t* c2 = grow(ws.c2, static_cast<size_t>(n) * d1);
  std::fill_n(w2, static_cast<size_t>(n) * d1, kInf);
  std::fill_n(c2, static_cast<size_t>(n) * d1, 0);
  if (nj > 0) {
    const size_t plane = static_cast<size_t>(n + 1) * (n + 1);
    const size_t kstride = static_cast<size_t>(n) * d1;
    double* t = grow(ws.jt, static_cast<size_t>(nj) * kstride);  // t[k][i][d]; +inf where not set, stays +inf
    std::fill_n(t, static_cast<size_t>(nj) * kstride, kInf);
    for (int k = 0; k < nj; ++k) {
      for (int i = 0; i < n; ++i) {
        const double* row = s.costs + static_cast<size_t>(s.k_lo + k) * plane + static_cast<size_t>(i) * (n + 1) + i;
        double* tk = &t[k * kstride + static_cast<size_t>(i) * d1];
        const int dlast = std::min(dmax, n - i);
        for (int d = 2; d <= dlast; ++d) tk[d] = s.state_cost ? row[d] * (sig[i] - sig[i + d]) : row[d];
      }
    }
    apply_power(s, t, static_cast<size_t>(nj) * kstride);
    for (size_t x = 0; x < kstride; ++x) {
      double best = t[x];
      int32_t arg = 0;
      for (int k = 1; k < nj; ++k) {
        const double v = t[k * kstride + x];
        if (takes(v, best)) best = v, arg = k;
      }
      w2[x] = best;
      c2[x] = finite(best) ? arg + 1 : 0;
    }
  }

  // The polynomial estimators on a, b, d <= dd, one (i, a) plane [b][d] at a time; they replace jvp only where
  // strictly smaller (their d < 2 entries are overwritten with the chain values, as in the oracle).
  PolyPlanes c{};
  const bool poly = !s.poly_index.empty();
  size_t per_i = 0;
  if (poly) {
    c.s = &s;
    c.n = n;
    c.ne = static_cast<int>(s.poly_index.size());
    c.dd = std::min(s.dpoly, dmax);
    c.d1 = d1;
    c.q1 = static_cast<size_t>(s.dpoly) + 1;
    c.e1 = static_cast<size_t>(c.dd) + 1;
    c.P = c.e1 * c.e1;
    c.src_flat = c.e1 == c.q1;
    c.pk = power_kind(s);
    c.callback = c.pk == PowerKind::kCallback;
    double* buf = grow(ws.poly_buf, 3 * c.P);
    c.sc = buf;
    c.best = buf + c.P;
    c.arg = buf + 2 * c.P;
    per_i = c.e1 * c.ne * c.P;
    grow(ws.planes, c.callback ? static_cast<size_t>(n) * per_i : c.ne * c.P);
    if (c.callback) {  // numpy.power once over every candidate plane
      for (int i = 0; i < n; ++i) {
        set_scale(c, i);
        for (int a = 0; a <= c.dd; ++a) poly_fill<W>(c, i, a, &ws.planes[i * per_i + a * c.ne * c.P]);
      }
      apply_power(s, ws.planes.data(), static_cast<size_t>(n) * per_i);
    }
  }
  // one pass per plane where the source planes are contiguous and the power is c * c or c
  const bool fused =
      poly && c.src_flat && c.ne <= 64 && (c.pk == PowerKind::kSquare || c.pk == PowerKind::kIdentity);
  for (int i = 0; i < n; ++i) {
    if (poly && !c.callback) set_scale(c, i);
    for (int a = 0; a <= dmax; ++a) {
      double* wp = sink.plane_w(i, a);
      int32_t* cp = sink.plane_code(i, a);
      for (size_t b = 0; b < d1; ++b) {
        std::memcpy(wp + b * d1, w2 + static_cast<size_t>(i) * d1, d1 * sizeof(double));
        std::memcpy(cp + b * d1, c2 + static_cast<size_t>(i) * d1, d1 * sizeof(int32_t));
      }
      if (poly && a <= c.dd) {
        if (!(fused && poly_fused<W>(c, i, a))) {
          double* t = c.callback ? &ws.planes[i * per_i + a * c.ne * c.P] : ws.planes.data();
          if (!c.callback) poly_fill<W>(c, i, a, t);
          poly_reduce<W>(c, t);
        }
        if (c.e1 == d1) {
          v_merge<W>(c.best, c.arg, nj + 1, wp, cp, c.P);
        } else {
          for (size_t b = 0; b < c.e1; ++b) {
            v_merge<W>(c.best + b * c.e1, c.arg + b * c.e1, nj + 1, wp + b * d1, cp + b * d1, c.e1);
          }
        }
      }
      for (size_t b = 0; b < d1; ++b) {  // chain edges
        wp[b * d1] = kInf;
        wp[b * d1 + 1] = 0.0;
        cp[b * d1] = 0;
        cp[b * d1 + 1] = 0;
      }
      sink.done(i, a);
    }
  }
}

template <class Sink>
void build_generic(const StatesTableSpec& s, Workspace& ws, Sink& sink) {
  build_body<2>(s, ws, sink);
}
#ifdef MEANCACHE_X86_DISPATCH
template <class Sink>
__attribute__((target("avx512f,no-fma"))) void build_avx512(const StatesTableSpec& s, Workspace& ws, Sink& sink) {
  build_body<8>(s, ws, sink);
}
template <class Sink>
__attribute__((target("avx2,no-fma"))) void build_avx2(const StatesTableSpec& s, Workspace& ws, Sink& sink) {
  build_body<4>(s, ws, sink);
}
#endif

template <class Sink>
void build(int width, const StatesTableSpec& s, Workspace& ws, Sink& sink) {
#ifdef MEANCACHE_X86_DISPATCH
  if (width == 8) return build_avx512(s, ws, sink);
  if (width == 4) return build_avx2(s, ws, sink);
#endif
  (void)width;
  build_generic(s, ws, sink);
}

thread_local Workspace tls_workspace;

void trim(Workspace& ws) {
  if (ws.bytes() > kKeepBytes) ws = Workspace();
}

}  // namespace

void build_states_table(const StatesTableSpec& s, double* w, int32_t* code) {
  validate_states_table(s);
  TableSink sink{w, code, static_cast<size_t>(states_table_dmax(s)) + 1};
  build(simd_width(), s, tls_workspace, sink);
  trim(tls_workspace);
}

namespace {

// The DP of frontier_states over the reachable states only. At node i > 0 the state (a, b) is reachable from node
// 0 iff 1 <= a <= min(D, i) and either a = i, b = 0 (h = 0) or 1 <= b <= min(D, i - a); at node 0 only (0, 0).
// Row (a, :) of node i is processed from b = 0 in whole vectors (lanes past the reachable b's compute values that
// nobody reads). Every state read, F[r-1][i+d][d][a], is reachable when (i, a, b) is, and was computed at r - 1.
template <typename C>
struct DpArgs {
  const double* wt;  // [n][d1][d1][bs]: wt[i][d][a][b] = w[i, a, b, d]; +inf in the pad lanes b >= d1
  int n, dmax;
  size_t d1, bs;
  const int* next_forced;
  int r_max;
  double* prev;       // [n][d1][bs], F[r - 1]; row r = 1 set by the caller
  double* cur;        // [n][d1][bs]
  C* choice;          // [r_max + 1][n][d1][bs]: only the reachable entries of rows r >= 2 are written
  double* objective;  // [r_max + 1]
};

inline size_t row_len(int i, int a, int dmax) { return a == i ? 1 : static_cast<size_t>(std::min(dmax, i - a)) + 1; }

#ifdef MEANCACHE_VEC
// One row (i, a) of F[r] over the lanes [v0 * W, (v0 + NV) * W): min over d = 1..dn of
// wt[i][d][a][b] + F[r-1][i+d][d][a], scanning d upwards and replacing only on a strictly smaller sum (the smallest d
// wins ties), the running minimum and its d kept in registers. pa = +inf needs no test: w + inf = inf never wins
// (w has no NaN or -inf).
template <int W, int NV, typename C>
MEANCACHE_INLINE void dp_row(const DpArgs<C>& g, const double* prev, double* best, C* out, int i, int a, int dn,
                             size_t v0) {
  typedef typename Lanes<W>::type V;
  typedef typename IntLanes<W>::type VI;
  const size_t d1 = g.d1, bs = g.bs, plane = d1 * bs;
  V b[NV], q[NV];
  for (int t = 0; t < NV; ++t) b[t] = kInf - V{}, q[t] = V{};
  const double* wr = g.wt + static_cast<size_t>(i) * d1 * plane + static_cast<size_t>(a) * bs + v0 * W;
  const double* pr = prev + static_cast<size_t>(i) * plane + a;
  for (int d = 1; d <= dn; ++d) {
    // F[r-1][i+d][d][a] and wt[i][d][a][...]
    const V pv = pr[static_cast<size_t>(d) * (plane + bs)] - V{}, dv = static_cast<double>(d) - V{};
    const double* wd = wr + static_cast<size_t>(d) * plane;
    for (int t = 0; t < NV; ++t) {
      V c;
      std::memcpy(&c, wd + t * W, sizeof c);
      c += pv;
      const auto m = c < b[t];
      b[t] = m ? c : b[t];
      q[t] = m ? dv : q[t];
    }
  }
  for (int t = 0; t < NV; ++t) {
    std::memcpy(best + (v0 + t) * W, &b[t], sizeof b[t]);
    const VI qi = __builtin_convertvector(q[t], VI);
    if (sizeof(C) == 1) {
      Narrow<W>::store(qi, reinterpret_cast<uint8_t*>(out + (v0 + t) * W));
    } else {
      std::memcpy(out + (v0 + t) * W, &qi, sizeof qi);
    }
  }
}
#endif

template <int W, typename C>
MEANCACHE_INLINE void dp_body(const DpArgs<C>& g) {
  const int n = g.n, dmax = g.dmax;
  const size_t d1 = g.d1, bs = g.bs, plane = d1 * bs;
  double* prev = g.prev;
  double* cur = g.cur;
  for (int r = 2; r <= g.r_max; ++r) {
    for (int i = 0; i <= n - r; ++i) {
      // j = i + d <= N - r + 1: the rest of the path needs r - 1 computed nodes in j..N-1
      const int dn = std::min(std::min(i + dmax, g.next_forced[i]), n - r + 1) - i;
      const int a_lo = i == 0 ? 0 : 1, a_hi = std::min(dmax, i);
      C* out = g.choice + (static_cast<size_t>(r) * n + i) * plane;
      for (int a = a_lo; a <= a_hi; ++a) {
        const size_t nv = (row_len(i, a, dmax) + W - 1) / W;
        double* best = cur + static_cast<size_t>(i) * plane + static_cast<size_t>(a) * bs;
        C* o = out + static_cast<size_t>(a) * bs;
#ifdef MEANCACHE_VEC
        size_t v0 = 0;
        for (; v0 + 2 <= nv; v0 += 2) dp_row<W, 2>(g, prev, best, o, i, a, dn, v0);
        if (v0 < nv) dp_row<W, 1>(g, prev, best, o, i, a, dn, v0);
#else
        for (size_t b = 0; b < nv * W; ++b) {
          double bb = kInf;
          int q = 0;
          for (int d = 1; d <= dn; ++d) {
            const double c = g.wt[(static_cast<size_t>(i) * d1 + d) * plane + a * bs + b] +
                             prev[(static_cast<size_t>(i + d) * d1 + d) * bs + a];
            if (c < bb) bb = c, q = d;
          }
          best[b] = bb;
          o[b] = static_cast<C>(q);
        }
#endif
      }
    }
    g.objective[r] = cur[0];
    std::swap(prev, cur);
  }
}

template <typename C>
void dp_generic(const DpArgs<C>& g) {
  dp_body<2>(g);
}
#ifdef MEANCACHE_X86_DISPATCH
template <typename C>
__attribute__((target("avx512f,no-fma"))) void dp_avx512(const DpArgs<C>& g) {
  dp_body<8>(g);
}
template <typename C>
__attribute__((target("avx2,no-fma"))) void dp_avx2(const DpArgs<C>& g) {
  dp_body<4>(g);
}
#endif

// The DP and the path of every feasible budget, on the transposed table wt (see DpArgs); codes in the table layout.
template <typename C>
void dp_and_paths(int width, Workspace& ws, std::vector<C>& choice_buf, const double* wt, const int32_t* code, int n,
                  int dmax, size_t bs, const std::vector<int>& forced, int r_max, double* objective, int32_t* steps,
                  int32_t* codes) {
  const size_t d1 = static_cast<size_t>(dmax) + 1;
  const size_t plane = d1 * bs;
  int* next_forced = grow(ws.next_forced, static_cast<size_t>(n));  // smallest forced step > i, or n
  std::fill_n(next_forced, n, n);
  {
    std::vector<char> is_forced(n, 0);
    for (int f : forced) is_forced[f] = 1;
    for (int i = n - 1, nxt = n; i >= 0; --i) {
      next_forced[i] = nxt;
      if (is_forced[i]) nxt = i;
    }
  }
  const size_t fsize = static_cast<size_t>(n) * plane;
  double* prev = grow(ws.prev, fsize);
  double* cur = grow(ws.cur, fsize);
  std::fill_n(prev, fsize, kInf);
  std::fill_n(cur, fsize, kInf);
  C* choice = grow(choice_buf, static_cast<size_t>(r_max + 1) * n * plane);
  std::fill(objective, objective + r_max + 1, kInf);
  for (int i = 0; i < n; ++i) {
    const int d = n - i;
    if (d <= dmax && next_forced[i] == n) {
      std::copy_n(wt + (static_cast<size_t>(i) * d1 + d) * plane, plane, prev + static_cast<size_t>(i) * plane);
    }
  }
  objective[1] = prev[0];
  const DpArgs<C> g{wt, n, dmax, d1, bs, next_forced, r_max, prev, cur, choice, objective};
#ifdef MEANCACHE_X86_DISPATCH
  if (width == 8) {
    dp_avx512(g);
  } else if (width == 4) {
    dp_avx2(g);
  } else {
    dp_generic(g);
  }
#else
  (void)width;
  dp_generic(g);
#endif

  std::fill(steps, steps + static_cast<size_t>(r_max + 1) * n, -1);
  std::fill(codes, codes + static_cast<size_t>(r_max + 1) * n, -1);
  for (int budget = 1; budget <= r_max; ++budget) {
    if (!(objective[budget] < kInf)) continue;
    int32_t* st = steps + static_cast<size_t>(budget) * n;
    int32_t* co = codes + static_cast<size_t>(budget) * n;
    int i = 0, a = 0, b = 0;
    st[0] = 0;
    for (int r = budget, k = 0; r >= 1; --r, ++k) {
      // F[1] is the last edge, to N (its choice row is implied)
      const int d = r == 1 ? n - i : static_cast<int>(choice[(static_cast<size_t>(r) * n + i) * plane + a * bs + b]);
      if (d < 1 || d > dmax || i + d > n) throw std::logic_error("frontier_profile: broken path");
      co[k] = code[((static_cast<size_t>(i) * d1 + a) * d1 + b) * d1 + d];
      i += d;
      b = a;
      a = d;
      if (r > 1) st[k + 1] = i;
    }
    if (i != n) throw std::logic_error("frontier_profile: path does not end at N");
  }
}

// frontier_states' argument checks with its messages (validate_states), before any work
void check_forced_rmax(int n, const std::vector<int>& forced, int r_max) {
  if (r_max < 1 || r_max > n) {
    throw std::invalid_argument("r_max must be in 1..N=" + std::to_string(n) + ", got " + std::to_string(r_max));
  }
  for (int f : forced) {
    if (f < 0 || f >= n) {
      throw std::invalid_argument("forced step " + std::to_string(f) + " is out of range for N=" + std::to_string(n) +
                                  " (valid: 0.." + std::to_string(n - 1) + ")");
    }
  }
}

}  // namespace

void frontier_profile(const StatesTableSpec& s, const std::vector<int>& forced, int r_max, double* objective,
                      int32_t* steps, int32_t* codes) {
  validate_states_table(s);
  check_forced_rmax(s.n, forced, r_max);
  const int n = s.n;
  const int dmax = states_table_dmax(s);
  const size_t d1 = static_cast<size_t>(dmax) + 1;
  const int width = simd_width();
  const size_t bs = (d1 + width - 1) / width * width;
  Workspace& ws = tls_workspace;
  DpSink sink{grow(ws.wplane, d1 * d1), grow(ws.wt, static_cast<size_t>(n) * d1 * d1 * bs),
              grow(ws.code, static_cast<size_t>(n) * d1 * d1 * d1), d1, bs};
  build(width, s, ws, sink);
  if (sink.bad) {  // the error of frontier_states on this table: rebuild it in its layout and let it report
    std::vector<double> w(static_cast<size_t>(n) * d1 * d1 * d1);
    std::vector<int32_t> code(w.size());
    build_states_table(s, w.data(), code.data());
    StatesProblem p;
    p.w = w.data();
    p.n = n;
    p.dmax = dmax;
    p.forced = forced;
    p.r_max = r_max;
    validate_states(p);
    throw std::logic_error("frontier_profile: a bad table value that validate_states accepts");
  }
  if (dmax < 256) {
    dp_and_paths<uint8_t>(width, ws, ws.choice8, sink.wt, sink.code, n, dmax, bs, forced, r_max, objective, steps,
                          codes);
  } else {
    dp_and_paths<int32_t>(width, ws, ws.choice32, sink.wt, sink.code, n, dmax, bs, forced, r_max, objective, steps,
                          codes);
  }
  trim(ws);
}

}  // namespace meancache
