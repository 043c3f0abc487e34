"""MeanCache schedules: which steps run the transformer, and which estimator (and parameter) each skipped step uses.

A schedule over N steps is a boolean ``compute[i]`` (``compute[0]`` is always True) and, for every skipped
step i, an estimator family (``"jvp"``, the paper's, by default; ``"taylor"``, ``"mean"``: see
:mod:`meancache_kernels.estimators`) with its parameter ``spans[i] >= 1``: the JVP span K for ``jvp``, the
polynomial order p otherwise (0 and ``""`` are stored for computed steps). The public MeanCache release writes a
schedule as the list of computed steps plus one K per interval between consecutive computed steps, 0 meaning "no
skipped step" (a "chain" edge); :meth:`Schedule.from_official` and :meth:`Schedule.to_official` convert.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Schedule",
    "SolverResult",
    "Frontier",
    "solve",
    "solve_frontier",
    "solve_costs",
    "frontier_costs",
    "solve_reference",
    "frontier_reference",
    "fit_schedule",
]

_FORMAT = "meancache-schedule"
_FORMAT_VERSION = 2  # version 1 (before estimators) is read as an all-"jvp" schedule, and still written for one
_READ_VERSIONS = (1, 2)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value.__index__())


def _int_list(values: Any, name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence,)) and not hasattr(values, "tolist"):
        raise TypeError(f"{name} must be a sequence of integers, got {type(values).__name__}")
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [_as_int(v, f"{name}[{k}]") for k, v in enumerate(values)]


class Schedule:
    """Which steps to compute, and the estimator and its parameter on every skipped step.

    Args:
        compute: N booleans, ``compute[i]`` True when step i runs the transformer. ``compute[0]`` must be True.
        spans: N integers, the estimator parameter of every skipped step (``spans[i] >= 1``: the JVP span K for
            ``jvp``, the polynomial order p for ``taylor``/``mean``) and 0 on computed steps. ``None`` means 1 on
            every skipped step (K = 1 for ``jvp``: plain reuse).
        meta: free-form metadata (source, model, solver objective, ...), kept through JSON round trips.
        estimators: N strings, the estimator family of every skipped step (``"jvp"``, ``"taylor"``, ``"mean"``)
            and ``""`` on computed steps; ``None`` means ``"jvp"`` on every skipped step (the paper's rule).
    """

    __slots__ = ("compute", "spans", "meta", "estimators")

    def __init__(self, compute: Sequence[bool], spans: Sequence[int] | None = None, meta: dict | None = None,
                 estimators: Sequence[str] | None = None):
        if isinstance(compute, (str, bytes)) or not (isinstance(compute, Sequence) or hasattr(compute, "tolist")):
            raise TypeError(f"compute must be a sequence of booleans, got {type(compute).__name__}")
        if hasattr(compute, "tolist"):
            compute = compute.tolist()
        comp = []
        for k, c in enumerate(compute):
            if not isinstance(c, (bool, int)) or (not isinstance(c, bool) and c not in (0, 1)):
                raise TypeError(f"compute[{k}] must be a bool, got {c!r}")
            comp.append(bool(c))
        if len(comp) == 0:
            raise ValueError("compute must hold at least one step (num_steps >= 1), got an empty sequence")
        if not comp[0]:
            raise ValueError("compute[0] must be True: the first step has no history and must run the transformer")
        if spans is None:
            sp = [0 if c else 1 for c in comp]
        else:
            sp = _int_list(spans, "spans")
            if len(sp) != len(comp):
                raise ValueError(
                    f"spans must have one entry per step: len(spans)={len(sp)} != len(compute)={len(comp)}"
                )
        for i, (c, k) in enumerate(zip(comp, sp)):
            if c and k != 0:
                raise ValueError(f"spans[{i}]={k} but step {i} is computed: computed steps take span 0")
            if not c and k < 1:
                raise ValueError(f"spans[{i}]={k} but step {i} is skipped: skipped steps need a span K >= 1")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
        est = _check_estimators(estimators, comp, sp)
        object.__setattr__(self, "compute", tuple(comp))
        object.__setattr__(self, "spans", tuple(sp))
        object.__setattr__(self, "meta", dict(meta) if meta else None)
        object.__setattr__(self, "estimators", est)

    def __setattr__(self, name, value):
        raise AttributeError("Schedule is immutable")

    def __eq__(self, other) -> bool:
        # meta (provenance) does not take part in equality: two schedules are equal when they run the same steps.
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.compute == other.compute and self.spans == other.spans and self.estimators == other.estimators

    def __hash__(self) -> int:
        return hash((self.compute, self.spans, self.estimators))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def full(cls, num_steps: int) -> "Schedule":
        """Every step computed (no caching)."""
        n = _as_int(num_steps, "num_steps")
        if n < 1:
            raise ValueError(f"num_steps must be >= 1, got {n}")
        return cls([True] * n)

    @classmethod
    def from_compute_steps(cls, compute_steps: Sequence[int], num_steps: int, span: int = 1) -> "Schedule":
        """Computed steps given by index; every skipped step uses the same span ``span``."""
        steps = _check_compute_steps(compute_steps, num_steps)
        k = _as_int(span, "span")
        if k < 1:
            raise ValueError(f"span must be >= 1, got {k}")
        n = _as_int(num_steps, "num_steps")
        mask = [False] * n
        for s in steps:
            mask[s] = True
        return cls(mask, [0 if c else k for c in mask])

    @classmethod
    def uniform(cls, num_steps: int, budget: int, estimator: str = "jvp", *, span: int = 1, warp: float = 1.0,
                meta: dict | None = None) -> "Schedule":
        """``budget`` computed steps evenly spaced over ``0..num_steps-1`` (both ends computed when budget >= 2) and
        one estimator on every skipped step: ``"jvp"`` with span ``span``, or a polynomial one by name
        (``"taylor1"``, ``"mean2"``, ...; see :func:`meancache_kernels.estimators.available`).

        ``warp`` > 0 spaces them as ``round((N - 1) * (k / (B - 1)) ** warp)`` instead (warp > 1: denser at the
        start, where sigma is high; < 1: denser at the end), made strictly increasing."""
        from . import estimators as est

        n = _as_int(num_steps, "num_steps")
        b = _as_int(budget, "budget")
        if n < 1:
            raise ValueError(f"num_steps must be >= 1, got {n}")
        if not 1 <= b <= n:
            raise ValueError(f"budget must be in 1..num_steps={n}, got {b}")
        family, param = est.parse(estimator)
        if family == "jvp":
            param = _as_int(span, "span")
            if param < 1:
                raise ValueError(f"span must be >= 1, got {param}")
        if isinstance(warp, bool) or not isinstance(warp, (int, float)) or not (math.isfinite(warp) and warp > 0):
            raise ValueError(f"warp must be a finite number > 0, got {warp!r}")
        if warp == 1.0:
            steps = [0] if b == 1 else [round(k * (n - 1) / (b - 1)) for k in range(b)]
        else:
            steps = [round((n - 1) * (k / (b - 1)) ** warp) for k in range(b)] if b > 1 else [0]
            for k in range(1, b):  # strictly increasing, and room left for the steps after
                steps[k] = max(steps[k], steps[k - 1] + 1)
            for k in range(b - 1, 0, -1):
                steps[k] = min(steps[k], n - b + k, steps[k + 1] - 1 if k + 1 < b else n - 1)
        mask = [False] * n
        for t in steps:
            mask[t] = True
        meta = dict(meta or {})
        meta.setdefault("source", "uniform")
        meta.setdefault("estimator", estimator)
        if warp != 1.0:
            meta.setdefault("warp", float(warp))
        return cls(mask, [0 if c else param for c in mask], meta=meta,
                   estimators=["" if c else family for c in mask])

    @classmethod
    def from_official(
        cls, compute_steps: Sequence[int], spans: Sequence[int], num_steps: int, meta: dict | None = None
    ) -> "Schedule":
        """Read the public release's format.

        Args:
            compute_steps: increasing computed step indices, starting at 0.
            spans: one K per interval between consecutive computed steps (``len(compute_steps) - 1`` values), or
                one more that also covers a final interval from the last computed step to N. K = 0 marks an
                interval without skipped steps; an interval with skipped steps needs K >= 1. A K given for an
                interval without skipped steps has no effect (``to_official`` writes 0 there).
            num_steps: N.
        """
        n = _as_int(num_steps, "num_steps")
        steps = _check_compute_steps(compute_steps, n)
        ks = _int_list(spans, "spans")
        ends = steps[1:] + [n]
        n_intervals = len(steps) - 1
        has_final_gap = steps[-1] < n - 1
        if len(ks) not in (n_intervals, n_intervals + 1):
            raise ValueError(
                f"spans must have len(compute_steps) - 1 = {n_intervals} entries (one per interval) or "
                f"{n_intervals + 1} (also covering the final interval to N); got {len(ks)}"
            )
        if has_final_gap and len(ks) == n_intervals:
            raise ValueError(
                f"steps {steps[-1] + 1}..{n - 1} after the last computed step {steps[-1]} are skipped but spans has "
                f"no entry for that final interval: pass {n_intervals + 1} spans"
            )
        mask = [False] * n
        per_step = [0] * n
        for s in steps:
            mask[s] = True
        for j, k in enumerate(ks):
            a, b = steps[j], ends[j]
            if k < 0:
                raise ValueError(f"spans[{j}]={k} must be >= 0")
            if b - a > 1:
                if k < 1:
                    raise ValueError(
                        f"spans[{j}]=0 but interval {a}->{b} skips steps {a + 1}..{b - 1}: skipped steps need K >= 1"
                    )
                for i in range(a + 1, b):
                    per_step[i] = k
            # else: a chain edge (no skipped step); its K has no effect. The published tables sometimes carry
            # K >= 1 there (Qwen-Image-2512, B=25), so it is accepted, and to_official() writes 0.
        return cls(mask, per_step, meta=meta)

    # ------------------------------------------------------------------ views
    @property
    def num_steps(self) -> int:
        return len(self.compute)

    @property
    def budget(self) -> int:
        """B: number of computed steps."""
        return sum(self.compute)

    @property
    def speedup(self) -> float:
        """Nominal speedup N / B (transformer calls saved, bookkeeping ignored)."""
        return self.num_steps / self.budget

    @property
    def compute_steps(self) -> list[int]:
        return [i for i, c in enumerate(self.compute) if c]

    @property
    def skipped_steps(self) -> list[int]:
        return [i for i, c in enumerate(self.compute) if not c]

    @property
    def k_max(self) -> int:
        """Largest JVP span used: the trajectory depth the sampler must keep (0 when no step uses ``jvp``)."""
        return max((k for k, e in zip(self.spans, self.estimators) if e == "jvp"), default=0)

    @property
    def poly_depth(self) -> int:
        """Velocities of computed steps the sampler keeps for the polynomial estimators (p + 1, one more with a
        corrector and its nodes; 0 when none is used)."""
        from .estimators import POLY_FAMILIES, get

        used = {(e, k) for k, e in zip(self.spans, self.estimators) if e in POLY_FAMILIES}
        return max((get(e, k).retain for e, k in used), default=0)

    @property
    def is_official(self) -> bool:
        """True when every skipped step uses the paper's ``jvp`` estimator."""
        return all(e in ("", "jvp") for e in self.estimators)

    def estimator_at(self, i: int):
        """The :class:`meancache_kernels.estimators.Estimator` of skipped step ``i`` (None on a computed step)."""
        from . import estimators as est

        if self.compute[i]:
            return None
        return est.get(self.estimators[i], self.spans[i])

    def estimator_names(self) -> list[str]:
        """Per step: the estimator name (``"jvp"``, ``"taylor1"``, ...) or ``""`` on computed steps."""
        return [e if e in ("", "jvp") else f"{e}{k}" for e, k in zip(self.estimators, self.spans)]

    def should_compute(self, i: int) -> bool:
        return self.compute[i]

    def to_official(self) -> tuple[list[int], list[int]]:
        """(compute_steps, spans per interval) in the public release's format.

        Raises ValueError when a skipped step uses another estimator than the paper's ``jvp``, or when the skipped
        steps of one interval use different spans (neither is expressible there).
        """
        if not self.is_official:
            used = sorted({n for n in self.estimator_names() if n and n != "jvp"})
            raise ValueError(
                f"to_official: this schedule uses estimators {used} besides the paper's 'jvp'; the public release's "
                "format holds only jvp spans (solve with estimators=('jvp',) for a schedule it can express)"
            )
        steps = self.compute_steps
        ends = steps[1:] + ([self.num_steps] if steps[-1] < self.num_steps - 1 else [])
        out = []
        for a, b in zip(steps, ends):
            ks = set(self.spans[a + 1 : b])
            if len(ks) > 1:
                raise ValueError(f"interval {a}->{b} uses several spans {sorted(ks)}: not expressible per interval")
            out.append(ks.pop() if ks else 0)
        return steps, out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        d = {
            "format": _FORMAT,
            "version": 1 if self.is_official else _FORMAT_VERSION,
            "num_steps": self.num_steps,
            "compute": [int(c) for c in self.compute],
            "spans": list(self.spans),
        }
        if not self.is_official:
            d["estimators"] = list(self.estimators)
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        if not isinstance(d, dict):
            raise TypeError(f"schedule data must be a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a MeanCache schedule: format={d.get('format')!r}, expected {_FORMAT!r}")
        if d.get("version") not in _READ_VERSIONS:
            raise ValueError(
                f"unsupported schedule format version {d.get('version')!r}; this build reads {list(_READ_VERSIONS)}"
            )
        for key in ("num_steps", "compute", "spans"):
            if key not in d:
                raise ValueError(f"schedule data is missing the key {key!r}")
        n = _as_int(d["num_steps"], "num_steps")
        compute = _int_list(d["compute"], "compute")
        if len(compute) != n:
            raise ValueError(f"schedule data: num_steps={n} but compute has {len(compute)} entries")
        est = d.get("estimators") if d["version"] >= 2 else None
        return cls([bool(c) for c in compute], d["spans"], meta=d.get("meta"), estimators=est)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The schedule as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict())
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Schedule":
        """Parse JSON text, or read it from a file path."""
        if not isinstance(text_or_path, (str, os.PathLike)):
            raise TypeError(f"text_or_path must be JSON text or a file path, got {type(text_or_path).__name__}")
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as f:  # not JSON text: a path (FileNotFoundError if missing)
                text = f.read()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule JSON is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def __repr__(self) -> str:
        if not self.is_official:
            names = self.estimator_names()
            per = [names[a + 1] if b - a > 1 else "" for a, b in zip(self.compute_steps, self.compute_steps[1:] +
                                                                         [self.num_steps])]
            return (f"Schedule(N={self.num_steps}, B={self.budget}, compute_steps={self.compute_steps}, "
                    f"estimators_per_interval={per}, spans={list(self.spans)})")
        steps, ks = self.to_official() if self._uniform_intervals() else (self.compute_steps, None)
        extra = f", spans_per_interval={ks}" if ks is not None else f", spans={list(self.spans)}"
        return f"Schedule(N={self.num_steps}, B={self.budget}, compute_steps={steps}{extra})"

    def _uniform_intervals(self) -> bool:
        try:
            self.to_official()
            return True
        except ValueError:
            return False


