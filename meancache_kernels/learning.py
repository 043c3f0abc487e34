"""The one line that sees the model: :class:`MeanCache` learns a schedule from the first generation.

``mc = MeanCache(budget=B)`` then ``mc.sample(model_fn, z, sigmas)`` as often as wanted. The first generation at a
given (N, sigmas, per-sample latent shape, sampler) computes every step: its result is the exact N-step one, and its
trajectory is what the schedule is learnt from (no other model call). Every later generation at that key makes
exactly B model calls. What was learnt can be saved and loaded (:meth:`MeanCache.save`, :meth:`MeanCache.load`, or
``cache_dir=``), so the learning happens once per model and resolution. ``learn=False`` is the blind rule
(:func:`meancache_kernels.default_schedule`, evenly spaced) with no learning generation.

The decision rule (:func:`learn_schedule`), chosen on the analytic flows of :mod:`meancache_kernels.testing`
(bench/studies/learned_default.py; bench/RESULTS.md, "The one line that sees the model"):

- the learning trajectory gives the regime: an **early phase** when the first 10/28 of the steps hold at least a
  third of the output's total change ``c_i = ||v_i - v_{i-1}|| / mean_j ||v_j||`` (measured on single trajectories of
  the flows: 0.35-0.75 with an early phase, 0.03-0.27 without; the per-step ratio of
  :mod:`meancache_kernels.dynamics` divides by ||v_{i-1}||, which swings where the output norm dips) **and** the
  output norm grows by at least 10 % over those steps (``EARLY_GROWTH_MIN``; FLUX.1: +86 %, the natural tiny model
  +58 to +110 %, the power-law flows +14 to +160 %). The trained tiny models without FLUX.1's dynamics hold 0.30-0.49
  of their change early but their norm grows by under 5 %: on them the warped placement below lost up to 3.1 dB to
  the even rule, so they are smooth;
- early phase, B >= N/3: the default rule's computed steps warped towards the start (``Rule.warp``), the more
  the larger the early share: ``warp = 1 + 1.25 (share - 0.2)`` (share 0.6 on the natural tiny model: 1.5), with
  the default rule's estimators. On the natural tiny model this beat placing the steps by the change density itself
  (``density_schedule``: noisy from one trajectory) by 1-17 dB, and on the analytic flows evenly spaced steps lost
  15-45 dB to both;
- early phase, B < N/3, and the output norm grows by more than 20 % over those first steps (as FLUX.1's does):
  the paper's PSSP with its jvp estimator on the profile of the one learning trajectory (the polynomial estimators
  where the sampler forbids jvp); its dense-start schedule held up best at long gaps on such flows; with a growth
  of 10-20 %, the warped placement above;
- early phase under a multistep sampler (UniPC, DPM-Solver++, Adams: ``sampler="multistep"``): PSSP over the
  polynomial estimators it allows, on the one trajectory's profile, at every budget. The warp's slope was chosen
  under Euler; under UniPC 2 on the natural tiny model the warped placement was 14.9 dB above the blind multistep
  rule at 25 of 50 and 2.2 dB below it at 17, while PSSP was 6-8 dB above it at 25, 17 and 10 of 50
  (bench/RESULTS.md, "Under UniPC 2");
- smooth: the schedule among (even rule, PSSP over the polynomial estimators, the change-density placement) with
  the lowest end-to-end error when **replayed** on the learning trajectory (computed steps take the recorded
  velocity, skipped ones the estimate: no model call), and the even rule unless the replay puts the other at least
  ``REPLAY_MARGIN_DB`` (10 dB) ahead of it. Replay cannot see how the model answers a latent that has left the
  recorded trajectory: on the trained tiny models it promised 1-8 dB for PSSP and change density that turned into
  losses of up to 3.7 dB, while on late-deciding mixtures its promised 14-37 dB gains were real (+15 to +28 dB).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import as_sigmas, check_budget, check_ops_backend, check_solver_backend
from .default_rule import (
    DEFAULT_RULE,
    MULTISTEP_RULE,
    SAMPLERS,
    _check_allowed,
    default_schedule,
    rule_schedule,
    schedule_from_steps,
)
from .dynamics import Signature, signature_from_velocities
from .schedule import Schedule

__all__ = ["MeanCache", "Learned", "learn_schedule", "density_schedule", "replay", "output_changes", "early_share",
           "early_growth", "trajectory_key", "EARLY_PHASE_SHARE", "EARLY_GROWTH_MIN", "EARLY_GROWTH_JVP",
           "REPLAY_MARGIN_DB"]

# The first 10/28 of the steps mark an early phase when they hold this share of the output's total change.
EARLY_PHASE_SHARE = 1 / 3
# ... and the output norm grows by at least this factor over them (FLUX.1: 1.86).
EARLY_GROWTH_MIN = 1.1
# Below B = N/3 the paper's jvp PSSP is used when the output norm grows by this factor over the first steps.
EARLY_GROWTH_JVP = 1.2
# In the smooth regime a schedule other than the even rule is taken when its replayed error is this much lower.
REPLAY_MARGIN_DB = 10.0
# In an early phase the computed steps are the default rule's warped towards the start, the more so the larger the
# early share: warp = 1 + WARP_SLOPE (share - WARP_ZERO), at most WARP_MAX (default_rule.Rule.warp).
WARP_SLOPE, WARP_ZERO, WARP_MAX = 1.25, 0.2, 1.8
DENSITY_EXPONENT = 0.5  # u grows as the relative change to this power ...
DENSITY_MIX = 0.5  # ... mixed half and half with even spacing
_FORMAT = "meancache-learned"
_FORMAT_VERSION = 1


def early_growth(signature: Signature) -> float:
    """The output-norm growth over the first round(10/28 N) steps: FLUX.1's prod10 at N = 28, comparable at any N."""
    return float(np.prod(signature.ratios[1:max(1, round(signature.num_steps * 10 / 28)) + 1]))


