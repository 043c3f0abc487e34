"""Quality metrics: image PSNR / SSIM (the headline of every benchmark) and per-sample latent errors (the tuning
metric).

- :func:`psnr`, :func:`ssim`: an image against a reference image, pixels in [0, data_range];
- :func:`per_sample_errors`: each sample's relative RMSE of a batch of latents against reference latents;
- :func:`sample_error`: their geometric mean, the quantity :func:`meancache_kernels.tune` minimises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["psnr", "ssim", "per_sample_errors", "geometric_mean", "sample_error"]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of image ``a`` against reference ``b`` (inf when identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of two (H, W, C) images with a 7x7 uniform window (Wang et al. 2004, K1 = 0.01,
    K2 = 0.03, sample covariances), averaged over channels: scikit-image's when installed, else the same formula in
    numpy (:func:`_ssim_numpy`)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return _ssim_numpy(a, b, data_range, win)
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=win))


def _ssim_numpy(a: np.ndarray, b: np.ndarray, data_range: float, win: int) -> float:
    from numpy.lib.stride_tricks import sliding_window_view

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = win * win
    vals = []
    for ch in range(a.shape[-1]):
        x = sliding_window_view(a[..., ch], (win, win))
        y = sliding_window_view(b[..., ch], (win, win))
        mx, my = x.mean((-1, -2)), y.mean((-1, -2))
        vx = x.var((-1, -2)) * n / (n - 1)
        vy = y.var((-1, -2)) * n / (n - 1)
        cxy = ((x - mx[..., None, None]) * (y - my[..., None, None])).sum((-1, -2)) / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def per_sample_errors(x: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Each sample's relative RMSE ``||x_k - ref_k|| / ||ref_k||`` (float64; the absolute one where ref_k = 0)."""
    x, ref = x.double().flatten(1), ref.double().flatten(1)
    num = (x - ref).norm(dim=1)
    den = ref.norm(dim=1)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), num).tolist()


def geometric_mean(errors: Sequence[float]) -> float:
    """exp(mean log e) over finite errors; inf when empty or any error is not finite."""
    if not errors or not all(math.isfinite(e) for e in errors):
        return math.inf
    return math.exp(sum(math.log(max(e, 1e-300)) for e in errors) / len(errors))


def sample_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """The tuning metric: the geometric mean over samples of each sample's relative RMSE ``||x_k - ref_k|| /
    ||ref_k||`` (float64). Its logarithm is an affine function of the mean per-sample PSNR, the headline quality
    measure, so a schedule that is very good on one prompt and poor on the others does not win."""
    return geometric_mean(per_sample_errors(x, ref))