def _check_estimators(estimators, comp: list[bool], sp: list[int]) -> tuple[str, ...]:
    from .estimators import FAMILIES, POLY_FAMILIES, POLY_ORDERS

    if estimators is None:
        return tuple("" if c else "jvp" for c in comp)
    if isinstance(estimators, (str, bytes)) or not isinstance(estimators, Sequence):
        raise TypeError(f"estimators must be a sequence of estimator families or None, got {type(estimators).__name__}")
    est = list(estimators)
    if len(est) != len(comp):
        raise ValueError(f"estimators must have one entry per step: len(estimators)={len(est)} != {len(comp)}")
    for i, (e, c, k) in enumerate(zip(est, comp, sp)):
        if not isinstance(e, str):
            raise TypeError(f"estimators[{i}] must be a str, got {type(e).__name__}")
        if c:
            if e != "":
                raise ValueError(f"estimators[{i}]={e!r} but step {i} is computed: computed steps take ''")
        elif e not in FAMILIES:
            raise ValueError(f"estimators[{i}]={e!r} is not an estimator family; allowed on skipped steps: {FAMILIES}")
        elif e in POLY_FAMILIES and k not in POLY_ORDERS:
            raise ValueError(f"spans[{i}]={k} is not an order of the {e!r} estimator; allowed: {POLY_ORDERS}")
    return tuple(est)


