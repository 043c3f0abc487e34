"""The one loader of the compiled solver ``meancache_kernels._C`` (C++17, pybind11, no torch; built from csrc/).

Loaded lazily, on the first solve, never at import. :func:`pick` maps a solver backend (``"auto"``, ``"cpp"``,
``"python"``) to the extension module, or None for the pure-Python reference.
"""

from __future__ import annotations

import importlib

from ..checks import check_solver_backend

INSTALL_HINT = (
    "the compiled extension meancache_kernels._C is not available; rebuild it with "
    "`pip install --no-build-isolation -e .` (without MEANCACHE_SKIP_EXT=1), or pass backend='python'"
)


def load():
    """The extension module, or None when it was not built."""
    try:
        return importlib.import_module("meancache_kernels._C")
    except ImportError:
        return None


def pick(backend: str, need: str | None = None):
    """The extension for ``backend`` (None: use the Python reference). ``need``: a function the extension must have
    (an extension built by an older version may lack it; "auto" then falls back to Python, "cpp" raises)."""
    check_solver_backend(backend)
    if backend == "python":
        return None
    ext = load()
    if ext is not None and need is not None and not hasattr(ext, need):
        ext = None
    if ext is None and backend == "cpp":
        raise ImportError(f"backend='cpp': {INSTALL_HINT}")
    return ext
