"""The bookkeeping of one MeanCache generation on a diffusers pipeline: its steps (from the begin index to the end),
the segments made by one model each (Wan 2.2's experts) with their schedules and estimator states, and the recording
state of a learning generation. Host-side data only; :mod:`.context` drives it."""

from __future__ import annotations

from collections import deque

import torch

from ..cache import MeanCacheState, SteppedState
from ..schedule import Schedule


class _Decisions:
    """``compute[i]`` of a generation whose steps are decided while it runs (adaptive control): host state only."""

    __slots__ = ("_state",)

    def __init__(self, state):
        self._state = state

    def __getitem__(self, i: int) -> bool:
        return self._state.should_compute(i)


class _RecordingState(MeanCacheState):
    """Every step computed, the trajectory recorded for learning: z_0..z_{N-1} and v_0..v_{N-1} (detached copies,
    on the latents' device)."""

    def __init__(self, sigmas: list[float], backend: str):
        super().__init__(Schedule.full(len(sigmas) - 1), sigmas, backend=backend)
        self.zs: list[torch.Tensor] = []
        self.vs: list[torch.Tensor] = []

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        super()._record(i, z, v)
        self.zs.append(z.detach().clone())
        self.vs.append(v.detach().clone())

    def trajectory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [N+1, S, ...], v [N, S, ...]); z_N is the Euler step from z_{N-1} with v_{N-1}."""
        z_last = self.zs[-1] + (self.sigmas[-1] - self.sigmas[-2]) * self.vs[-1].to(self.zs[-1].dtype)
        return torch.stack(self.zs + [z_last]), torch.stack(self.vs)


class _FollowerState(SteppedState):
    """The estimator state of a companion scheduler's latents (:mod:`.scheduler`) in an adaptive segment: it takes
    its computed / skipped decisions from ``leader`` (the main latents' :class:`meancache_kernels.adaptive.
    AdaptiveState`, which decides them) and estimates with the leader's estimator from its *own* computed
    velocities. (A static segment's companion is a plain :class:`MeanCacheState` of the same schedule and sigmas.)"""

    def __init__(self, leader):
        self.leader = leader
        self.sigmas = leader.sigmas
        self.backend = leader.backend
        self._nodes: deque = deque(maxlen=max(leader.estimator.retain, 1))
        self.next_step = 0
        self._to_correct: list = []
        self._pending = None

    @property
    def num_steps(self) -> int:
        return self.leader.num_steps

    def should_compute(self, i: int) -> bool:
        return self.leader.should_compute(i)

    def _is_computed(self, i: int) -> bool:
        return self.leader.should_compute(i)

    def _estimator_at(self, i: int):
        return self.leader.estimator

    def _trajectory(self):
        return ()

    def _velocities(self):
        return self._nodes

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        if self._is_computed(i):
            self._nodes.append((i, v.detach()))
        elif self.leader.estimator.corrected:
            self._to_correct.append((i, self.leader.estimator))
        self.next_step = i + 1


class _Companion:
    """What a companion scheduler (:mod:`.scheduler`: a ``copy.deepcopy`` of the adapted scheduler, LTX-2's audio
    scheduler) follows of the main generation: the generation it is bound to, its own estimator state per segment
    (keyed by the main state of the segment, whose schedule and sigmas it copies) and, in a generation whose first
    step ran under the learning state, that step's record (replayed when the learnt schedule replaces it)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.gen = None
        self.states: dict[int, tuple[object, SteppedState]] = {}
        self.first = None  # (segment, z_0, v_0)

    def follow(self, gen, index: int, grid):
        """Where the companion's step at scheduler index ``index`` stands in ``gen``.

        None: step plainly (no generation, or it is over and the companion did not follow it from its first step:
        the transformer runs for real). Else ``(state, j, seg)``:
        the companion's estimator state of the step's segment ``seg`` (None under the learning state: every step is
        computed) and the step's index ``j`` in it. ``grid()`` gives the companion's sigmas (host floats), compared
        to the generation's once per generation. RuntimeError when the companion is out of step with the main
        scheduler (the step it takes is neither the main one's current step nor its last one, or it joins a
        generation in progress after its first step) or on other sigmas.
        """
        if gen is None:
            self.reset()
            return None
        i = index - gen.offset
        if not 0 <= i < gen.num_steps or i not in (gen.step, gen.step - 1) or (self.gen is not gen and i != 0):
            if gen.step >= gen.num_steps:  # after the main loop: the transformer runs for real again
                self.reset()
                return None
            raise RuntimeError(
                f"MeanCache: a copy of the adapted scheduler (copy.deepcopy, e.g. an audio scheduler) takes step "
                f"{index} while the main scheduler is at step {gen.offset + gen.step}: a companion scheduler must "
                "take the main scheduler's steps, once each, just before or just after it"
            )
        if self.gen is not gen:
            self.reset()
            own = grid()[gen.offset:]
            if len(own) != len(gen.sigmas) or any(abs(a - b) > 1e-6 * max(1.0, abs(b))
                                                  for a, b in zip(own, gen.sigmas)):
                raise RuntimeError(
                    f"MeanCache: a copy of the adapted scheduler (copy.deepcopy, e.g. an audio scheduler) steps with "
                    f"other sigmas than the main scheduler ({len(own) - 1} steps from {own[:1]}, the main one "
                    f"{gen.num_steps} from {gen.sigmas[:1]}): MeanCache skips the main scheduler's steps for both, so "
                    "both must run the same set_timesteps"
                )
            self.gen = gen
        seg = gen.segment(i)
        j = i - seg.start
        leader = seg.state
        if isinstance(leader, _RecordingState):  # learning: every step computed, nothing to estimate
            return None, j, seg
        entry = self.states.get(id(leader))
        if entry is None:
            if isinstance(leader, MeanCacheState):
                state = MeanCacheState(leader.schedule, leader.sigmas, backend=leader.backend)
            else:
                state = _FollowerState(leader)
            if j == 1 and self.first is not None and self.first[0] is seg:  # the learnt schedule replaced the state
                state.record(0, self.first[1], self.first[2])
                self.first = None
            entry = self.states[id(leader)] = (leader, state)
        state = entry[1]
        if state.next_step != j:
            raise RuntimeError(
                f"MeanCache: a copy of the adapted scheduler (copy.deepcopy, e.g. an audio scheduler) takes step "
                f"{index} but its estimator state is at step {gen.offset + seg.start + state.next_step}: a "
                "companion scheduler must take every step of the generation, in order"
            )
        return state, j, seg


def _model_namespace(pipe, names: tuple[str, ...]) -> str:
    """The model's identity in learnt-schedule keys: the transformer classes, a hash of their configs and a few of
    their weights (two fine-tunes of one architecture learn apart)."""
    import hashlib
    import json

    parts = []
    for name in names:
        module = getattr(pipe, name, None)
        cfg = dict(getattr(module, "config", None) or {})
        weights = [float(p.detach().reshape(-1)[:8].double().sum()) for _, p in zip(range(4), module.parameters())]
        parts.append(f"{type(module).__name__}:" + json.dumps(cfg, sort_keys=True, default=str) + repr(weights))
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]
    return f"{type(getattr(pipe, names[0], None)).__name__}-{digest}"


class _Segment:
    """Steps ``start .. stop - 1`` of a generation (indices among the steps run) made by one model.

    Its schedule and estimator state cover these steps only, on the segment's sigmas shifted to end at 0 (the
    Euler update and every estimator read only differences of sigmas): estimates never use another model's
    velocities, and the first step of the segment is computed.
    """

    __slots__ = ("start", "stop", "model", "schedule", "state")

    def __init__(self, start: int, stop: int, model: str | None, schedule, state):
        self.start, self.stop, self.model, self.schedule, self.state = start, stop, model, schedule, state


class _SegmentedState:
    """The estimator state of a generation with several segments: step i goes to its segment's state."""

    def __init__(self, segments: list[_Segment], sigmas: list[float]):
        self.segments = segments
        self.sigmas = sigmas  # the generation's (unshifted) sigmas: Heun's second stage reads differences only
        self.num_steps = segments[-1].stop

    def segment(self, i: int) -> _Segment:
        for seg in self.segments:
            if i < seg.stop:
                return seg
        raise IndexError(f"step index i={i} is out of range for {self.num_steps} steps")

    def should_compute(self, i: int) -> bool:
        seg = self.segment(i)
        return seg.state.should_compute(i - seg.start)

    def record(self, i: int, z, v):
        seg = self.segment(i)
        return seg.state.record(i - seg.start, z, v)

    def skip(self, i: int, z):
        seg = self.segment(i)
        return seg.state.skip(i - seg.start, z)

    def estimate(self, i: int, z):
        seg = self.segment(i)
        return seg.state.estimate(i - seg.start, z)

    @property
    def estimator(self):  # adaptive control: one estimator per generation (Heun's second stage reads it)
        return self.segments[0].state.estimator

    def schedule_so_far(self):
        return _concat([seg.state.schedule_so_far() for seg in self.segments if seg.state.next_step > 0])


def _concat(schedules: list[Schedule]) -> Schedule:
    """One schedule running ``schedules`` one after the other (for the stats of a segmented generation)."""
    if len(schedules) == 1:
        return schedules[0]
    meta = dict(schedules[0].meta or {}, segments=[s.num_steps for s in schedules])
    return Schedule([c for s in schedules for c in s.compute], [k for s in schedules for k in s.spans], meta=meta,
                    estimators=[e for s in schedules for e in s.estimators])


def _restrict(schedule: Schedule, start: int, stop: int) -> Schedule:
    """Steps ``start .. stop - 1`` of ``schedule`` as a schedule of their own; its first step is computed."""
    if start == 0 and stop == schedule.num_steps:
        return schedule
    comp = list(schedule.compute[start:stop])
    spans = list(schedule.spans[start:stop])
    est = list(schedule.estimators[start:stop])
    comp[0], spans[0], est[0] = True, 0, ""
    return Schedule(comp, spans, meta=schedule.meta, estimators=est)


def _computed_at_starts(schedule: Schedule, parts: list[tuple[int, int]]) -> tuple[Schedule, int]:
    """``schedule`` with the first step of every part ``(start, stop)`` computed, at the same number of computed
    steps in the parts where it can: a part whose first step is skipped gets its own first computed step moved there,
    or, having none, the last computed step of the part before it (not that part's first). Returns the schedule and
    the number of computed steps it had to add (parts left with nothing to move)."""
    comp, spans, est = list(schedule.compute), list(schedule.spans), list(schedule.estimators)
    added = 0
    for k, (start, stop) in enumerate(parts):
        if comp[start]:
            continue
        like = (spans[start], est[start])  # the skipped first step's estimator: the moved step takes it
        mine = [c for c in range(start + 1, stop) if comp[c]]
        before = [c for c in range(parts[k - 1][0] + 1, start) if comp[c]] if k > 0 else []
        moved = mine[0] if mine else (before[-1] if before else None)
        if moved is None:
            added += 1
        else:
            comp[moved], (spans[moved], est[moved]) = False, like
        comp[start], spans[start], est[start] = True, 0, ""
    if added == 0 and comp == list(schedule.compute):
        return schedule, 0
    return Schedule(comp, spans, meta=schedule.meta, estimators=est), added


def _split_budget(budget: int, lengths: list[int]) -> list[int]:
    """B shared between segments of ``lengths`` steps in proportion to their steps, each at least 1 and at most its
    length (needs len(lengths) <= budget <= sum(lengths))."""
    n = sum(lengths)
    ideal = [budget * length / n for length in lengths]
    shares = [max(1, min(length, round(x))) for length, x in zip(lengths, ideal)]
    while sum(shares) > budget:
        k = max((k for k in range(len(shares)) if shares[k] > 1), key=lambda k: shares[k] - ideal[k])
        shares[k] -= 1
    while sum(shares) < budget:
        k = max((k for k in range(len(shares)) if shares[k] < lengths[k]), key=lambda k: ideal[k] - shares[k])
        shares[k] += 1
    return shares


class _Generation:
    """Bookkeeping of one generation (one ``set_timesteps`` .. last ``step``).

    ``offset`` is the scheduler's index of the first step run (> 0 for image-to-image and inpainting, which start
    mid-schedule); the generation's own step indices i = 0 .. num_steps - 1 count the steps run. ``segments`` split
    those steps by the model that makes them (one segment unless the pipeline changes transformer). ``schedule`` is
    the static schedule of all steps run (None under adaptive control, whose ``state`` decides as it goes);
    ``compute[i]`` says whether step i runs the transformer either way.
    """

    __slots__ = ("offset", "sigmas", "segments", "schedule", "compute", "state", "num_steps", "step", "call_in_step",
                 "outputs")

    def __init__(self, offset: int, sigmas: list[float], segments: list[_Segment]):
        self.offset = offset
        self.sigmas = sigmas
        self.num_steps = len(sigmas) - 1
        self.step = 0
        self.call_in_step = 0
        self.outputs: dict[int, object] = {}
        self.set_segments(segments)

    def set_segments(self, segments: list[_Segment]) -> None:
        self.segments = segments
        if len(segments) == 1:
            self.state = segments[0].state
            self.schedule = segments[0].schedule
        else:
            self.state = _SegmentedState(segments, self.sigmas)
            static = all(seg.schedule is not None for seg in segments)
            self.schedule = _concat([seg.schedule for seg in segments]) if static else None
        self.compute = self.schedule.compute if self.schedule is not None else _Decisions(self.state)

    def segment(self, i: int) -> _Segment:
        for seg in self.segments:
            if i < seg.stop:
                return seg
        return self.segments[-1]
