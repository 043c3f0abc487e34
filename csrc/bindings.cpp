// pybind11 bindings for the torch-free native core (numpy in, numpy out).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "solver.hpp"

namespace py = pybind11;

namespace {

using CostArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

meancache::Problem make_problem(const CostArray& costs, double gamma, const std::vector<int>& forced, int max_skip,
                                int k_lo, int k_hi) {
  if (costs.ndim() != 3 || costs.shape(1) != costs.shape(2) || costs.shape(1) < 2 || costs.shape(0) < 2) {
    std::ostringstream msg;
    msg << "costs must have shape [K_max+1, N+1, N+1] with K_max >= 1 and N >= 1, got (";
    for (py::ssize_t d = 0; d < costs.ndim(); ++d) msg << (d ? ", " : "") << costs.shape(d);
    msg << ")";
    throw std::invalid_argument(msg.str());
  }
  meancache::Problem p;
  p.costs = costs.data();
  p.kmax = static_cast<int>(costs.shape(0)) - 1;
  p.n = static_cast<int>(costs.shape(1)) - 1;
  p.gamma = gamma;
  p.forced = forced;
  p.max_skip = max_skip;
  p.k_lo = k_lo;
  p.k_hi = k_hi;
  return p;
}

using EdgeArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::ostringstream msg;
  msg << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) msg << (d ? ", " : "") << a.shape(d);
  msg << (a.ndim() == 1 ? ",)" : ")");
  return msg.str();
}

using PolyArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

// The table spec of edge_table_states / frontier_profile. Arrays are referenced, not copied: keep them alive.
meancache::StatesTableSpec make_table_spec(const CostArray& costs, const CostArray& sigmas, const py::object& poly,
                                           PolyArray& poly_arr, const std::vector<int>& poly_index, bool use_jvp,
                                           int k_lo, int k_hi, int max_skip, const std::string& edge_cost,
                                           double gamma, const std::string& power) {
  if (costs.ndim() != 3 || costs.shape(1) != costs.shape(2) || costs.shape(1) < 2 || costs.shape(0) < 2) {
    throw std::invalid_argument("costs must have shape [K_max+1, N+1, N+1] with K_max >= 1 and N >= 1, got " +
                                shape_str(costs));
  }
  const py::ssize_t n = costs.shape(1) - 1;
  if (sigmas.ndim() != 1 || sigmas.shape(0) != n + 1) {
    throw std::invalid_argument("sigmas must have shape (N+1,) = (" + std::to_string(n + 1) + ",), got " +
                                shape_str(sigmas));
  }
  if (edge_cost != "velocity" && edge_cost != "state") {
    throw std::invalid_argument("edge_cost must be 'velocity' or 'state', got '" + edge_cost + "'");
  }
  if (power != "numpy" && power != "libm") {
    throw std::invalid_argument("power must be 'numpy' or 'libm', got '" + power + "'");
  }
  meancache::StatesTableSpec s;
  s.costs = costs.data();
  s.kmax = static_cast<int>(costs.shape(0)) - 1;
  s.n = static_cast<int>(n);
  s.sigmas = sigmas.data();
  if (!poly.is_none()) {
    poly_arr = PolyArray::ensure(poly);
    if (!poly_arr || poly_arr.ndim() != 5 || poly_arr.shape(1) != n || poly_arr.shape(2) < 2 ||
        poly_arr.shape(2) != poly_arr.shape(3) || poly_arr.shape(2) != poly_arr.shape(4)) {
      throw std::invalid_argument("poly_costs must have shape [E, N, D+1, D+1, D+1] with N=" + std::to_string(n) +
                                  " and D >= 1, got " + (poly_arr ? shape_str(poly_arr) : std::string("no array")));
    }
    s.poly = poly_arr.data();
    s.num_poly = static_cast<int>(poly_arr.shape(0));
    s.dpoly = static_cast<int>(poly_arr.shape(2)) - 1;
  } else if (!poly_index.empty()) {
    throw std::invalid_argument("poly_index given without poly_costs");
  }
  s.poly_index = poly_index;
  s.use_jvp = use_jvp;
  s.k_lo = k_lo;
  s.k_hi = k_hi;
  s.max_skip = max_skip;
  s.state_cost = edge_cost == "state";
  s.gamma = gamma;
  if (power == "numpy") {
    // numpy.power(buf, gamma, out=buf) on a view of the buffer (the GIL is taken: the caller may have released it)
    s.power = [gamma](double* p, size_t m) {
      py::gil_scoped_acquire acquire;
      py::array_t<double> view({static_cast<py::ssize_t>(m)}, {static_cast<py::ssize_t>(sizeof(double))}, p,
                               py::capsule(p, [](void*) {}));
      py::module_::import("numpy").attr("power")(view, gamma, py::arg("out") = view);
    };
  }
  meancache::validate_states_table(s);
  return s;
}

