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
      "Estimator-aware PSSP DP (DESIGN.md 2b) on an edge table w: float64 [N, D+1, D+1, D+1], w[i, a, b, d]. "
      "Returns (objective float64 [r_max+1], choice int32 [r_max+1, N, D+1, D+1]): objective[r] = F[r][0][0][0] "
      "(+inf where infeasible and at r = 0), choice[r, i, a, b] = the chosen edge length d (0 where none); "
      "bit-identical to meancache_kernels.solver.dp_reference. Raises ValueError on invalid input.");
}
