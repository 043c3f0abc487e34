"""MeanCache schedules: which steps run the transformer, and which JVP span K each skipped step uses.

A schedule over N steps is a boolean ``compute[i]`` (``compute[0]`` is always True) and, for every skipped
step i, a span ``K_i >= 1`` (0 is stored for computed steps). The public MeanCache release writes a schedule as
the list of computed steps plus one K per interval between consecutive computed steps, 0 meaning "no skipped
step" (a "chain" edge); :meth:`Schedule.from_official` and :meth:`Schedule.to_official` convert.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["Schedule"]

_FORMAT = "meancache-schedule"
_FORMAT_VERSION = 1


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
    """Which steps to compute and the JVP span of every skipped step.

    Args:
        compute: N booleans, ``compute[i]`` True when step i runs the transformer. ``compute[0]`` must be True.
        spans: N integers; ``spans[i] >= 1`` is the JVP span K of skipped step i and ``spans[i] == 0`` on
            computed steps. ``None`` means K = 1 (plain reuse) on every skipped step.
        meta: free-form metadata (source, model, solver objective, ...), kept through JSON round trips.
    """

    __slots__ = ("compute", "spans", "meta")

    def __init__(self, compute: Sequence[bool], spans: Sequence[int] | None = None, meta: dict | None = None):
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
                raise ValueError(f"spans must have one entry per step: len(spans)={len(sp)} != len(compute)={len(comp)}")
        for i, (c, k) in enumerate(zip(comp, sp)):
            if c and k != 0:
                raise ValueError(f"spans[{i}]={k} but step {i} is computed: computed steps take span 0")
            if not c and k < 1:
                raise ValueError(f"spans[{i}]={k} but step {i} is skipped: skipped steps need a span K >= 1")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
        object.__setattr__(self, "compute", tuple(comp))
        object.__setattr__(self, "spans", tuple(sp))
        object.__setattr__(self, "meta", dict(meta) if meta else None)

    def __setattr__(self, name, value):
        raise AttributeError("Schedule is immutable")

    def __eq__(self, other) -> bool:
        # meta (provenance) does not take part in equality: two schedules are equal when they run the same steps.
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.compute == other.compute and self.spans == other.spans

    def __hash__(self) -> int:
        return hash((self.compute, self.spans))

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
        """Largest span used: the history depth the sampler must keep (0 when nothing is skipped)."""
        return max(self.spans)

    def should_compute(self, i: int) -> bool:
        return self.compute[i]

    def to_official(self) -> tuple[list[int], list[int]]:
        """(compute_steps, spans per interval) in the public release's format.

        Raises ValueError when the skipped steps of one interval use different spans (not expressible there).
        """
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
            "version": _FORMAT_VERSION,
            "num_steps": self.num_steps,
            "compute": [int(c) for c in self.compute],
            "spans": list(self.spans),
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        if not isinstance(d, dict):
            raise TypeError(f"schedule data must be a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a MeanCache schedule: format={d.get('format')!r}, expected {_FORMAT!r}")
        if d.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported schedule format version {d.get('version')!r}; this build reads {_FORMAT_VERSION}")
        for key in ("num_steps", "compute", "spans"):
            if key not in d:
                raise ValueError(f"schedule data is missing the key {key!r}")
        if len(d["compute"]) != d["num_steps"]:
            raise ValueError(f"schedule data: num_steps={d['num_steps']} but compute has {len(d['compute'])} entries")
        return cls([bool(c) for c in d["compute"]], d["spans"], meta=d.get("meta"))

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
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as f:
                text = f.read()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule JSON is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def __repr__(self) -> str:
        steps, ks = self.to_official() if self._uniform_intervals() else (self.compute_steps, None)
        extra = f", spans_per_interval={ks}" if ks is not None else f", spans={list(self.spans)}"
        return f"Schedule(N={self.num_steps}, B={self.budget}, compute_steps={steps}{extra})"

    def _uniform_intervals(self) -> bool:
        try:
            self.to_official()
            return True
        except ValueError:
            return False


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