def _check_compute_steps(compute_steps: Sequence[int], num_steps: int) -> list[int]:
    n = _as_int(num_steps, "num_steps")
    if n < 1:
        raise ValueError(f"num_steps must be >= 1, got {n}")
    steps = _int_list(compute_steps, "compute_steps")
    if not steps:
        raise ValueError("compute_steps must not be empty: step 0 is always computed")
    if steps[0] != 0:
        raise ValueError(f"compute_steps must start at 0 (the first step is always computed), got {steps[0]}")
    for a, b in zip(steps, steps[1:]):
        if b <= a:
            raise ValueError(f"compute_steps must be strictly increasing, got {a} then {b}")
    if steps[-1] >= n:
        raise ValueError(f"compute_steps index {steps[-1]} is out of range for num_steps={n} (valid: 0..{n - 1})")
    return steps


# ====================================================================================================== PSSP solver
#
# The problem (DESIGN.md section 2, "PSSP"). Nodes 0..N; a schedule is a path 0 = p_0 < p_1 < ... < p_{B-1} < p_B = N
# whose first B nodes are the computed steps. Edge i -> j costs
#
#     w(i, j) = 0                                              (chain edge, j = i + 1, no skipped step)
#     w(i, j) = (min_{K in [k_lo, k_hi]} L_K(i, j)) ** gamma     (j - i - 1 skipped steps, at most max_skip)
#
# and is not allowed when every L_K(i, j) of the range is +inf. The power is computed as c * c for gamma = 2, c for
# gamma = 1 and libm's pow otherwise, identically in C++ and Python. Forced steps must lie on the path. The objective
# of a path is the float64 sum of its edge terms accumulated from the LAST edge back to the first (the order in which
# the backward dynamic programme below adds them), so every implementation gets bit-identical objectives.
#
# Deterministic tie-breaking (shared by the C++ solver, the Python reference and the tests' brute force):
#   * per edge, K is the smallest K in [k_lo, k_hi] attaining the minimum (K = 0 on chain edges);
#   * paths compare by the key (T_0, p_1, T_1, p_2, T_2, ...) in lexicographic order, where T_k is the objective of
#     the remaining path p_k -> N. So: smallest objective; on an exact tie the smallest next computed step; then
#     the smallest objective of the rest, and so on. With exact arithmetic (e.g. integer costs) this is simply the
#     lexicographically smallest list of computed steps among the optimal ones.
#
# Backward DP over (computed count r, node i): F[r][i] = best objective from computed node i to N with r computed
# nodes (i included): F[1][i] = w(i, N); F[r][i] = min over j of w(i, j) + F[r-1][j], scanning j upwards and
# replacing only on a strictly smaller value. Cost O(B * N * max_skip) after an O(N * max_skip * K) edge table.
# Rounding is monotone, so the DP minimum equals the minimum over all paths even in floating point, and the scan
# order realises the key above.

