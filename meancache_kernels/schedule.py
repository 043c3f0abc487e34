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
from collections.abc import Sequence

from .checks import as_int, as_sigmas, check_budget, int_list

__all__ = ["Schedule", "fit_schedule"]

_FORMAT = "meancache-schedule"
_FORMAT_VERSION = 2  # version 1 (before estimators) is read as an all-"jvp" schedule, and still written for one
_READ_VERSIONS = (1, 2)


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
            sp = int_list(spans, "spans")
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
        n = as_int(num_steps, "num_steps")
        if n < 1:
            raise ValueError(f"num_steps must be >= 1, got {n}")
        return cls([True] * n)

    @classmethod
    def from_compute_steps(cls, compute_steps: Sequence[int], num_steps: int, span: int = 1) -> "Schedule":
        """Computed steps given by index; every skipped step uses the same span ``span``."""
        steps = _check_compute_steps(compute_steps, num_steps)
        k = as_int(span, "span")
        if k < 1:
            raise ValueError(f"span must be >= 1, got {k}")
        n = as_int(num_steps, "num_steps")
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

        n = as_int(num_steps, "num_steps")
        if n < 1:
            raise ValueError(f"num_steps must be >= 1, got {n}")
        b = check_budget(budget, n)
        family, param = est.parse(estimator)
        if family == "jvp":
            param = as_int(span, "span")
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
        n = as_int(num_steps, "num_steps")
        steps = _check_compute_steps(compute_steps, n)
        ks = int_list(spans, "spans")
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
        n = as_int(d["num_steps"], "num_steps")
        compute = int_list(d["compute"], "compute")
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
    n = as_int(num_steps, "num_steps")
    if n < 1:
        raise ValueError(f"num_steps must be >= 1, got {n}")
    steps = int_list(compute_steps, "compute_steps")
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


def fit_schedule(schedule: Schedule, sigmas_from, sigmas_to, *, warn: bool = True) -> Schedule:
    """Carry a schedule made for one sigma grid over to another one (e.g. another N), matching steps by sigma.

    Rule: every computed step c of ``schedule`` becomes the target step whose sigma is nearest to
    ``sigmas_from[c]`` (ties: the smaller index); step 0 stays computed and duplicates merge. Every target interval
    between consecutive computed steps takes the span K of the source interval that contains the sigma of its first
    skipped step (the source interval [s_b, s_a] of consecutive computed source steps a < b, or the final one to 0);
    a chain source interval (nothing skipped there) gives jvp K = 1 for a schedule of the paper's estimator and the
    estimator of the nearest source interval that skips otherwise. K is kept in steps, not rescaled.

    The result was not optimised for the target grid (calibrate and :func:`solve` at the target N for that), so a
    ``UserWarning`` is issued unless the grids are identical (then ``schedule`` is returned unchanged) or
    ``warn=False``.
    """
    import warnings

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
    src_k = [(schedule.estimators[a + 1], schedule.spans[a + 1]) if b - a > 1 else None
             for a, b in zip(src_steps, src_ends)]
    # a chain source interval (nothing skipped there): jvp K = 1 for the paper's schedules; otherwise the estimator
    # of the nearest interval that skips (the previous one first), so a polynomial schedule stays polynomial
    skipping = [k for k, e in enumerate(src_k) if e is not None]
    for k, e in enumerate(src_k):
        if e is None:
            near = min(skipping, key=lambda t: (abs(t - k), t > k)) if skipping and not schedule.is_official else None
            src_k[k] = src_k[near] if near is not None else ("jvp", 1)

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


# The solver lived in this module before meancache_kernels.solver: its names still resolve here, with a warning.
_MOVED = ("SolverResult", "Frontier", "solve", "solve_frontier", "solve_costs", "frontier_costs", "solve_reference",
          "frontier_reference", "state_costs", "EDGE_COSTS")


def __getattr__(name: str):
    if name in _MOVED:
        import warnings

        from . import solver

        warnings.warn(f"meancache_kernels.schedule.{name} moved to meancache_kernels.solver.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(solver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
