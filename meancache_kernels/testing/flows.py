"""Analytic flow-matching velocity fields.

Rectified flow with diffusers' convention: x_t = (1 - t) x0 + t eps, eps ~ N(0, I), velocity v = eps - x0, so
that integrating dx/dt = v from t = 1 (noise) down to t = 0 gives data. For data x0 drawn from a mixture
sum_k w_k N(mu_k, diag(c_k)), given component k (c_k a scalar, or one variance per coordinate):

    x_t | k        ~ N((1 - t) mu_k, diag(var_k(t))),     var_k(t) = (1 - t)^2 c_k + t^2
    E[x0 | x_t, k]  = mu_k + (1 - t) c_k / var_k(t) * (x_t - (1 - t) mu_k)
    E[eps | x_t, k] = t / var_k(t) * (x_t - (1 - t) mu_k)

and the exact marginal velocity is v(x, t) = sum_k r_k(x, t) (E[eps | x, k] - E[x0 | x, k]), with posterior
weights r_k proportional to w_k N(x; (1 - t) mu_k, diag(var_k(t))). Every formula is finite at t = 0 and t = 1.

Real image models decide coarse content first: natural images have a power-law spectrum (a few coarse directions
hold most of the variance) and the coarse content is a choice among modes. :func:`power_law_flow` builds such a
mixture (diagonal covariances in a frequency-ordered basis, modes separated in the coarse directions) whose
magnitude ratios reach FLUX.1's published early ones; :func:`late_decision_flow` is the opposite regime (narrow
components whose choice is made at low noise). The norms the dynamics signature reads are basis-invariant, so the
coordinates stand for any orthonormal basis (e.g. 2-D DCT coefficients ordered by frequency).
"""

from __future__ import annotations

import math

import torch

__all__ = ["GaussianMixtureFlow", "flow_sigmas", "smooth_random_field", "power_law_flow", "late_decision_flow",
           "REALISTIC_FLOWS", "realistic_flow"]