def output_changes(v: torch.Tensor) -> list[float]:
    """``c_i = ||v_i - v_{i-1}|| / mean_j ||v_j||`` per step (c_0 = 0), averaged over the samples of ``v`` [N, S, ...]:
    how much the output changes at each step, on one scale for the whole trajectory."""
    flat = v.detach().reshape(v.shape[0], v.shape[1], -1).double()
    scale = flat.norm(dim=2).mean(0).clamp_min(1e-30)  # [S]
    d = (flat[1:] - flat[:-1]).norm(dim=2) / scale  # [N-1, S]
    return [0.0] + d.mean(1).tolist()


def early_share(changes) -> float:
    """The share of the total change (:func:`output_changes`) made in the first round(10/28 N) steps."""
    c = np.asarray(changes, dtype=np.float64)
    k = max(1, round(len(c) * 10 / 28))
    total = c[1:].sum()
    return float(c[1:k + 1].sum() / total) if total > 0 else 0.0


def density_steps(changes, budget: int) -> list[int]:
    """B computed steps (0 and N - 1 included) evenly spaced in u = cumsum(density), density = DENSITY_MIX +
    (1 - DENSITY_MIX) c^q / mean(c^q) with c the per-step change of the output (:func:`output_changes`; c_0 := c_1)."""
    c = np.asarray(changes, dtype=np.float64).copy()
    n = len(c)
    if budget >= n:
        return list(range(n))
    if n > 1:
        c[0] = c[1]
    d = np.maximum(c, 1e-12) ** DENSITY_EXPONENT
    d = DENSITY_MIX + (1.0 - DENSITY_MIX) * d / d.mean()
    u = np.concatenate([[0.0], np.cumsum(d)])[:n]  # u[i]: the coordinate at the start of step i
    if budget == 1:
        return [0]
    targets = u[n - 1] * np.arange(1, budget - 1) / (budget - 1)
    steps = [0] + [int(round(float(x))) for x in np.interp(targets, u, np.arange(n))] + [n - 1]
    for k in range(1, budget - 1):  # strictly increasing, room left for the steps after
        steps[k] = min(max(steps[k], steps[k - 1] + 1), n - budget + k)
    return steps


def density_schedule(sigmas, budget: int, changes, *, estimators=None, sampler: str = "euler") -> Schedule:
    """The change-density placement (:func:`density_steps`) with the default rule's estimators."""
    s = as_sigmas(sigmas)
    n = len(s) - 1
    b = check_budget(budget, n)
    if len(changes) != n:
        raise ValueError(f"changes must hold N={n} values, got {len(changes)}")
    rule = DEFAULT_RULE if sampler == "euler" else MULTISTEP_RULE
    meta = {"source": "learned", "rule": "change-density"}
    return schedule_from_steps(density_steps(changes, b), n, rule, _check_allowed(estimators), meta)


