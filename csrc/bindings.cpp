// pybind11 bindings for the torch-free native core (numpy in, numpy out).
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "meancache_kernels native core: PSSP schedule solver (C++17, no torch)";
  m.def("version", []() { return std::string(MEANCACHE_VERSION_INFO); }, "Version of the compiled extension.");
}