class GaussianMixtureFlow:
    """Exact velocity of the rectified flow towards a Gaussian mixture in ``dim`` dimensions.

    Args:
        means: [M, D] component means.
        variances: [M] isotropic component variances c_k > 0, or [M, D] diagonal ones.
        weights: [M] mixture weights (normalised here); uniform when None.
        dtype: float32 or float64 (the parameters' precision; inputs are computed in their own dtype).

    Call ``flow(x, sigma)`` with x of shape [..., D] (or any shape whose trailing numel per sample equals D when
    ``flatten=True``) and a float sigma in [0, 1].
    """

    def __init__(self, means, variances, weights=None, dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape [M, D], got {tuple(means.shape)}")
        variances = torch.as_tensor(variances, dtype=dtype)
        if variances.ndim == 2 and variances.shape != means.shape:
            raise ValueError(f"variances of shape [M, D] must match means' {tuple(means.shape)}, got "
                             f"{tuple(variances.shape)}")
        if variances.ndim != 2:
            variances = variances.reshape(-1)
            if variances.shape[0] != means.shape[0]:
                raise ValueError(f"variances must have M={means.shape[0]} entries (or shape [M, D]), got "
                                 f"{variances.shape[0]}")
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
        var = (1 - t) ** 2 * c + t**2  # [M] or [M, D]
        diff = xf.unsqueeze(-2) - (1 - t) * mu  # [..., M, D]
        coef = (t - (1 - t) * c) / var  # E[eps|k] - E[x0|k] = coef * diff - mu
        if c.ndim == 2:
            logp = logw - 0.5 * (diff * diff / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
            v_k = coef * diff - mu  # [..., M, D]
        else:
            logp = logw - 0.5 * (diff * diff).sum(-1) / var - 0.5 * self.dim * torch.log(var)
            v_k = coef.unsqueeze(-1) * diff - mu  # [..., M, D]
        r = torch.softmax(logp, dim=-1)  # [..., M]
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
        std = self.variances[k].sqrt()
        return self.means[k] + (std if std.ndim == 2 else std.unsqueeze(-1)) * eps


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


def power_law_flow(dim: int = 512, amplitude: float = 2000.0, exponent: float = 1.5, *, coarse: int = 4,
                   modes: int = 8, decided: float = 0.5, seed: int = 0, dtype=torch.float64) -> GaussianMixtureFlow:
    """A flow with a real image model's early phase: a power-law spectrum whose coarse content is a choice of mode.

    Coordinate j (j = 0 .. dim-1, coarse to fine) has data variance ``amplitude * (j + 1) ** -exponent``. In the
    first ``coarse`` coordinates a fraction ``decided`` of that variance is the choice among ``modes`` equally likely
    components (their means, seeded), the rest is within-component spread, so the marginal variance is the power law
    in every coordinate. Coordinates of variance lam >> 1 are resolved near sigma = 1 / sqrt(lam), so the
    transformer-output norm grows fast in the first steps, as FLUX.1's published magnitude ratios do
    (:mod:`meancache_kernels.dynamics`). The defaults match FLUX.1's early-5 sum and first-10 product within 25 %.
    """
    for name, value in (("dim", dim), ("coarse", coarse), ("modes", modes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if coarse > dim:
        raise ValueError(f"coarse must be <= dim={dim}, got {coarse}")
    if not (math.isfinite(amplitude) and amplitude > 0):
        raise ValueError(f"amplitude must be a finite number > 0, got {amplitude!r}")
    if not (math.isfinite(exponent) and exponent >= 0):
        raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
    if not 0 <= decided < 1:
        raise ValueError(f"decided must be in [0, 1), got {decided!r}")
    g = torch.Generator().manual_seed(seed)
    lam = amplitude * (torch.arange(dim, dtype=torch.float64) + 1) ** -exponent
    signs = torch.randn(modes, coarse, generator=g, dtype=torch.float64)
    signs = signs / signs.norm(dim=0, keepdim=True) * math.sqrt(modes)  # unit mean square over the modes
    means = torch.zeros(modes, dim, dtype=torch.float64)
    means[:, :coarse] = signs * torch.sqrt(decided * lam[:coarse])
    variances = lam.expand(modes, dim).clone()
    variances[:, :coarse] = lam[:coarse] * (1 - decided)
    return GaussianMixtureFlow(means, variances, dtype=dtype)


def late_decision_flow(dim: int = 64, components: int = 32, *, spread: float = 1.0, width: float = 0.005,
                       seed: int = 0, dtype=torch.float64) -> GaussianMixtureFlow:
    """The opposite regime: many narrow components (variance ``width``) whose means are close (rms ``spread`` per
    coordinate), so which one the sample lands in is decided late, at low noise, where the velocity turns fast."""
    for name, value in (("dim", dim), ("components", components)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not (math.isfinite(spread) and spread > 0) or not (math.isfinite(width) and width > 0):
        raise ValueError(f"spread and width must be finite numbers > 0, got {spread!r}, {width!r}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(components, dim, generator=g, dtype=torch.float64) * spread
    return GaussianMixtureFlow(means, torch.full((components,), float(width)), dtype=dtype)


# The realistic analytic flows the tests and the benchmarks use, by name: their dynamics signatures at N = 28
# (shift 3) are in bench/RESULTS.md beside FLUX.1's published one.
REALISTIC_FLOWS = {
    "power-flux": dict(kind="power", dim=512, amplitude=2000.0, exponent=1.5),
    "power-strong": dict(kind="power", dim=1024, amplitude=10000.0, exponent=1.5),
    "power-mild": dict(kind="power", dim=1024, amplitude=1000.0, exponent=1.5),
    "late-mixture": dict(kind="late", dim=64, components=32),
}


def realistic_flow(name: str, seed: int = 0, dtype=torch.float64) -> GaussianMixtureFlow:
    """One of :data:`REALISTIC_FLOWS` by name."""
    if name not in REALISTIC_FLOWS:
        raise ValueError(f"name must be one of {sorted(REALISTIC_FLOWS)}, got {name!r}")
    kw = dict(REALISTIC_FLOWS[name])
    kind = kw.pop("kind")
    return (power_law_flow if kind == "power" else late_decision_flow)(seed=seed, dtype=dtype, **kw)