py::dict to_dict(const meancache::Solution& s) {
  py::dict d;
  d["steps"] = s.steps;
  d["ks"] = s.ks;
  d["objective"] = s.objective;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "meancache_kernels native core: PSSP schedule solver (C++17, no torch)";
  m.def("version", []() { return std::string(MEANCACHE_VERSION_INFO); }, "Version of the compiled extension.");

  m.def(
      "solve",
      [](const CostArray& costs, int budget, double gamma, const std::vector<int>& forced, int max_skip, int k_lo,
         int k_hi) {
        meancache::Problem p = make_problem(costs, gamma, forced, max_skip, k_lo, k_hi);
        meancache::Solution s;
        {
          py::gil_scoped_release release;
          s = meancache::solve(p, budget);
        }
        if (!s.feasible) {
          std::ostringstream msg;
          msg << "infeasible: no path 0 -> " << p.n << " with exactly budget=" << budget
              << " computed steps under the forced steps, max_skip=" << max_skip << " and k_range=(" << k_lo << ", "
              << k_hi << ")";
          throw std::invalid_argument(msg.str());
        }
        return to_dict(s);
      },
      py::arg("costs"), py::arg("budget"), py::arg("gamma"), py::arg("forced"), py::arg("max_skip"), py::arg("k_lo"),
      py::arg("k_hi"),
      "Exact PSSP solve for one budget. costs: float64 [K_max+1, N+1, N+1]. Returns {'steps', 'ks', 'objective'}; "
      "raises ValueError on invalid input or when infeasible.");

  m.def(
      "frontier",
      [](const CostArray& costs, double gamma, const std::vector<int>& forced, int max_skip, int k_lo, int k_hi) {
        meancache::Problem p = make_problem(costs, gamma, forced, max_skip, k_lo, k_hi);
        std::vector<meancache::Solution> sols;
        {
          py::gil_scoped_release release;
          sols = meancache::frontier(p);
        }
        const py::ssize_t rows = p.n + 1, cols = p.n;
        py::array_t<double> objective(rows);
        py::array_t<int32_t> steps({rows, cols});
        py::array_t<int32_t> ks({rows, cols});
        auto o = objective.mutable_unchecked<1>();
        auto st = steps.mutable_unchecked<2>();
        auto kk = ks.mutable_unchecked<2>();
        for (py::ssize_t b = 0; b < rows; ++b) {
          const auto& s = sols[b];
          o(b) = s.feasible ? s.objective : std::numeric_limits<double>::infinity();
          for (py::ssize_t c = 0; c < cols; ++c) {
            const bool in = s.feasible && c < static_cast<py::ssize_t>(s.steps.size());
            st(b, c) = in ? s.steps[c] : -1;
            kk(b, c) = in ? s.ks[c] : -1;
          }
        }
        return py::make_tuple(objective, steps, ks);
      },
      py::arg("costs"), py::arg("gamma"), py::arg("forced"), py::arg("max_skip"), py::arg("k_lo"), py::arg("k_hi"),
      "Exact PSSP optimum for every budget in one DP. Returns (objective float64 [N+1], steps int32 [N+1, N], "
      "ks int32 [N+1, N]): row B holds the B computed steps and the K of each edge, padded with -1; objective is "
      "+inf (and the row all -1) for B = 0 and infeasible budgets.");

  m.def(
      "frontier_states",
      [](const EdgeArray& w, const std::vector<int>& forced, int r_max) {
        if (w.ndim() != 4 || w.shape(1) != w.shape(2) || w.shape(1) != w.shape(3) || w.shape(0) < 1 ||
            w.shape(1) < 2) {
          throw std::invalid_argument("w must have shape [N, D+1, D+1, D+1] with N >= 1 and D >= 1, got " +
                                      shape_str(w));
        }
        meancache::StatesProblem p;
        p.w = w.data();
        p.n = static_cast<int>(w.shape(0));
        p.dmax = static_cast<int>(w.shape(1)) - 1;
        p.forced = forced;
        p.r_max = r_max;
        meancache::validate_states(p);  // before allocating r_max-sized outputs
        const py::ssize_t d1 = w.shape(1);
        py::array_t<double> objective(static_cast<py::ssize_t>(r_max) + 1);
        py::array_t<int32_t> choice({static_cast<py::ssize_t>(r_max) + 1, w.shape(0), d1, d1});
        double* o = objective.mutable_data();
        int32_t* c = choice.mutable_data();
        {
          py::gil_scoped_release release;
          meancache::frontier_states(p, o, c);
        }
        return py::make_tuple(objective, choice);
      },
      py::arg("w"), py::arg("forced"), py::arg("r_max"),
      "Estimator-aware PSSP DP (docs/design.md 2b) on an edge table w: float64 [N, D+1, D+1, D+1], w[i, a, b, d]. "
      "Returns (objective float64 [r_max+1], choice int32 [r_max+1, N, D+1, D+1]): objective[r] = F[r][0][0][0] "
      "(+inf where infeasible and at r = 0), choice[r, i, a, b] = the chosen edge length d (0 where none); "
      "bit-identical to meancache_kernels.solver.dp_reference. Raises ValueError on invalid input.");

  m.def(
      "edge_table_states",
      [](const CostArray& costs, const CostArray& sigmas, const py::object& poly_costs,
         const std::vector<int>& poly_index, bool use_jvp, int k_lo, int k_hi, int max_skip,
         const std::string& edge_cost, double gamma, const std::string& power) {
        PolyArray poly_arr;
        const meancache::StatesTableSpec s = make_table_spec(costs, sigmas, poly_costs, poly_arr, poly_index, use_jvp,
                                                             k_lo, k_hi, max_skip, edge_cost, gamma, power);
        const py::ssize_t d1 = meancache::states_table_dmax(s) + 1;
        py::array_t<double> w({static_cast<py::ssize_t>(s.n), d1, d1, d1});
        py::array_t<int32_t> code({static_cast<py::ssize_t>(s.n), d1, d1, d1});
        meancache::build_states_table(s, w.mutable_data(), code.mutable_data());
        return py::make_tuple(w, code);
      },
      py::arg("costs"), py::arg("sigmas"), py::arg("poly_costs"), py::arg("poly_index"), py::arg("use_jvp"),
      py::arg("k_lo"), py::arg("k_hi"), py::arg("max_skip"), py::arg("edge_cost"), py::arg("gamma"),
      py::arg("power") = "numpy",
      "The estimator-aware edge table of meancache_kernels.solver.edge_table, bit for bit: (w float64, code int32), "
      "both [N, D+1, D+1, D+1]. costs: [K_max+1, N+1, N+1]; sigmas: [N+1]; poly_costs: [E, N, Dp+1, Dp+1, Dp+1] or "
      "None; poly_index: the selected polynomial estimators (indices into poly_costs) in candidate order; use_jvp: "
      "jvp with K in k_lo..k_hi first; edge_cost: 'velocity' or 'state'; power: 'numpy' (numpy.power for gamma "
      "other than 1 and 2, as the oracle) or 'libm' (std::pow). Raises ValueError on invalid input.");

  m.def(
      "frontier_profile",
      [](const CostArray& costs, const CostArray& sigmas, const py::object& poly_costs,
         const std::vector<int>& poly_index, bool use_jvp, int k_lo, int k_hi, int max_skip,
         const std::string& edge_cost, double gamma, const std::vector<int>& forced, int r_max,
         const std::string& power) {
        PolyArray poly_arr;
        const meancache::StatesTableSpec s = make_table_spec(costs, sigmas, poly_costs, poly_arr, poly_index, use_jvp,
                                                             k_lo, k_hi, max_skip, edge_cost, gamma, power);
        if (r_max < 1 || r_max > s.n) {
          throw std::invalid_argument("r_max must be in 1..N=" + std::to_string(s.n) + ", got " +
                                      std::to_string(r_max));
        }
        const py::ssize_t rows = static_cast<py::ssize_t>(r_max) + 1;
        py::array_t<double> objective(rows);
        py::array_t<int32_t> steps({rows, static_cast<py::ssize_t>(s.n)});
        py::array_t<int32_t> codes({rows, static_cast<py::ssize_t>(s.n)});
        double* o = objective.mutable_data();
        int32_t* st = steps.mutable_data();
        int32_t* co = codes.mutable_data();
        {
          py::gil_scoped_release release;
          meancache::frontier_profile(s, forced, r_max, o, st, co);
        }
        return py::make_tuple(objective, steps, codes);
      },
      py::arg("costs"), py::arg("sigmas"), py::arg("poly_costs"), py::arg("poly_index"), py::arg("use_jvp"),
      py::arg("k_lo"), py::arg("k_hi"), py::arg("max_skip"), py::arg("edge_cost"), py::arg("gamma"),
      py::arg("forced"), py::arg("r_max"), py::arg("power") = "numpy",
      "edge_table_states and frontier_states in one call, without the tables crossing into Python: returns "
      "(objective float64 [r_max+1], steps int32 [r_max+1, N], codes int32 [r_max+1, N]); row r holds the r computed "
      "steps of budget r and the table code of each edge (padded with -1; all -1 where infeasible), bit-identical to "
      "the numpy table with frontier_states and the path walk of meancache_kernels.solver.states. Raises ValueError "
      "on invalid input or a bad table value, as frontier_states.");
}
