"""One owner per parameter: the validation every public entry point calls (no torch import).

Each check takes the value and the argument's name, and returns the normalised value or raises a TypeError /
ValueError that names the argument, the value and what is allowed:

- :func:`as_int`, :func:`int_list`, :func:`as_count`: integers;
- :func:`as_sigmas`: a flow-matching sigma grid (N + 1 decreasing values ending at 0);
- :func:`check_budget`: B, the number of computed steps, in 1..N;
- :func:`check_gamma`: the PSSP exponent;
- :func:`check_estimator_names`: estimator names (``meancache_kernels.estimators.available()``);
- :func:`check_ops_backend` (``OPS_BACKENDS``: which implementation runs the per-step arithmetic) and
  :func:`check_solver_backend` (``SOLVER_BACKENDS``: which implementation runs the PSSP dynamic programme): two
  vocabularies, two arguments.

:class:`InfeasibleError` is the one error that means "no schedule satisfies these constraints" (a ValueError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

__all__ = [
    "OPS_BACKENDS",
    "SOLVER_BACKENDS",
    "InfeasibleError",
    "as_int",
    "int_list",
    "as_count",
    "as_sigmas",
    "check_budget",
    "check_gamma",
    "check_tol",
    "check_ops_backend",
    "check_solver_backend",
    "check_estimator_names",
]

OPS_BACKENDS = ("auto", "torch", "triton")
SOLVER_BACKENDS = ("auto", "cpp", "python")


class InfeasibleError(ValueError):
    """No schedule with the requested budget satisfies the constraints (forced steps, longest skip, spans)."""


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int (bool and non-integers are a TypeError naming ``name``)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value.__index__())


def int_list(values: Any, name: str) -> list[int]:
    """A sequence (or numpy array) of integers as a list of Python ints."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence,)) and not hasattr(values, "tolist"):
        raise TypeError(f"{name} must be a sequence of integers, got {type(values).__name__}")
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [as_int(v, f"{name}[{k}]") for k, v in enumerate(values)]


def as_count(name: str, value: Any, minimum: int = 1) -> int:
    """An integer >= ``minimum``."""
    value = as_int(value, name)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_budget(budget: Any, num_steps: int | None = None, name: str = "budget") -> int:
    """B, the number of computed steps: an int in 1..N (N = ``num_steps`` when known, else only B >= 1)."""
    if isinstance(budget, bool) or not hasattr(budget, "__index__"):
        rng = "1..N" if num_steps is None else f"1..N={num_steps}"
        raise TypeError(f"{name} must be an int (the number of computed steps, {rng}), got {budget!r} "
                        f"({type(budget).__name__})")
    b = int(budget.__index__())
    if num_steps is None:
        if b < 1:
            raise ValueError(f"{name} must be >= 1 (the number of computed steps), got {b}")
    elif not 1 <= b <= num_steps:
        raise ValueError(f"{name} must be in 1..N={num_steps} (the number of computed steps), got {b}")
    return b


def check_gamma(gamma: Any, name: str = "gamma") -> float:
    """The PSSP exponent: a finite real number > 0."""
    if isinstance(gamma, bool) or not isinstance(gamma, Real):
        raise TypeError(f"{name} must be a real number, got {gamma!r}")
    gamma = float(gamma)
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"{name} must be finite and > 0, got {gamma}")
    return gamma


def check_tol(tol: Any, name: str = "tol") -> float:
    """An error tolerance of the adaptive control: a finite real number >= 0."""
    if isinstance(tol, bool) or not isinstance(tol, Real):
        raise TypeError(f"{name} must be a real number >= 0, got {tol!r} ({type(tol).__name__})")
    tol = float(tol)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"{name} must be finite and >= 0, got {tol}")
    return tol


def check_ops_backend(backend: Any, name: str = "backend") -> str:
    """The op backend: one of ``OPS_BACKENDS``."""
    if not isinstance(backend, str) or backend not in OPS_BACKENDS:
        raise ValueError(f"{name} must be one of {OPS_BACKENDS} (the op implementation), got {backend!r}")
    return backend


def check_solver_backend(backend: Any, name: str = "backend") -> str:
    """The PSSP solver backend: one of ``SOLVER_BACKENDS``."""
    if not isinstance(backend, str) or backend not in SOLVER_BACKENDS:
        raise ValueError(f"{name} must be one of {SOLVER_BACKENDS} (the PSSP solver implementation), got {backend!r}")
    return backend


def check_estimator_names(names: Any, name: str = "estimators") -> tuple[str, ...]:
    """A non-empty list or tuple of estimator names (a single name is accepted), duplicates removed in order."""
    from .estimators import parse

    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{name} must be a non-empty list/tuple of estimator names, got {names!r}")
    for n in names:
        parse(n)  # TypeError / ValueError naming the estimator and the available ones
    return tuple(dict.fromkeys(names))



def as_sigmas(sigmas, num_steps: int | None = None, name: str = "sigmas") -> list[float]:
    """Validate a flow-matching sigma schedule and return it as a list of Python floats.

    ``sigmas`` (list, tuple, numpy array or torch tensor) must hold N + 1 finite, strictly decreasing values ending
    at 0. When ``num_steps`` is given, N must equal it. A device tensor is read back to the host once, here.
    """
    if hasattr(sigmas, "detach"):  # torch tensor, without importing torch
        sigmas = sigmas.detach().cpu().double().tolist()
    elif hasattr(sigmas, "tolist") and not isinstance(sigmas, (list, tuple)):
        sigmas = sigmas.tolist()
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Sequence):
        raise TypeError(f"{name} must be a list, tuple, numpy array or tensor of floats, got {type(sigmas).__name__}")
    if any(isinstance(s, (Sequence, bytes)) or hasattr(s, "__len__") for s in sigmas):
        raise ValueError(f"{name} must be one-dimensional (N + 1 values)")
    try:
        out = [float(s) for s in sigmas]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold real numbers, got {list(sigmas)[:4]}...") from None
    if len(out) < 2:
        raise ValueError(f"{name} must hold N + 1 >= 2 values (N steps), got {len(out)}")
    if num_steps is not None and len(out) != num_steps + 1:
        raise ValueError(
            f"{name} must hold N + 1 = {num_steps + 1} values for a schedule of N = {num_steps} steps, got {len(out)}"
        )
    for k, s in enumerate(out):
        if not math.isfinite(s):
            raise ValueError(f"{name}[{k}] = {s} is not finite")
    for k in range(len(out) - 1):
        if not out[k] > out[k + 1]:
            raise ValueError(
                f"{name} must be strictly decreasing (s_0 > s_1 > ... > s_N = 0); {name}[{k}]={out[k]} and "
                f"{name}[{k + 1}]={out[k + 1]}"
            )
    if out[-1] != 0.0:
        raise ValueError(f"{name} must end at 0 (the clean sample), got {name}[-1]={out[-1]}")
    return out
