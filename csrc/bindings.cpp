// pybind11 bindings for the torch-free native core (numpy in, numpy out).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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
        py::list out;
        for (const auto& s : sols) {
          if (s.feasible) {
            out.append(to_dict(s));
          } else {
            out.append(py::none());
          }
        }
        return out;
      },
      py::arg("costs"), py::arg("gamma"), py::arg("forced"), py::arg("max_skip"), py::arg("k_lo"), py::arg("k_hi"),
      "Exact PSSP optimum for every budget in one DP: a list indexed by B = 0..N of dicts (None when infeasible).");
}