_BACKENDS_SOLVER = ("auto", "cpp", "python")
_INSTALL_HINT = (
    "the compiled extension meancache_kernels._C is not available; rebuild it with "
    "`pip install --no-build-isolation -e .` (without MEANCACHE_SKIP_EXT=1), or pass backend='python'"
)


class SolverResult:
    """One solution of the PSSP problem.

    Attributes:
        compute_steps: the B computed steps (increasing, starting at 0).
        spans: one K per edge (B values): edge ``compute_steps[b] -> compute_steps[b+1]`` (or -> N for the last);
            0 on chain edges (no skipped step).
        objective: sum over edges of the edge term, accumulated from the last edge back to the first.
        num_steps: N.
    """

    __slots__ = ("compute_steps", "spans", "objective", "num_steps")

    def __init__(self, compute_steps, spans, objective: float, num_steps: int):
        self.compute_steps = tuple(int(s) for s in compute_steps)
        self.spans = tuple(int(k) for k in spans)
        self.objective = float(objective)
        self.num_steps = int(num_steps)

    @classmethod
    def _trusted(cls, compute_steps: tuple, spans: tuple, objective: float, num_steps: int) -> "SolverResult":
        # no conversion: for values that are already tuples of Python ints and a float (the solvers' own output)
        self = object.__new__(cls)
        self.compute_steps, self.spans, self.objective, self.num_steps = compute_steps, spans, objective, num_steps
        return self

    @property
    def budget(self) -> int:
        return len(self.compute_steps)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SolverResult):
            return NotImplemented
        return (self.compute_steps, self.spans, self.objective, self.num_steps) == (
            other.compute_steps,
            other.spans,
            other.objective,
            other.num_steps,
        )

    def __hash__(self) -> int:
        return hash((self.compute_steps, self.spans, self.objective, self.num_steps))

    def to_schedule(self, meta: dict | None = None) -> Schedule:
        """The :class:`Schedule` (K of each edge given to every skipped step of that edge)."""
        return Schedule.from_official(list(self.compute_steps), list(self.spans), self.num_steps, meta=meta)

    def __repr__(self) -> str:
        return (
            f"SolverResult(N={self.num_steps}, B={self.budget}, compute_steps={list(self.compute_steps)}, "
            f"spans={list(self.spans)}, objective={self.objective!r})"
        )


class Frontier(Mapping):
    """The optimum for every feasible budget, from one DP: ``frontier[B]`` is the :class:`SolverResult` of budget B.

    A read-only mapping over the feasible budgets (ascending). ``objective`` is a float64 array [N+1] indexed by B
    (+inf for B = 0 and infeasible budgets); results are built on access from int32 arrays [N+1, N] of steps and
    spans (row B holds B values, padded with -1).
    """

    __slots__ = ("objective", "_steps", "_spans", "num_steps", "_budgets")

    def __init__(self, objective, steps, spans, num_steps: int):
        import numpy as np

        self.objective = np.asarray(objective, dtype=np.float64)
        self._steps = np.asarray(steps)
        self._spans = np.asarray(spans)
        self.num_steps = int(num_steps)
        self._budgets = (np.flatnonzero(self.objective[1:] < np.inf) + 1).tolist()

    def __getitem__(self, budget: int) -> SolverResult:
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= self.num_steps:
            raise KeyError(budget)
        obj = float(self.objective[budget])
        if not obj < float("inf"):
            raise KeyError(budget)
        return SolverResult._trusted(tuple(self._steps[budget, :budget].tolist()),
                                     tuple(self._spans[budget, :budget].tolist()), obj, self.num_steps)

    def __iter__(self):
        return iter(self._budgets)

    def __len__(self) -> int:
        return len(self._budgets)

    def __repr__(self) -> str:
        if not self._budgets:
            return f"Frontier(N={self.num_steps}, no feasible budget)"
        return f"Frontier(N={self.num_steps}, feasible budgets {self._budgets[0]}..{self._budgets[-1]})"


