"""The MeanCache sampler: a bounded history of the trajectory and the velocity estimate of skipped steps.

At a skipped step i the schedule's estimator (:mod:`meancache_kernels.estimators`) reads a bounded history:

- ``jvp`` with span K = min(K_i, i) (docs/design.md section 2, "official") reads the trajectory entries i-K..i-1, so
  the trajectory history is a ring buffer of the last ``schedule.k_max`` entries (z_j, v_j);
- ``taylor`` / ``mean`` of order p read the velocities of the last p + 1 computed steps: a ring buffer of
  ``schedule.poly_depth`` computed velocities.

A schedule that uses only one kind keeps only that buffer: O(K_max + p_max) latent-sized tensors, never O(N).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from . import ops
from .checks import as_sigmas, check_ops_backend
from .estimators import correction_coefficients
from .ops.functional import _check_tensor as check_tensor
from .schedule import Schedule

__all__ = ["MeanCacheState", "SteppedState", "sample"]


class SteppedState:
    """What every per-generation state shares (:class:`MeanCacheState`, the static schedule, and
    :class:`meancache_kernels.adaptive.AdaptiveState`, the online one): steps taken in order, the estimate of a
    skipped step applied through the estimator interface, the fused estimate-and-step reused by :meth:`step`, and
    the corrector of ``taylorc`` skipped steps applied at the next computed step.

    A subclass sets ``sigmas``, ``backend``, ``next_step``, ``_to_correct`` (a list) and ``_pending`` (None) and
    provides ``num_steps``, :meth:`should_compute` (the public, validating question) and the five hooks below.
    """

    # ------------------------------------------------------------------ hooks
    def _is_computed(self, i: int) -> bool:
        """Whether step ``i`` (the next step, already validated) runs the model: host state only, no checks."""
        raise NotImplementedError

    def _estimator_at(self, i: int):
        """The estimator of skipped step ``i``."""
        raise NotImplementedError

    def _trajectory(self):
        """The trajectory history the ``jvp`` estimator reads: (j, z_j, v_j), oldest first."""
        raise NotImplementedError

    def _velocities(self):
        """The velocities of the last computed steps: (j, v_j), oldest first."""
        raise NotImplementedError

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        """Book-keeping of step ``i`` (z is the state the step starts from, corrected on a computed step)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def _expect(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"step index i must be an int, got {i!r}")
        if i != self.next_step:
            raise RuntimeError(
                f"{type(self).__name__} expects step {self.next_step} next, got step {i}: steps must be taken in "
                "order (call reset() to start a new generation)"
            )
        if i >= self.num_steps:
            raise IndexError(f"step index i={i} is out of range for {self.num_steps} steps: the generation is over "
                             "(call reset() to start a new one)")

    @staticmethod
    def _check(z, v=None) -> None:
        check_tensor("z", z)
        if v is not None:
            check_tensor("v", v, z)

    def _correct(self, i: int, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Computed step ``i`` after corrected skipped steps: z plus their correction (``estimators`` module)."""
        if not self._to_correct:
            return z
        steps, self._to_correct = self._to_correct, []
        known = dict(self._velocities())
        known[i] = v
        coeffs = correction_coefficients(steps, sorted(known), self.sigmas)
        nodes = sorted(coeffs)
        _, z_corr = ops.combine_step(z, [known[n] for n in nodes], [coeffs[n] for n in nodes], 1.0,
                                     v_dtype=v.dtype, backend=self.backend)
        return z_corr

    def _estimate(self, i: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        self._expect(i)
        if self._is_computed(i):
            raise RuntimeError(f"step {i} is a computed step: run the model there, not estimate()")
        return self._estimator_at(i).estimate_step(ops, i, z, self.sigmas, self._trajectory(), self._velocities(),
                                                   self.backend)

    def skip(self, i: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Skipped step ``i``: the velocity estimate and the Euler step with it, fused; records the step.

        Returns ``(v_hat, z_next)``.
        """
        v_hat, z_next = self._estimate(i, z)
        self._record(i, z, v_hat)
        return v_hat, z_next

    def estimate(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """The velocity estimate at skipped step ``i`` (feed it to :meth:`step` to advance)."""
        v_hat, z_next = self._estimate(i, z)
        self._pending = (i, z, z._version, v_hat, v_hat._version, z_next)
        return v_hat

    def step(self, i: int, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Record (z_i, v_i, s_i) and return the Euler step ``z + (s_{i+1} - s_i) * v``."""
        self._check(z, v)
        self._expect(i)
        pending, self._pending = self._pending, None
        if (
            pending is not None
            and pending[0] == i
            and pending[1] is z
            and pending[2] == z._version
            and pending[3] is v
            and pending[4] == v._version
        ):
            z_next = pending[5]  # already computed by the fused estimate, from these very (unmodified) z and v
        else:
            if self._is_computed(i):
                z = self._correct(i, z, v)
            z_next = ops.euler_step(z, v, self.sigmas[i + 1] - self.sigmas[i], backend=self.backend)
        self._record(i, z, v)
        return z_next

    def record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Record (z_i, v_i, s_i) of a step whose Euler update is done elsewhere (e.g. by a diffusers scheduler).

        Returns the state that update must start from: ``z`` itself, or on a computed step that follows skipped
        steps with a corrector (``taylorc``) the corrected state (a new tensor; ``z`` is not modified).
        """
        self._check(z, v)
        self._expect(i)
        self._pending = None
        if self._is_computed(i):
            z = self._correct(i, z, v)
        self._record(i, z, v)
        return z

    def run(self, model_fn: Callable[[torch.Tensor, float], torch.Tensor], z: torch.Tensor,
            callback: Callable[[int, torch.Tensor, torch.Tensor, bool], None] | None = None) -> torch.Tensor:
        """Every step of a generation from ``z``: ``model_fn(z, sigma)`` on the computed steps, the estimate on the
        others; ``callback(i, z_next, v, computed)`` after each step. Returns the final latent."""
        if not callable(model_fn):
            raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
        for i in range(self.num_steps):
            computed = self.should_compute(i)
            if computed:
                v = model_fn(z, self.sigmas[i])
                if not isinstance(v, torch.Tensor) or v.shape != z.shape:
                    got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                    raise ValueError(f"model_fn must return a tensor of z's shape {tuple(z.shape)}, got {got}")
                z_next = self.step(i, z, v)
            else:
                v, z_next = self.skip(i, z)
            if callback is not None:
                callback(i, z_next, v, computed)
            z = z_next
        return z

    def num_latents_held(self) -> int:
        """Latent-sized tensors referenced by the state (for memory checks)."""
        held = {id(t) for _, zj, vj in self._trajectory() for t in (zj, vj)} | {id(v) for _, v in self._velocities()}
        if self._pending is not None:
            held |= {id(self._pending[1]), id(self._pending[3]), id(self._pending[5])}
        return len(held)


class MeanCacheState(SteppedState):
    """Per-generation MeanCache state: decides which steps run the model and produces the estimate on the others.

    Usage, for i in 0..N-1::

        if state.should_compute(i):
            z = state.step(i, z, model(z, sigmas[i]))
        else:
            v_hat, z = state.skip(i, z)          # or: v_hat = state.estimate(i, z); z = state.step(i, z, v_hat)

    Steps must be taken in order 0, 1, ..., N-1; ``reset()`` starts a new generation.

    Args:
        schedule: the :class:`Schedule` (N steps).
        sigmas: N + 1 strictly decreasing sigmas ending at 0 (list, tuple, numpy array or tensor).
        backend: op backend for the fused step (``"auto"``, ``"torch"``, ``"triton"``).
    """

    def __init__(self, schedule: Schedule, sigmas, *, backend: str = "auto"):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a meancache_kernels.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.sigmas = as_sigmas(sigmas, schedule.num_steps)
        check_ops_backend(backend)
        self.backend = backend
        self.capacity = schedule.k_max
        self.history: deque[tuple[int, torch.Tensor, torch.Tensor]] = deque(maxlen=max(self.capacity, 1))
        # velocities of the last computed steps, for the polynomial estimators: (i, v_i)
        self.poly_capacity = schedule.poly_depth
        self.computed: deque[tuple[int, torch.Tensor]] = deque(maxlen=max(self.poly_capacity, 1))
        self._estimators = [schedule.estimator_at(i) for i in range(schedule.num_steps)]
        self._to_correct: list[tuple[int, object]] = []  # corrected skipped steps since the last computed one
        self.next_step = 0
        # (i, z, z._version, v_hat, v_hat._version, z_next) of the last estimate(): step() reuses its fused z_next
        # only for that very z and v_hat, both unmodified
        self._pending: tuple | None = None

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def reset(self) -> None:
        """Forget the trajectory (start of a new generation)."""
        self.history.clear()
        self.computed.clear()
        self._to_correct = []
        self.next_step = 0
        self._pending = None

    def should_compute(self, i: int) -> bool:
        """True when step ``i`` must run the model."""
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"step index i must be an int, got {i!r}")
        if not 0 <= i < self.num_steps:
            raise IndexError(f"step index i={i} is out of range for a schedule of {self.num_steps} steps")
        return self.schedule.compute[i]

    def span(self, i: int) -> int:
        """The span actually used at skipped step ``i`` by the ``jvp`` estimator: min(K_i, i)."""
        return min(self.schedule.spans[i], i)

    # ------------------------------------------------------------------ SteppedState hooks
    def _is_computed(self, i: int) -> bool:
        return self.schedule.compute[i]

    def _estimator_at(self, i: int):
        return self._estimators[i]

    def _trajectory(self):
        return self.history

    def _velocities(self):
        return self.computed

    def _record(self, i: int, z: torch.Tensor, v: torch.Tensor) -> None:
        if self.capacity > 0:
            # Clone: callers may update z in place on the next step.
            self.history.append((i, z.detach().clone(), v.detach()))
        if self.schedule.compute[i]:
            if self.poly_capacity > 0:
                self.computed.append((i, v.detach()))
        elif self._estimators[i].corrected:
            self._to_correct.append((i, self._estimators[i]))
        self.next_step = i + 1


def sample(
    model_fn: Callable[[torch.Tensor, float], torch.Tensor],
    z: torch.Tensor,
    sigmas,
    schedule: Schedule,
    *,
    backend: str = "auto",
    callback: Callable[[int, torch.Tensor, torch.Tensor, bool], None] | None = None,
) -> torch.Tensor:
    """Euler flow-matching sampling with MeanCache.

    Args:
        model_fn: ``model_fn(z, sigma) -> v``, the (guided) velocity at latent z and noise level sigma (a float).
        z: initial latent at sigmas[0], any shape and batch, CPU or CUDA.
        sigmas: N + 1 strictly decreasing sigmas ending at 0.
        schedule: the :class:`Schedule` of N steps.
        backend: op backend.
        callback: optional ``callback(i, z_next, v, computed)`` after every step.

    Returns:
        The final latent (same dtype and device as ``z``).
    """
    return MeanCacheState(schedule, sigmas, backend=backend).run(model_fn, z, callback)
