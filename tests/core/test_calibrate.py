"""calibrate / profile_from_trajectories: chain edges, exact values on fields with known errors, batching
invariance, stability statistics and validation."""

import math

import numpy as np
import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.calibration import profile_from_trajectories
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas


def _allowed_edges(profile):
    n = profile.num_steps
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    return (j >= i + 2)[None] & np.isfinite(profile.costs)


def test_chain_edges_cost_zero_and_layout():
    flow = GaussianMixtureFlow.random(8, components=4, seed=1)
    z = torch.randn(5, 8, dtype=torch.float64)
    prof = mck.calibrate(flow, z, flow_sigmas(12, 3.0), max_span=3, max_skip=4, progress=False, batch_size=2)
    n = 12
    assert prof.costs.shape == (4, n + 1, n + 1) and prof.num_steps == n and prof.k_max == 3
    i = np.arange(n)
    assert (prof.costs[:, i, i + 1] == 0).all()
    assert np.isinf(prof.costs[0][np.triu_indices(n + 1, 2)]).all()  # K = 0: no skipped edge
    assert np.isinf(prof.costs[1, 0, 6]) and np.isfinite(prof.costs[1, 0, 5])  # 0 -> 5 skips 4 steps (max_skip)
    assert prof.max_skip == 4
    assert (prof.costs[_allowed_edges(prof)] > 0).all()  # a curved flow has an estimation error everywhere
    m = prof.meta
    assert m["num_samples"] == 5 and m["max_span"] == 3 and m["max_skip"] == 4 and m["num_steps"] == n
    assert m["dtype"] == "float64" and m["estimator"] == "official" and m["resolution"] == [8]


def test_constant_velocity_field_costs_zero_everywhere():
    """v(z, s) = c: avg = c and jvp = 0 on every edge, so the estimate is exact (up to float64 rounding)."""
    c = torch.linspace(-2.0, 3.0, 6, dtype=torch.float64)
    prof = mck.calibrate(lambda z, s: c.expand_as(z).clone(), torch.randn(3, 6, dtype=torch.float64),
                         flow_sigmas(10, 3.0), max_span=4, progress=False)
    allowed = _allowed_edges(prof)
    assert allowed.sum() == 4 * 45  # every (K, i, j >= i+2) is calibrated by default (max_skip = N - 1)
    assert prof.costs[allowed].max() < 1e-13


def test_linear_in_sigma_field_matches_hand_derivation():
    """v(z, s) = a + b s (independent of z) on the uniform grid s_t = 1 - t h, h = 1/N.

    Full-step (Euler) trajectory: z_{t+1} = z_t + (s_{t+1} - s_t) v_t with v_t = a + b s_t.

    K = 1, edge i -> j (d = j - i >= 2): avg over one step is the last velocity and jvp = 0, so every skipped step
    reuses v_i: zhat_j = z_i + (s_j - s_i) v_i, and zhat_j - z_j = sum_{t=i}^{j-1} (s_{t+1} - s_t)(v_i - v_t)
    = -b sum_{t=i+1}^{j-1} (-h)(t - i) h = b h^2 d (d - 1) / 2. Dividing by |s_j - s_i| = d h:
        L_1(i, j) = mean|b| * h (d - 1) / 2.
    K = 2, edge i -> i + 2 with i >= 1 (one skipped step m = i + 1, anchor i - 1 on the true trajectory):
        avg = (z_{i+1} - z_{i-1}) / (-2h) = a + b (s_{i-1} + s_i) / 2,
        jvp = (v_{i-1} - avg) / (-2h) = (b h / 2) / (-2h) = -b / 4,
        v_hat = v_i - jvp (s_{i+2} - s_{i+1}) = v_i - b h / 4, while v_{i+1} = v_i - b h,
        zhat_{i+2} - z_{i+2} = (-h)(v_hat - v_{i+1}) = -3 b h^2 / 4, so L_2(i, i+2) = mean|b| * 3 h / 8.
    For i = 0 the span is clamped to min(K, 1) = 1: L_2(0, 2) = L_1(0, 2) = mean|b| h / 2.
    """
    n = 10
    h = 1.0 / n
    sigmas = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    a = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    b = torch.tensor([1.0, -3.0, 0.5, 2.5], dtype=torch.float64)
    mean_abs_b = b.abs().mean().item()
    prof = mck.calibrate(lambda z, s: (a + b * s).expand_as(z).clone(), torch.randn(2, 4, dtype=torch.float64),
                         sigmas, max_span=3, max_skip=5, progress=False)
    for i, j in [(0, 2), (0, 4), (3, 5), (2, 8), (4, 10)]:
        d = j - i
        assert prof.costs[1, i, j] == pytest.approx(mean_abs_b * h * (d - 1) / 2, rel=1e-10, abs=0)
    for i in (1, 4, 8):
        assert prof.costs[2, i, i + 2] == pytest.approx(mean_abs_b * 3 * h / 8, rel=1e-10, abs=0)
    assert prof.costs[2, 0, 2] == pytest.approx(mean_abs_b * h / 2, rel=1e-10, abs=0)
    k = int(np.argmin(prof.costs[1:, 4, 6])) + 1
    assert prof.argmin_k()[4, 6] == k and prof.min_cost()[4, 6] == prof.costs[k, 4, 6] < prof.costs[1, 4, 6]
    assert prof.argmin_k((1, 1))[4, 6] == 1 and prof.argmin_k()[4, 5] == 0 and prof.min_cost()[4, 5] == 0


