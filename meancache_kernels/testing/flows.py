"""Analytic flow-matching velocity fields.

Rectified flow with diffusers' convention: x_t = (1 - t) x0 + t eps, eps ~ N(0, I), velocity v = eps - x0, so
that integrating dx/dt = v from t = 1 (noise) down to t = 0 gives data. For data x0 drawn from a mixture
sum_k w_k N(mu_k, c_k I), given component k:

    x_t | k        ~ N((1 - t) mu_k, var_k(t) I),     var_k(t) = (1 - t)^2 c_k + t^2
    E[x0 | x_t, k]  = mu_k + (1 - t) c_k / var_k(t) * (x_t - (1 - t) mu_k)
    E[eps | x_t, k] = t / var_k(t) * (x_t - (1 - t) mu_k)

and the exact marginal velocity is v(x, t) = sum_k r_k(x, t) (E[eps | x, k] - E[x0 | x, k]), with posterior
weights r_k proportional to w_k N(x; (1 - t) mu_k, var_k(t) I). Every formula is finite at t = 0 and t = 1.
"""

from __future__ import annotations

import math

import torch

__all__ = ["GaussianMixtureFlow", "flow_sigmas", "smooth_random_field"]


class GaussianMixtureFlow:
    """Exact velocity of the rectified flow towards a Gaussian mixture in ``dim`` dimensions.

    Args:
        means: [M, D] component means.
        variances: [M] isotropic component variances c_k > 0.
        weights: [M] mixture weights (normalised here); uniform when None.
        dtype: float32 or float64 (the parameters' precision; inputs are computed in their own dtype).

    Call ``flow(x, sigma)`` with x of shape [..., D] (or any shape whose trailing numel per sample equals D when
    ``flatten=True``) and a float sigma in [0, 1].
    """

    def __init__(self, means, variances, weights=None, dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape [M, D], got {tuple(means.shape)}")
        variances = torch.as_tensor(variances, dtype=dtype).reshape(-1)
        if variances.shape[0] != means.shape[0]:
            raise ValueError(f"variances must have M={means.shape[0]} entries, got {variances.shape[0]}")
        if not bool((variances > 0).all()):
            raise ValueError("variances must be > 0")
        if weights is None:
            weights = torch.full((means.shape[0],), 1.0 / means.shape[0], dtype=dtype)
        weights = torch.as_tensor(weights, dtype=dtype).reshape(-1)
        if weights.shape[0] != means.shape[0] or not bool((weights > 0).all()):
            raise ValueError(f"weights must hold M={means.shape[0]} positive values")
        self.means = means
        self.variances = variances
        self.log_weights = torch.log(weights / weights.sum())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def random(cls, dim: int, components: int = 4, seed: int = 0, spread: float = 2.0, dtype=torch.float64):
        """A seeded random mixture: means ~ N(0, spread^2 / dim), variances in [0.02, 0.2]."""
        g = torch.Generator().manual_seed(seed)
        means = torch.randn(components, dim, generator=g, dtype=torch.float64) * spread / math.sqrt(max(dim, 1)) * 2
        variances = 0.02 + 0.18 * torch.rand(components, generator=g, dtype=torch.float64)
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(means, variances, weights, dtype=dtype)

    def velocity(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """v(x, sigma) for x of shape [..., D]; computed in x's dtype (at least float32)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have trailing dimension D={self.dim}, got shape {tuple(x.shape)}")
        t = float(sigma)
        cd = torch.float64 if x.dtype == torch.float64 else torch.float32
        xf = x.to(cd)
        mu = self.means.to(device=x.device, dtype=cd)
        c = self.variances.to(device=x.device, dtype=cd)
        logw = self.log_weights.to(device=x.device, dtype=cd)
        var = (1 - t) ** 2 * c + t**2  # [M]
        diff = xf.unsqueeze(-2) - (1 - t) * mu  # [..., M, D]
        sq = (diff * diff).sum(-1)  # [..., M]
        logp = logw - 0.5 * sq / var - 0.5 * self.dim * torch.log(var)
        r = torch.softmax(logp, dim=-1)  # [..., M]
        coef = (t - (1 - t) * c) / var  # E[eps|k] - E[x0|k] = coef * diff - mu
        v_k = coef.unsqueeze(-1) * diff - mu  # [..., M, D]
        v = (r.unsqueeze(-1) * v_k).sum(-2)
        return v.to(x.dtype)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Velocity for latents of any shape [B, ...] whose per-sample numel is D (flattened, then restored)."""
        if x.shape[-1] == self.dim:
            return self.velocity(x, sigma)
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"x must have D={self.dim} elements per sample, got shape {tuple(x.shape)}")
        return self.velocity(flat, sigma).reshape(x.shape)

    def sample_data(self, n: int, seed: int = 0) -> torch.Tensor:
        """n exact samples x0 from the mixture."""
        g = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=g)
        eps = torch.randn(n, self.dim, generator=g, dtype=self.means.dtype)
        return self.means[k] + self.variances[k].sqrt().unsqueeze(-1) * eps


def flow_sigmas(num_steps: int, shift: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    """Shifted flow-matching sigmas as diffusers' FlowMatchEulerDiscreteScheduler builds them: N + 1 values from 1
    to 0, ``s = shift * t / (1 + (shift - 1) * t)`` on t uniformly spaced in [1, 1/N], with 0 appended."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    s = shift * t / (1 + (shift - 1) * t)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).to(dtype)


def smooth_random_field(dim: int, seed: int = 0, hidden: int = 16, dtype=torch.float64):
    """A random smooth velocity field v(z, s) = W2 tanh(W1 z + b s) * (1 + s) + a * cos(3 s): curved in both z and s.

    Returns a callable ``f(z, sigma)`` for z of shape [B, ...] with ``dim`` elements per sample.
    """
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    b = torch.randn(hidden, generator=g, dtype=torch.float64)
    w2 = torch.randn(dim, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    a = torch.randn(dim, generator=g, dtype=torch.float64)

    def field(z: torch.Tensor, sigma: float) -> torch.Tensor:
        s = float(sigma)
        flat = z.reshape(z.shape[0], -1)
        cd = torch.float64 if z.dtype == torch.float64 else torch.float32
        h = torch.tanh(flat.to(cd) @ w1.to(z.device, cd).T + s * b.to(z.device, cd))
        v = (h @ w2.to(z.device, cd).T) * (1 + s) + a.to(z.device, cd) * math.cos(3 * s)
        return v.reshape(z.shape).to(z.dtype)

    return field