def _check_costs(costs, name: str = "costs"):
    import numpy as np

    if hasattr(costs, "detach"):  # torch tensor without importing torch
        costs = costs.detach().cpu().double().numpy()
    arr = np.asarray(costs)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise TypeError(f"{name} must be a real float array [K_max+1, N+1, N+1], got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 2 or arr.shape[0] < 2:
        raise ValueError(
            f"{name} must have shape [K_max+1, N+1, N+1] with K_max >= 1 and N >= 1, got {tuple(arr.shape)}"
        )
    if not (arr >= 0).all():  # one pass; NaN fails the comparison too
        if np.isnan(arr).any():
            idx = tuple(int(x) for x in np.argwhere(np.isnan(arr))[0])
            raise ValueError(f"{name} holds NaN at [K, i, j] = {idx}: use +inf for edges that are not allowed")
        idx = tuple(int(x) for x in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name} must be >= 0 (or +inf), got {arr[idx]} at [K, i, j] = {idx}")
    return arr


def _check_solver_args(costs, gamma, always_compute, max_skip, k_range):
    """Validate and normalise the arguments shared by every solver entry point."""
    arr = _check_costs(costs)
    n = arr.shape[1] - 1
    kmax = arr.shape[0] - 1
    from numbers import Real

    if isinstance(gamma, bool) or not isinstance(gamma, Real):
        raise TypeError(f"gamma must be a real number, got {gamma!r}")
    gamma = float(gamma)
    if not (gamma > 0 and gamma < float("inf")):
        raise ValueError(f"gamma must be finite and > 0, got {gamma}")
    if always_compute is None:
        always_compute = ()
    if hasattr(always_compute, "tolist"):
        always_compute = always_compute.tolist()
    if isinstance(always_compute, (str, bytes)) or not hasattr(always_compute, "__iter__"):
        raise TypeError(f"always_compute must be an iterable of step indices, got {always_compute!r}")
    forced = sorted(set(_int_list(list(always_compute), "always_compute")))
    for f in forced:
        if not 0 <= f < n:
            raise ValueError(f"always_compute holds step {f}, out of range for N={n} steps (valid: 0..{n - 1})")
    if max_skip is None:
        max_skip = n - 1
    max_skip = _as_int(max_skip, "max_skip")
    if max_skip < 0:
        raise ValueError(f"max_skip must be >= 0 (0 allows only chain edges), got {max_skip}")
    if k_range is None:
        k_lo, k_hi = 1, kmax
    else:
        if isinstance(k_range, (str, bytes)) or not isinstance(k_range, Sequence) or len(k_range) != 2:
            raise ValueError(f"k_range must be a pair (k_lo, k_hi), got {k_range!r}")
        k_lo, k_hi = _as_int(k_range[0], "k_range[0]"), _as_int(k_range[1], "k_range[1]")
        if not 1 <= k_lo <= k_hi <= kmax:
            raise ValueError(f"k_range must satisfy 1 <= k_lo <= k_hi <= K_max={kmax}, got ({k_lo}, {k_hi})")
    return arr, gamma, forced, max_skip, k_lo, k_hi


def _check_budget(budget, n: int) -> int:
    b = _as_int(budget, "budget")
    if not 1 <= b <= n:
        raise ValueError(f"budget must be in 1..N={n} (number of computed steps), got {b}")
    return b


def _infeasible(budget: int, n: int, forced, max_skip: int, k_lo: int, k_hi: int) -> ValueError:
    return ValueError(
        f"infeasible: no path 0 -> {n} with exactly budget={budget} computed steps exists with always_compute="
        f"{list(forced)}, max_skip={max_skip} and k_range=({k_lo}, {k_hi}) (an edge is allowed only when some "
        "L_K(i, j) in the K range is finite); try another budget, a larger max_skip or a wider k_range"
    )


def _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, r_max):
    """Backward DP in plain Python (the oracle). Returns (F rows, choice rows, edge weights, edge Ks, D)."""
    import math

    n = arr.shape[1] - 1
    d_max = min(max_skip + 1, n)
    inf = math.inf
    # edge table: w[i][d], kk[i][d] for j = i + d, d = 1..d_max
    w = [[inf] * (d_max + 1) for _ in range(n)]
    kk = [[0] * (d_max + 1) for _ in range(n)]
    for i in range(n):
        last = min(n, i + d_max)
        w[i][1] = 0.0
        if last >= i + 2:
            block = arr[k_lo : k_hi + 1, i, i + 2 : last + 1].tolist()
            for d in range(2, last - i + 1):
                best, best_k = inf, 0
                for t in range(k_hi - k_lo + 1):
                    c = block[t][d - 2]
                    if c < best:
                        best, best_k = c, k_lo + t
                if best < inf:
                    w[i][d] = best * best if gamma == 2.0 else best if gamma == 1.0 else math.pow(best, gamma)
                    kk[i][d] = best_k
    forced_set = set(forced)
    nf = [n] * n  # next forced step after i (or N)
    nxt_forced = n
    for i in range(n - 1, -1, -1):
        nf[i] = nxt_forced
        if i in forced_set:
            nxt_forced = i
    rows = [None, [inf] * n]
    choice = [None, None]
    f1 = rows[1]
    for i in range(n):
        d = n - i
        if d <= d_max and nf[i] == n:
            f1[i] = w[i][d]
    for r in range(2, r_max + 1):
        prev = rows[r - 1]
        cur = [inf] * n
        ch = [-1] * n
        for i in range(n - r + 1):
            best, arg = inf, -1
            wi = w[i]
            hi = min(i + d_max, nf[i], n - r + 1)  # the rest needs r - 1 nodes in j..n-1
            for j in range(i + 1, hi + 1):
                c = wi[j - i] + prev[j]
                if c < best:
                    best, arg = c, j
            cur[i], ch[i] = best, arg
        rows.append(cur)
        choice.append(ch)
    return rows, choice, w, kk