def test_batching_does_not_change_the_profile():
    flow = GaussianMixtureFlow.random(6, components=3, seed=4)
    z = torch.randn(7, 6, dtype=torch.float64)
    s = flow_sigmas(9, 3.0)
    p1 = mck.calibrate(flow, z, s, max_span=3, progress=False, batch_size=7)
    p2 = mck.calibrate(flow, z, s, max_span=3, progress=False, batch_size=3)
    np.testing.assert_allclose(p2.costs, p1.costs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(p2.cv, p1.cv, rtol=1e-9, atol=1e-12)
    assert p2.meta["stability"]["rank_correlation"] == pytest.approx(p1.meta["stability"]["rank_correlation"],
                                                                     rel=1e-12)
    # the mean over samples equals the mean of the per-sample errors of the op
    zs, vs = [z], []
    for i in range(9):
        vs.append(flow(zs[-1], s[i].item()))
        zs.append(zs[-1] + (s[i + 1] - s[i]).item() * vs[-1])
    err = mck.ops.calibration_errors(torch.stack(zs), torch.stack(vs), s, 3, 8, backend="torch")
    allowed = _allowed_edges(p1)
    np.testing.assert_allclose(p1.costs[allowed], err.mean(0).numpy()[allowed], rtol=1e-12, atol=0)


def test_stability_statistics():
    flow = GaussianMixtureFlow.random(6, components=4, seed=2)
    s = flow_sigmas(10, 3.0)
    same = torch.randn(1, 6, dtype=torch.float64).repeat(5, 1)  # identical samples
    p = mck.calibrate(flow, same, s, max_span=2, progress=False, batch_size=2)
    allowed = _allowed_edges(p)
    assert np.abs(p.cv[allowed]).max() < 1e-9
    assert np.isnan(p.cv[~allowed]).all()
    st = p.meta["stability"]
    assert st["rank_correlation"] == pytest.approx(1.0, abs=1e-12) and st["rank_correlation_samples"] == 5
    assert st["cv_max"] < 1e-9
    q = mck.calibrate(flow, torch.randn(6, 6, dtype=torch.float64), s, max_span=2, progress=False)
    sq = q.meta["stability"]
    assert sq["cv_mean"] > 0.01 and -1.0 <= sq["rank_correlation"] < 1.0 - 1e-6
    # mean pairwise Spearman against a direct computation from the per-sample errors
    z = torch.randn(4, 6, dtype=torch.float64)
    zs, vs = [z], []
    for i in range(10):
        vs.append(flow(zs[-1], s[i].item()))
        zs.append(zs[-1] + (s[i + 1] - s[i]).item() * vs[-1])
    zt, vt = torch.stack(zs), torch.stack(vs)
    err = mck.ops.calibration_errors(zt, vt, s, 2, 9, backend="torch").numpy()
    prof = profile_from_trajectories([(zt[:, :2], vt[:, :2]), (zt[:, 2:], vt[:, 2:])], s, max_span=2)
    mask = _allowed_edges(prof)
    from scipy.stats import rankdata

    ranks = [rankdata(e[mask]) for e in err]  # ties (K clamped to i at i = 0) get average ranks
    rho = [np.corrcoef(ranks[x], ranks[y])[0, 1] for x in range(4) for y in range(x + 1, 4)]
    assert prof.meta["stability"]["rank_correlation"] == pytest.approx(float(np.mean(rho)), rel=1e-9)
    cv = err[:, mask].std(axis=0, ddof=1) / err[:, mask].mean(axis=0)
    np.testing.assert_allclose(prof.cv[mask], cv, rtol=1e-9)


def test_profile_from_trajectories_consumes_a_generator_one_batch_at_a_time():
    flow = GaussianMixtureFlow.random(4, components=2, seed=0)
    s = flow_sigmas(6, 3.0)
    seen = []

    def gen():
        for b in range(3):
            z = torch.randn(2, 4, dtype=torch.float64)
            zs, vs = [z], []
            for i in range(6):
                vs.append(flow(zs[-1], s[i].item()))
                zs.append(zs[-1] + (s[i + 1] - s[i]).item() * vs[-1])
            seen.append(b)
            yield torch.stack(zs), torch.stack(vs)

    prof = profile_from_trajectories(gen(), s, max_span=2, max_skip=3, meta={"model": "gmm"})
    assert seen == [0, 1, 2] and prof.meta["num_samples"] == 6 and prof.meta["model"] == "gmm"
    assert prof.max_skip == 3


def test_validation():
    s = flow_sigmas(6, 3.0)
    f = GaussianMixtureFlow.random(4, components=2, seed=0)
    z = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="max_span"):
        mck.calibrate(f, z, s, max_span=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        mck.calibrate(f, z, s, batch_size=0, progress=False)
    with pytest.raises(TypeError, match="model_fn"):
        mck.calibrate(None, z, s, progress=False)
    with pytest.raises(ValueError, match="model_fn must return"):
        mck.calibrate(lambda x, t: x[:, :2], z, s, progress=False)
    with pytest.raises(ValueError, match="sigmas"):
        mck.calibrate(f, z, [1.0, 0.5, 0.7, 0.0], progress=False)
    with pytest.raises(ValueError, match="empty"):
        profile_from_trajectories([], s)
    with pytest.raises(ValueError, match=r"N\+1=7"):
        profile_from_trajectories([(torch.zeros(5, 2, 4), torch.zeros(4, 2, 4))], s)
    assert math.isfinite(mck.calibrate(f, z, s, max_span=1, progress=False).costs[1, 0, 3])