def replay(schedule: Schedule, z: torch.Tensor, v: torch.Tensor, sigmas, *, backend: str = "auto") -> torch.Tensor:
    """The final latent of ``schedule`` run on a recorded trajectory: computed step i takes the recorded ``v[i]``,
    a skipped one the schedule's estimate (no model call). ``z`` [N+1, S, ...] (z[0] is read), ``v`` [N, S, ...]."""
    from .cache import MeanCacheState

    state = MeanCacheState(schedule, sigmas, backend=backend)
    x = z[0]
    for i in range(schedule.num_steps):
        if state.should_compute(i):
            x = state.step(i, x, v[i].to(x.dtype))
        else:
            _, x = state.skip(i, x)
    return x


def _final_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    a, b = x.reshape(x.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).mean())


def learn_schedule(z: torch.Tensor, v: torch.Tensor, sigmas, budget: int, *, sampler: str = "euler", estimators=None,
                   backend: str = "auto", solver_backend: str = "auto") -> tuple[Schedule, dict]:
    """The schedule of ``budget`` computed steps learnt from one full-step trajectory (module docstring's rule).

    Args:
        z: [N+1, S, ...] the states (z[0] the initial latents, z[N] the result), v: [N, S, ...] the velocities used.
        sigmas: the N + 1 sigmas; budget: B.
        sampler: ``"euler"`` or ``"multistep"`` (what takes the estimate; picks the estimators allowed).
        estimators: the estimator names skipped steps may use (None: every one the sampler allows).

    Returns:
        ``(schedule, info)``; ``info`` holds ``regime``, ``early_growth``, ``choice`` and, for the smooth regime,
        the replayed relative error of each candidate (``replay``).
    """
    from .calibration import profile_from_trajectories
    from .solver import solve

    s = as_sigmas(sigmas)
    n = len(s) - 1
    b = check_budget(budget, n)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    if not isinstance(z, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError("z and v must be torch tensors")
    if z.shape[0] != n + 1 or v.shape[0] != n or z.shape[1:] != v.shape[1:]:
        raise ValueError(f"z must be [N+1={n + 1}, S, ...] and v [N={n}, S, ...] of the same sample shape, got "
                         f"{tuple(z.shape)} and {tuple(v.shape)}")
    poly = _check_allowed(estimators)
    if sampler == "multistep":
        poly = tuple(e for e in poly if e in ("taylor1", "taylor2")) or ("taylor1",)
    jvp_ok = sampler == "euler" and (estimators is None or "jvp" in estimators)
    changes = output_changes(v)
    share = early_share(changes)
    growth = early_growth(signature_from_velocities(list(v)))
    early = share >= EARLY_PHASE_SHARE and growth >= EARLY_GROWTH_MIN
    info = {"regime": "early phase" if early else "smooth", "early_share": round(share, 4),
            "early_growth": round(growth, 4)}
    if b >= n:
        return Schedule.full(n), dict(info, choice="every step")
    if early and sampler == "euler" and (3 * b >= n or growth < EARLY_GROWTH_JVP):
        warp = min(max(1.0 + WARP_SLOPE * (share - WARP_ZERO), 1.0), WARP_MAX)
        rule = dataclasses.replace(DEFAULT_RULE if sampler == "euler" else MULTISTEP_RULE, warp=round(warp, 3))
        sched = rule_schedule(s, b, rule, estimators=poly)
        return sched, dict(info, choice=f"warp {warp:.2f}")
    profile = profile_from_trajectories([(z, v)], s, backend=backend, estimators=poly)
    if early:
        est = ("jvp",) if jvp_ok else poly
        sched = solve(profile, b, estimators=est, backend=solver_backend)
        return sched, dict(info, choice="pssp[jvp]" if jvp_ok else f"pssp[{','.join(poly)}]")
    candidates = {
        "default rule": default_schedule(s, b, estimators=poly, sampler=sampler),
        "pssp": solve(profile, b, estimators=poly, backend=solver_backend),
        "change-density": density_schedule(s, b, changes, estimators=poly, sampler=sampler),
    }
    errors = {name: _final_error(replay(c, z, v, s, backend=backend), z[n]) for name, c in candidates.items()}
    best = min(errors, key=errors.get)
    if errors[best] > errors["default rule"] * 10.0 ** (-REPLAY_MARGIN_DB / 20.0):
        best = "default rule"  # a promised gain under the margin: replay's ranking is not trusted that finely
    return candidates[best], dict(info, choice=best, replay={k: round(e, 8) for k, e in errors.items()})


def trajectory_key(sigmas, sample_shape, sampler: str = "euler") -> str:
    """The key a learnt schedule is stored under: N, the sigmas (to 6 decimals), the per-sample latent shape and the
    sampler, hashed."""
    s = [round(float(x), 6) for x in as_sigmas(sigmas)]
    text = json.dumps({"sigmas": s, "shape": [int(d) for d in sample_shape], "sampler": sampler})
    return f"N{len(s) - 1}-" + hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Learned:
    """What :class:`MeanCache` learnt at one key: the schedule, the signature it was read from and the choice made."""

    schedule: Schedule
    signature: Signature
    info: dict = field(default_factory=dict)
    calls: int = 0  # model calls the learning generation made (N)

    def to_dict(self) -> dict:
        return {"schedule": self.schedule.to_dict(), "ratios": list(self.signature.ratios),
                "changes": list(self.signature.changes or ()), "info": self.info, "calls": self.calls}

    @classmethod
    def from_dict(cls, d: dict) -> "Learned":
        sig = Signature(tuple(d["ratios"]), tuple(d["changes"]) or None, "learned")
        return cls(Schedule.from_dict(d["schedule"]), sig, dict(d.get("info", {})), int(d.get("calls", 0)))


class MeanCache:
    """MeanCache with B model calls per generation, learning its schedule from the first generation (module doc).

    Args:
        budget: B, the model calls of every generation after the learning one (1..N).
        learn: True (default): learn from the first generation at each key; False: the blind even rule
            (:func:`meancache_kernels.default_schedule`), B calls from the first generation on.
        estimators: the estimator names skipped steps may use (None: the sampler's).
        cache_dir: a directory where what is learnt is written (one JSON file per key) and read back by later
            processes; None: in memory only (see :meth:`save` / :meth:`load`).
        backend: op backend; solver_backend: PSSP solver backend.
        namespace: prefixed to every key (e.g. the model's identity), so that one ``cache_dir`` can serve several
            models.

    ``mc.learned`` maps each key (:func:`trajectory_key`) to its :class:`Learned`; ``mc.last`` describes the last
    generation (``learning``, ``calls``, ``key``).
    """

    def __init__(self, budget: int, *, learn: bool = True, estimators=None, cache_dir: str | os.PathLike | None = None,
                 backend: str = "auto", solver_backend: str = "auto", namespace: str = ""):
        self.budget = check_budget(budget)
        if not isinstance(namespace, str) or any(c in namespace for c in "/\\"):
            raise ValueError(f"namespace must be a string without path separators, got {namespace!r}")
        self.namespace = namespace
        if not isinstance(learn, bool):
            raise TypeError(f"learn must be a bool, got {learn!r}")
        if estimators is not None:
            _check_allowed(estimators)
        check_ops_backend(backend)
        check_solver_backend(solver_backend, "solver_backend")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
        self.learn = learn
        self.estimators = None if estimators is None else tuple(estimators)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.backend = backend
        self.solver_backend = solver_backend
        self.learned: dict[str, Learned] = {}
        self.generations = 0
        self.last: dict = {}

    def __repr__(self) -> str:
        return f"MeanCache(budget={self.budget}, learn={self.learn}, learned={len(self.learned)} keys)"

    # ------------------------------------------------------------------ what to run
    def key(self, sigmas, sample_shape, sampler: str = "euler") -> str:
        """The key of a generation: the namespace, the budget and :func:`trajectory_key` (a schedule learnt for one
        budget is never run for another, even from a shared ``cache_dir``)."""
        k = f"B{self.budget}-{trajectory_key(sigmas, sample_shape, sampler)}"
        return f"{self.namespace}-{k}" if self.namespace else k

    def lookup(self, key: str) -> Learned | None:
        """The learnt entry at ``key`` (from memory, else from ``cache_dir``), or None."""
        entry = self.learned.get(key)
        if entry is None and self.cache_dir is not None:
            path = os.path.join(self.cache_dir, f"{key}.json")
            if os.path.exists(path):
                with open(path) as f:
                    entry = Learned.from_dict(json.load(f)["entries"][key])
                self.learned[key] = entry
        return entry

    def schedule_for(self, sigmas, sample_shape, *, sampler: str = "euler") -> Schedule | None:
        """The schedule a generation with these sigmas runs: the learnt one, the blind rule (``learn=False``), or
        None when this generation must learn (every step computed)."""
        s = as_sigmas(sigmas)
        check_budget(self.budget, len(s) - 1, name="budget (the number of steps is N)")
        if not self.learn:
            return default_schedule(s, self.budget, estimators=self.estimators, sampler=sampler)
        entry = self.lookup(self.key(s, sample_shape, sampler))
        return None if entry is None else entry.schedule

    def learn_from(self, z: torch.Tensor, v: torch.Tensor, sigmas, *, sampler: str = "euler",
                   key: str | None = None) -> Learned:
        """Learn the schedule of this trajectory (``z`` [N+1, S, ...], ``v`` [N, S, ...]) and store it under ``key``
        (None: :meth:`key` of its sigmas, per-sample shape and sampler)."""
        s = as_sigmas(sigmas)
        key = self.key(s, tuple(z.shape[2:]), sampler) if key is None else key
        schedule, info = learn_schedule(z, v, s, self.budget, sampler=sampler, estimators=self.estimators,
                                        backend=self.backend, solver_backend=self.solver_backend)
        entry = Learned(schedule, signature_from_velocities(list(v), "learned"), info, calls=len(s) - 1)
        self.learned[key] = entry
        if self.cache_dir is not None:
            os.makedirs(self.cache_dir, exist_ok=True)
            self._write(os.path.join(self.cache_dir, f"{key}.json"), {key: entry})
        return entry

    # ------------------------------------------------------------------ sampling
    def sample(self, model_fn: Callable[[torch.Tensor, float], torch.Tensor], z: torch.Tensor, sigmas, *,
               callback=None) -> torch.Tensor:
        """Euler flow-matching sampling of ``model_fn(z, sigma) -> v`` from ``z`` [S, ...] over ``sigmas``.

        The first generation at a key computes every step (N calls, the exact result) and learns; later ones make
        exactly B calls. ``mc.last`` says which it was."""
        from .cache import MeanCacheState

        if not isinstance(z, torch.Tensor) or z.dim() < 1:
            raise TypeError(f"z must be a torch.Tensor [S, ...], got {type(z).__name__}")
        s = as_sigmas(sigmas)
        n = len(s) - 1
        key = self.key(s, tuple(z.shape[1:]))
        schedule = self.schedule_for(s, tuple(z.shape[1:]))
        calls = [0]

        def counted(x, sigma):
            calls[0] += 1
            return model_fn(x, sigma)

        self.generations += 1
        if schedule is not None:
            out = MeanCacheState(schedule, s, backend=self.backend).run(counted, z, callback)
            self.last = {"learning": False, "calls": calls[0], "key": key}
            return out
        zs, vs = [z], []

        def record(i, z_next, v, computed):
            zs.append(z_next)
            vs.append(v)
            if callback is not None:
                callback(i, z_next, v, computed)

        out = MeanCacheState(Schedule.full(n), s, backend=self.backend).run(counted, z, record)
        self.learn_from(torch.stack(zs), torch.stack(vs), s).info["generation"] = self.generations
        self.last = {"learning": True, "calls": calls[0], "key": key}
        return out

    # ------------------------------------------------------------------ files
    def _write(self, path: str, entries: dict[str, Learned]) -> None:
        payload = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "budget": self.budget,
                   "entries": {k: e.to_dict() for k, e in entries.items()}}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)

    def save(self, path: str | os.PathLike) -> None:
        """Write everything learnt to one JSON file (with the budget), for :meth:`load`."""
        self._write(os.fspath(path), self.learned)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> "MeanCache":
        """A :class:`MeanCache` holding what :meth:`save` wrote (``budget`` from the file unless given)."""
        with open(path) as f:
            payload = json.load(f)
        if payload.get("format") != _FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not a MeanCache learnt-schedule file (format "
                             f"{payload.get('format')!r}, expected {_FORMAT!r})")
        kwargs.setdefault("budget", payload["budget"])
        mc = cls(**kwargs)
        for key, d in payload["entries"].items():
            entry = Learned.from_dict(d)
            if entry.schedule.budget != mc.budget and entry.schedule.budget < entry.schedule.num_steps:
                raise ValueError(f"the file holds schedules for budget={entry.schedule.budget}, not "
                                 f"budget={mc.budget}")
            mc.learned[key] = entry
        return mc