def _py_path(rows, choice, w, kk, n, budget):
    steps, ks = [0], []
    i = 0
    for r in range(budget, 1, -1):
        j = choice[r][i]
        steps.append(j)
        ks.append(kk[i][j - i])
        i = j
    ks.append(kk[i][n - i])
    return SolverResult._trusted(tuple(steps), tuple(ks), rows[budget][0], n)


def solve_reference(costs, budget: int, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                    k_range: tuple[int, int] | None = None) -> SolverResult:
    """Pure-Python PSSP solver: the oracle of the C++ solver and the fallback when ``meancache_kernels._C`` is missing.

    Args:
        costs: float array [K_max+1, N+1, N+1]; ``costs[K, i, j]`` is L_K(i, j), +inf where not allowed (K = 0 unused).
        budget: B, number of computed steps (1..N); step 0 is always computed.
        gamma: exponent > 0 of each edge's cost in the objective.
        always_compute: steps that must be computed (0 is computed anyway).
        max_skip: longest run of skipped steps per edge (edge i -> j allowed when j - i - 1 <= max_skip);
            None: no limit.
        k_range: ``(k_lo, k_hi)``, the spans K allowed; None: 1..K_max.

    Returns:
        :class:`SolverResult`. Ties follow the rule described above ``SolverResult`` in this module.

    Raises:
        ValueError on invalid input or when no path with exactly ``budget`` computed steps exists.
    """
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    budget = _check_budget(budget, n)
    rows, choice, w, kk = _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, budget)
    if not rows[budget][0] < float("inf"):
        raise _infeasible(budget, n, forced, max_skip, k_lo, k_hi)
    return _py_path(rows, choice, w, kk, n, budget)


def frontier_reference(costs, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                       k_range: tuple[int, int] | None = None) -> Frontier:
    """Pure-Python frontier: the optimum for every feasible budget B = 1..N in one DP (a :class:`Frontier`)."""
    import numpy as np

    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    rows, choice, w, kk = _py_dp(arr, gamma, forced, max_skip, k_lo, k_hi, n)
    objective = np.full(n + 1, np.inf)
    steps = np.full((n + 1, n), -1, dtype=np.int32)
    spans = np.full((n + 1, n), -1, dtype=np.int32)
    for b in range(1, n + 1):
        if rows[b][0] < float("inf"):
            r = _py_path(rows, choice, w, kk, n, b)
            objective[b] = r.objective
            steps[b, :b] = r.compute_steps
            spans[b, :b] = r.spans
    return Frontier(objective, steps, spans, n)


def _load_ext():
    import importlib

    try:
        return importlib.import_module("meancache_kernels._C")
    except ImportError:
        return None


def _pick_backend(backend: str):
    if backend not in _BACKENDS_SOLVER:
        raise ValueError(f"backend must be one of {_BACKENDS_SOLVER}, got {backend!r}")
    if backend == "python":
        return None
    ext = _load_ext()
    if ext is None and backend == "cpp":
        raise ImportError(f"backend='cpp': {_INSTALL_HINT}")
    return ext


def solve_costs(costs, budget: int, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                k_range: tuple[int, int] | None = None, backend: str = "auto") -> SolverResult:
    """PSSP on a raw cost array: the C++ solver (``backend="cpp"``), the Python reference (``"python"``), or the
    C++ one when compiled and the Python one otherwise (``"auto"``). Same arguments as :func:`solve_reference`;
    both backends return identical results (objective bits included)."""
    ext = _pick_backend(backend)
    if ext is None:
        return solve_reference(costs, budget, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                               k_range=k_range)
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    n = arr.shape[1] - 1
    budget = _check_budget(budget, n)
    try:
        r = ext.solve(arr, budget, gamma, forced, max_skip, k_lo, k_hi)
    except ValueError as e:
        if str(e).startswith("infeasible"):  # same message as the Python reference
            raise _infeasible(budget, n, forced, max_skip, k_lo, k_hi) from None
        raise
    return SolverResult(r["steps"], r["ks"], r["objective"], n)


def frontier_costs(costs, *, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                   k_range: tuple[int, int] | None = None, backend: str = "auto") -> Frontier:
    """The optimum for every feasible budget in one DP (a :class:`Frontier`, ``frontier[B] -> SolverResult``);
    backends as in :func:`solve_costs`."""
    ext = _pick_backend(backend)
    if ext is None:
        return frontier_reference(costs, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                                  k_range=k_range)
    arr, gamma, forced, max_skip, k_lo, k_hi = _check_solver_args(costs, gamma, always_compute, max_skip, k_range)
    objective, steps, spans = ext.frontier(arr, gamma, forced, max_skip, k_lo, k_hi)
    return Frontier(objective, steps, spans, arr.shape[1] - 1)


def _profile_parts(profile):
    from .calibrate import Profile

    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    return profile.costs, dict(profile.meta or {})


def _solver_meta(result: SolverResult, gamma, always_compute, max_skip, k_range, solver: str, pmeta: dict,
                 edge_cost: str = "velocity") -> dict:
    meta = {
        "source": "pssp",
        "edge_cost": edge_cost,
        "solver": solver,
        "objective": result.objective,
        "gamma": float(gamma),
        "always_compute": sorted({0, *[int(x) for x in (always_compute or ())]}),
        "max_skip": max_skip,
        "k_range": list(k_range) if k_range is not None else None,
        "estimators": ["jvp"],
    }
    for key in ("model", "resolution", "dtype", "estimator", "num_samples"):
        if key in pmeta:
            meta[f"profile_{key}"] = pmeta[key]
    return meta


