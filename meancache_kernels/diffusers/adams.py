"""A few-step flow-matching solver: variable-step Adams-Bashforth in sigma (bench/RESULTS.md, "Adams").

MeanCache approximates the N-step Euler output. When the goal is instead the converged ODE solution, the cheapest
route is a higher-order solver with B steps. ``FlowMatchAdamsScheduler`` is the flow-matching Euler scheduler with
one change: from sigma_i to sigma_{i+1} the sample moves by the exact integral of the Lagrange polynomial (in
sigma) through the velocities of the last ``adams_order + 1`` steps, the current one included (fewer at the start):

    z_{i+1} = z_i + (sigma_{i+1} - sigma_i) * sum_k w_k v_k,   w = ``estimators.lagrange_mean_weights``

applied by the fused ``ops.combine_step``. ``adams_order=0`` is the Euler step; 1 is the two-step Adams-Bashforth
method on the scheduler's own, non-uniform sigmas. One model evaluation per step, no corrector, deterministic.

    from meancache_kernels.diffusers import FlowMatchAdamsScheduler
    pipe.scheduler = FlowMatchAdamsScheduler.from_config(pipe.scheduler.config, adams_order=1)
    image = pipe(prompt, num_inference_steps=17).images[0]

It is not combined with MeanCache (``apply_mean_cache`` refuses it): it is the alternative for the converged target.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchEulerDiscreteSchedulerOutput,
)

from .. import ops
from ..estimators import lagrange_mean_weights

__all__ = ["FlowMatchAdamsScheduler", "ADAMS_ORDERS"]

ADAMS_ORDERS = (0, 1, 2, 3)  # degree of the interpolating polynomial; at most 4 velocities (the fused op's limit)


class FlowMatchAdamsScheduler(FlowMatchEulerDiscreteScheduler):
    """``FlowMatchEulerDiscreteScheduler`` whose step is variable-step Adams-Bashforth of order ``adams_order + 1``
    in sigma (module docstring). Every other setting (shift, dynamic shifting, custom sigmas) is the Euler
    scheduler's; ``stochastic_sampling``, ``invert_sigmas``, ``s_churn`` and per-token timesteps are refused."""

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float | None = 0.5, max_shift: float | None = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, invert_sigmas: bool = False, shift_terminal: float | None = None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", stochastic_sampling: bool = False, adams_order: int = 1):
        if isinstance(adams_order, bool) or adams_order not in ADAMS_ORDERS:
            raise ValueError(f"adams_order must be one of {ADAMS_ORDERS}, got {adams_order!r}")
        if stochastic_sampling or invert_sigmas:
            raise ValueError("FlowMatchAdamsScheduler integrates the deterministic ODE: stochastic_sampling and "
                             "invert_sigmas must be False")
        super().__init__(num_train_timesteps=num_train_timesteps, shift=shift,
                         use_dynamic_shifting=use_dynamic_shifting, base_shift=base_shift, max_shift=max_shift,
                         base_image_seq_len=base_image_seq_len, max_image_seq_len=max_image_seq_len,
                         invert_sigmas=invert_sigmas, shift_terminal=shift_terminal,
                         use_karras_sigmas=use_karras_sigmas, use_exponential_sigmas=use_exponential_sigmas,
                         use_beta_sigmas=use_beta_sigmas, time_shift_type=time_shift_type,
                         stochastic_sampling=stochastic_sampling)
        self._history: list[tuple[int, torch.Tensor]] = []

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        out = super().set_timesteps(num_inference_steps=num_inference_steps, device=device, sigmas=sigmas, mu=mu,
                                    timesteps=timesteps)
        self._history = []
        return out

    def step(self, model_output, timestep, sample, s_churn: float = 0.0, s_tmin: float = 0.0,
             s_tmax: float = float("inf"), s_noise: float = 1.0, generator=None, per_token_timesteps=None,
             return_dict: bool = True):
        if s_churn != 0.0 or per_token_timesteps is not None:
            raise ValueError("FlowMatchAdamsScheduler.step: s_churn and per_token_timesteps are not supported")
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and not timestep.is_floating_point()):
            raise ValueError("pass one of the scheduler.timesteps as timestep, not an integer index")
        if getattr(self, "num_inference_steps", None) is None:
            raise ValueError("FlowMatchAdamsScheduler.step: call set_timesteps(num_inference_steps) first")
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor) or (
                model_output.shape != sample.shape):
            shapes = tuple(getattr(model_output, "shape", ())), tuple(getattr(sample, "shape", ()))
            raise ValueError("FlowMatchAdamsScheduler.step: model_output and sample must be tensors of one shape, "
                             f"got {shapes[0]} and {shapes[1]}")
        if self.step_index is None:
            self._init_step_index(timestep)
        i = self.step_index
        sig = self.sigmas.double().tolist()
        if self._history and self._history[-1][0] != i - 1:
            self._history = []  # a step was skipped or repeated outside this scheduler: restart the history
        self._history.append((i, model_output.detach().clone()))
        self._history = self._history[-(self.config.adams_order + 1):]
        nodes = [sig[k] for k, _ in self._history]
        weights = lagrange_mean_weights(nodes, sig[i], sig[i + 1])
        acc = torch.float64 if sample.dtype == torch.float64 else torch.float32  # Euler's step upcasts to float32
        _, z_next = ops.combine_step(sample.to(acc), [v for _, v in self._history], weights, sig[i + 1] - sig[i],
                                     v_dtype=acc)
        self._step_index += 1
        prev_sample = z_next.to(model_output.dtype)
        if not return_dict:
            return (prev_sample,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev_sample)