EDGE_COSTS = ("velocity", "state")


def _estimator_names(profile, estimators) -> tuple[str, ...]:
    have = profile.estimators
    if estimators is None:  # the polynomial estimators when calibrated: see solve()'s docstring for why not jvp
        return profile.poly_estimators or ("jvp",)
    if estimators == "all":
        return have
    if isinstance(estimators, str):
        estimators = (estimators,)
    if not isinstance(estimators, (list, tuple)) or not estimators:
        raise ValueError(f"estimators must be None or a non-empty list/tuple of estimator names, got {estimators!r}")
    from .estimators import parse

    for name in estimators:
        parse(name)
        if name not in have:
            raise ValueError(f"estimators: the profile has no costs for {name!r}; it has {list(have)} (calibrate "
                             "with that estimator, e.g. mck.calibrate(..., estimators=None) for all)")
    return tuple(dict.fromkeys(estimators))


def _k_bounds(profile, k_range) -> tuple[int, int]:
    if k_range is None:
        return 1, profile.k_max
    _check_solver_args(profile.costs, 2.0, (0,), None, k_range)  # the same validation as the paper's solver
    return int(k_range[0]), int(k_range[1])


def _edge_cost(edge_cost, names) -> str:
    if edge_cost is None:
        return "velocity" if names == ("jvp",) else "state"
    if edge_cost not in EDGE_COSTS:
        raise ValueError(f"edge_cost must be one of {EDGE_COSTS} or None, got {edge_cost!r}")
    return edge_cost


def state_costs(costs, sigmas):
    """``costs[K, i, j] * (s_i - s_j)``: the paper's average-velocity error turned into the state error
    ``mean |zhat_j - z_j|`` of the edge (finite entries only; +inf stays +inf)."""
    import numpy as np

    s = np.asarray(sigmas, dtype=np.float64)
    arr = np.array(costs, dtype=np.float64, copy=True)
    scale = np.abs(s[:, None] - s[None, :])[None]
    np.multiply(arr, np.broadcast_to(scale, arr.shape), out=arr, where=np.isfinite(arr))
    return arr


def _states_setup(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost):
    from . import solver

    names = _estimator_names(profile, estimators)
    edge_cost = _edge_cost(edge_cost, names)
    if names == ("jvp",):
        return None, edge_cost
    _, gamma, forced, max_skip_checked, _, _ = _check_solver_args(profile.costs, gamma, always_compute,
                                                                  profile.max_skip if max_skip is None else max_skip,
                                                                  None)
    k_lo, k_hi = _k_bounds(profile, k_range)
    table = solver.edge_table(profile, gamma, names, k_lo, k_hi, max_skip_checked, edge_cost=edge_cost)
    meta = {
        "source": "pssp",
        "edge_cost": edge_cost,
        "gamma": float(gamma),
        "always_compute": sorted({0, *forced}),
        "max_skip": max_skip_checked,
        "k_range": list(k_range) if k_range is not None else None,
        "estimators": list(names),
    }
    for key in ("model", "resolution", "dtype", "num_samples"):
        if key in (profile.meta or {}):
            meta[f"profile_{key}"] = profile.meta[key]
    return (table, forced, meta), edge_cost


def solve(profile, budget: int, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
          k_range: tuple[int, int] | None = None, backend: str = "auto", estimators=None,
          edge_cost: str | None = None) -> Schedule:
    """The optimal MeanCache schedule with ``budget`` computed steps for a calibration :class:`Profile`.

    Minimises ``sum over edges (min over candidates of the edge cost) ** gamma`` over paths 0 -> N with exactly
    ``budget`` computed steps (DESIGN.md sections 2 and 2b, PSSP), exactly, with the C++ solver (or the Python
    reference when the extension is missing or ``backend="python"``). The candidates of an edge are the paper's
    ``jvp`` with every allowed K and each selected polynomial estimator (:mod:`meancache_kernels.estimators`),
    whose cost depends on the computed nodes before the edge (:mod:`meancache_kernels.solver`).

    Args:
        profile: the calibration profile (edge costs of N steps).
        budget: B, number of computed steps, 1..N.
        gamma: exponent > 0; gamma > 1 penalises single large-error edges.
        always_compute: steps forced to be computed (step 0 always is).
        max_skip: longest run of consecutive skipped steps; None: as calibrated (``profile.max_skip``).
        k_range: ``(k_lo, k_hi)``, the allowed JVP spans; None: every calibrated span.
        backend: ``"auto"``, ``"cpp"`` or ``"python"``.
        estimators: the estimator names allowed on skipped steps. ``("jvp",)``: the paper's PSSP exactly (the
            schedule it has always given). ``"all"``: every estimator the profile has. None (default): the
            polynomial estimators the profile has (``profile.poly_estimators``; ``("jvp",)`` for a profile without
            them). jvp is left out by default because its calibrated cost is measured with the true full-step
            history before the edge, which a schedule that skips steps does not have: mixed in, its edges look
            cheaper than they run (bench/RESULTS.md, "Estimators": on the shipped model PSSP over every estimator
            gave 62.2 / 56.6 / 44.9 dB at B = 25 / 17 / 10, the polynomial ones alone 61.4 / 59.8 / 57.6 dB). The
            polynomial estimators read only computed velocities, whose history the DP state carries exactly.
        edge_cost: ``"velocity"``: the paper's edge cost L (the mean error of the average velocity over the edge);
            ``"state"``: L * (s_i - s_j), the mean error of the state at the edge's end, which adds up along a path
            as the final error does. None: ``"velocity"`` for ``estimators=("jvp",)`` (the paper), ``"state"``
            otherwise (on the analytic flows and the shipped model it gave equal or lower final error at most
            budgets, and never the large failures of ``"velocity"``; bench/RESULTS.md).

    Returns:
        The :class:`Schedule`; its ``meta`` records objective, gamma, solver, estimators and the constraints.
    """
    costs, pmeta = _profile_parts(profile)
    setup, edge_cost = _states_setup(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost)
    if setup is not None:
        from .solver import solve_states

        table, forced, meta = setup
        _pick_backend(backend)
        return solve_states(table, _check_budget(budget, profile.num_steps), forced, meta, backend=backend)
    if edge_cost == "state":
        costs = state_costs(costs, profile.sigmas)
    if max_skip is None:
        max_skip = profile.max_skip  # as calibrated (longer edges are +inf anyway)
    ext = _pick_backend(backend)
    solver = "python" if ext is None else "cpp"
    res = solve_costs(costs, budget, gamma=gamma, always_compute=always_compute, max_skip=max_skip,
                      k_range=k_range, backend=solver)
    return res.to_schedule(_solver_meta(res, gamma, always_compute, max_skip, k_range, solver, pmeta, edge_cost))


def solve_frontier(profile, gamma: float = 2.0, always_compute=(0,), max_skip: int | None = None,
                   k_range: tuple[int, int] | None = None, backend: str = "auto", estimators=None,
                   edge_cost: str | None = None):
    """:func:`solve` for every feasible budget at once (one DP): a read-only mapping ``{B: Schedule}``, objective in
    each ``meta``; each Schedule is built on first access."""
    from .solver import LazyFrontier, frontier_states

    costs, pmeta = _profile_parts(profile)
    setup, edge_cost = _states_setup(profile, gamma, always_compute, max_skip, k_range, estimators, edge_cost)
    if setup is not None:
        table, forced, meta = setup
        _pick_backend(backend)
        return frontier_states(table, forced, meta, backend=backend)
    if edge_cost == "state":
        costs = state_costs(costs, profile.sigmas)
    if max_skip is None:
        max_skip = profile.max_skip  # as calibrated (longer edges are +inf anyway)
    ext = _pick_backend(backend)
    solver = "python" if ext is None else "cpp"
    res = frontier_costs(costs, gamma=gamma, always_compute=always_compute, max_skip=max_skip, k_range=k_range,
                         backend=solver)
    return LazyFrontier(
        list(res), lambda b: (r := res[b]).to_schedule(_solver_meta(r, gamma, always_compute, max_skip, k_range,
                                                                     solver, pmeta, edge_cost)))


def fit_schedule(schedule: Schedule, sigmas_from, sigmas_to, *, warn: bool = True) -> Schedule:
    """Carry a schedule made for one sigma grid over to another one (e.g. another N), matching steps by sigma.

    Rule: every computed step c of ``schedule`` becomes the target step whose sigma is nearest to
    ``sigmas_from[c]`` (ties: the smaller index); step 0 stays computed and duplicates merge. Every target interval
    between consecutive computed steps takes the span K of the source interval that contains the sigma of its first
    skipped step (the source interval [s_b, s_a] of consecutive computed source steps a < b, or the final one to 0);
    a chain source interval (nothing skipped there) gives K = 1. K is kept in steps, not rescaled.

    The result was not optimised for the target grid (calibrate and :func:`solve` at the target N for that), so a
    ``UserWarning`` is issued unless the grids are identical (then ``schedule`` is returned unchanged) or
    ``warn=False``.
    """
    import warnings

    from ._utils import as_sigmas

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a meancache_kernels.Schedule, got {type(schedule).__name__}")
    s_from = as_sigmas(sigmas_from, schedule.num_steps, name="sigmas_from")
    s_to = as_sigmas(sigmas_to, name="sigmas_to")
    if s_from == s_to:
        return schedule
    n_to = len(s_to) - 1
    if warn:
        warnings.warn(
            f"fit_schedule: carrying a schedule for N={schedule.num_steps} steps over to N={n_to} by sigma; it is not "
            "optimal for the new grid (calibrate and solve at the target N for that)",
            UserWarning,
            stacklevel=2,
        )

    def nearest(s: float) -> int:
        best, arg = float("inf"), 0
        for t in range(n_to):  # computed steps live in 0..N-1
            d = abs(s_to[t] - s)
            if d < best:
                best, arg = d, t
        return arg

    src_steps = schedule.compute_steps
    steps = sorted({0, *[nearest(s_from[c]) for c in src_steps]})
    # (estimator, K) of each source interval (a -> next computed or N); a chain interval gives ("jvp", 1)
    src_ends = src_steps[1:] + [schedule.num_steps]
    src_k = [(schedule.estimators[a + 1], schedule.spans[a + 1]) if b - a > 1 else ("jvp", 1)
             for a, b in zip(src_steps, src_ends)]

    def k_at(s: float) -> tuple[str, int]:
        # the source interval [s_from[b], s_from[a]] containing s: the last computed source step a with s_from[a] >= s
        k = src_k[0]
        for a, ka in zip(src_steps, src_k):
            if s_from[a] >= s:
                k = ka
        return k

    ends = steps[1:] + [n_to]
    mask, est, ks = [False] * n_to, [""] * n_to, [0] * n_to
    for a, b in zip(steps, ends):
        mask[a] = True
        if b - a > 1:
            fam, k = k_at(s_to[a + 1])
            est[a + 1 : b] = [fam] * (b - a - 1)
            ks[a + 1 : b] = [k] * (b - a - 1)
    meta = dict(schedule.meta or {})
    meta["fitted_from_num_steps"] = schedule.num_steps
    return Schedule(mask, ks, meta=meta, estimators=est)
