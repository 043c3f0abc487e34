"""MeanCache(budget=B): the one line that learns its schedule from the first generation (meancache_kernels.learning),
the realistic analytic flows and the dynamics signature (meancache_kernels.dynamics)."""

import json
import math

import numpy as np
import pytest
import torch

import meancache_kernels as mck
from meancache_kernels import learning
from meancache_kernels.dynamics import FLUX1, FLUX1_MAG_RATIOS, measure_signature, signature_from_velocities
from meancache_kernels.learning import (
    density_steps,
    early_share,
    learn_schedule,
    output_changes,
    replay,
    trajectory_key,
)
from meancache_kernels.testing import (
    REALISTIC_FLOWS,
    GaussianMixtureFlow,
    flow_sigmas,
    power_law_flow,
    realistic_flow,
)


def _db(x, ref):
    e = (x - ref).reshape(x.shape[0], -1).norm(dim=1) / ref.reshape(ref.shape[0], -1).norm(dim=1)
    return -20 * torch.log10(e)


def _counted(f):
    calls = [0]

    def fn(z, s):
        calls[0] += 1
        return f(z, s)

    return fn, calls


# ------------------------------------------------------------------------------------------------ signature
def test_flux1_ratios_are_diffusers_published_ones():
    mag_cache = pytest.importorskip("diffusers.hooks.mag_cache")
    published = np.asarray(mag_cache.FLUX_MAG_RATIOS.tolist())
    np.testing.assert_allclose(np.asarray(FLUX1_MAG_RATIOS), published, atol=5e-4)
    assert FLUX1.early5 == pytest.approx(0.507, abs=1e-3)
    assert FLUX1.prod10 == pytest.approx(1.86, abs=5e-3)
    assert FLUX1.regime == "early phase"


def test_signature_from_velocities_exact():
    v = [torch.full((2, 3), 1.0), torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)]
    sig = signature_from_velocities(v)
    assert sig.ratios == (1.0, 2.0, 0.5)
    assert sig.changes == (0.0, 1.0, 0.5)
    assert sig.early5 == pytest.approx(1.5)
    assert sig.prod10 == pytest.approx(1.0)
    text = sig.format()
    assert "FLUX.1-dev" in text and "early5" in text and text.count("\n") >= 28


@pytest.mark.parametrize("bad, err", [([torch.ones(2, 3)], ValueError), ([torch.ones(2, 3), 1.0], TypeError),
                                      ([torch.ones(2, 3), torch.ones(2, 4)], ValueError)])
def test_signature_bad_input(bad, err):
    with pytest.raises(err):
        signature_from_velocities(bad)


def test_power_flux_matches_flux1_within_25_percent_and_old_flows_do_not():
    s = flow_sigmas(28, 3.0)
    z = torch.randn(8, 512, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = measure_signature(realistic_flow("power-flux"), z, s)
    assert abs(sig.early5 / FLUX1.early5 - 1) <= 0.25
    assert abs(sig.prod10 / FLUX1.prod10 - 1) <= 0.25
    assert sig.regime == "early phase"
    smooth = GaussianMixtureFlow.random(64, seed=0)
    sig2 = measure_signature(smooth, torch.randn(8, 64, generator=torch.Generator().manual_seed(1),
                                                 dtype=torch.float64), s)
    assert sig2.early5 < 0.1 and sig2.regime == "smooth"


def test_diagonal_mixture_velocity_matches_isotropic_when_equal():
    f_iso = GaussianMixtureFlow.random(16, seed=3)
    f_diag = GaussianMixtureFlow(f_iso.means, f_iso.variances[:, None].expand(-1, 16), f_iso.log_weights.exp())
    x = torch.randn(5, 16, dtype=torch.float64)
    for s in (1.0, 0.7, 0.2, 0.0):
        torch.testing.assert_close(f_diag(x, s), f_iso(x, s), rtol=1e-12, atol=1e-12)


def test_diagonal_flow_transports_to_its_data():
    # a Gaussian with diagonal covariance: the exact flow maps N(0, I) to N(0, diag(lam)) (variance ratio to 5 %)
    lam = torch.tensor([100.0, 1.0, 0.01], dtype=torch.float64)
    f = GaussianMixtureFlow(torch.zeros(1, 3, dtype=torch.float64), lam[None])
    z = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = flow_sigmas(200, 1.0)
    out = mck.sample(f, z, s, mck.Schedule.full(200), backend="torch")
    np.testing.assert_allclose(out.var(0).numpy() / lam.numpy(), 1.0, rtol=0.08)


@pytest.mark.parametrize("kwargs", [dict(dim=0), dict(coarse=600), dict(amplitude=-1.0), dict(decided=1.0),
                                    dict(exponent=float("nan"))])
def test_power_law_flow_bad_input(kwargs):
    with pytest.raises(ValueError):
        power_law_flow(**kwargs)


def test_realistic_flow_names():
    assert set(REALISTIC_FLOWS) >= {"power-flux", "power-strong", "power-mild", "late-mixture"}
    with pytest.raises(ValueError, match="must be one of"):
        realistic_flow("flux")


# ------------------------------------------------------------------------------------------------ placement
def test_density_steps_flat_changes_is_even_and_dense_where_the_model_changes():
    assert density_steps([0.1] * 28, 10) == mck.Schedule.uniform(28, 10).compute_steps
    changes = [0.0] + [1.0] * 5 + [0.01] * 22
    steps = density_steps(changes, 10)
    assert steps[0] == 0 and steps[-1] == 27 and len(steps) == 10
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert sum(1 for i in steps if i <= 6) > sum(1 for i in mck.Schedule.uniform(28, 10).compute_steps if i <= 6)
    assert density_steps(changes, 28) == list(range(28))


def test_output_changes_exact():
    v = torch.tensor([[[3.0, 4.0]], [[3.0, 4.0]], [[0.0, 4.0]]])  # norms 5, 5, 4: mean 14/3
    assert output_changes(v) == pytest.approx([0.0, 0.0, 3.0 / (14 / 3)])
    assert early_share([0.0] + [1.0] * 27) == pytest.approx(10 / 27)
    assert early_share([0.0] * 28) == 0.0


def test_replay_of_every_step_is_the_trajectory():
    f = realistic_flow("power-mild")
    s = flow_sigmas(12, 3.0)
    z0 = torch.randn(2, f.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zs, vs = [z0], []
    mck.sample(f, z0, s, mck.Schedule.full(12), backend="torch",
               callback=lambda i, zn, v, c: (zs.append(zn), vs.append(v)))
    z, v = torch.stack(zs), torch.stack(vs)
    torch.testing.assert_close(replay(mck.Schedule.full(12), z, v, s, backend="torch"), z[-1], rtol=0, atol=0)
    # a skipping schedule replayed equals sampling with a model that answers the recorded velocities
    sched = mck.default_schedule(s, 6)
    idx = {float(x): i for i, x in enumerate(s[:-1].tolist())}
    expect = mck.sample(lambda x, sg: v[idx[float(sg)]], z0, s, sched, backend="torch")
    torch.testing.assert_close(replay(sched, z, v, s, backend="torch"), expect, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ MeanCache
def test_meancache_learns_once_then_makes_b_calls():
    f = realistic_flow("power-flux")
    s = flow_sigmas(28, 3.0)
    z = torch.randn(2, f.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mc = mck.MeanCache(14, backend="torch")
    fn, calls = _counted(f)
    first = mc.sample(fn, z, s)
    assert calls[0] == 28 and mc.last["learning"] and mc.last["calls"] == 28
    torch.testing.assert_close(first, mck.sample(f, z, s, mck.Schedule.full(28), backend="torch"), rtol=0, atol=0)
    (entry,) = mc.learned.values()
    assert entry.calls == 28 and entry.info["generation"] == 1 and entry.schedule.budget == 14
    assert entry.info["regime"] == "early phase"
    calls[0] = 0
    z2 = torch.randn(3, f.dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)  # other batch
    mc.sample(fn, z2, s)
    assert calls[0] == 14 and not mc.last["learning"]
    calls[0] = 0
    mc.sample(fn, z2, flow_sigmas(20, 3.0))  # another N: a new key, learns again
    assert calls[0] == 20 and mc.last["learning"] and len(mc.learned) == 2


def test_meancache_learned_beats_even_rule_on_a_flow_with_an_early_phase():
    # one learning latent each time, 4 of them: the learnt schedule varies with that latent (bench/RESULTS.md)
    f = realistic_flow("power-flux")
    s = flow_sigmas(28, 3.0)
    zt = torch.randn(8, f.dim, generator=torch.Generator().manual_seed(100), dtype=torch.float64)
    ref = mck.sample(f, zt, s, mck.Schedule.full(28), backend="torch")
    even = float(_db(mck.sample(f, zt, s, mck.default_schedule(s, 14), backend="torch"), ref).mean())
    gains = []
    for seed in range(4):
        mc = mck.MeanCache(14, backend="torch")
        mc.sample(f, torch.randn(1, f.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), s)
        gains.append(float(_db(mc.sample(f, zt, s), ref).mean()) - even)
    assert min(gains) > -1.0 and sum(gains) / 4 > 5.0, gains


def test_meancache_learn_false_is_the_blind_rule():
    f = realistic_flow("power-mild")
    s = flow_sigmas(16, 3.0)
    z = torch.randn(2, f.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = mck.MeanCache(6, learn=False, backend="torch")
    fn, calls = _counted(f)
    out = mc.sample(fn, z, s)
    assert calls[0] == 6 and not mc.learned and not mc.last["learning"]
    torch.testing.assert_close(out, mck.sample(f, z, s, mck.default_schedule(s, 6), backend="torch"), rtol=0, atol=0)


def test_meancache_save_load_and_cache_dir(tmp_path):
    f = realistic_flow("late-mixture")
    s = flow_sigmas(16, 3.0)
    z = torch.randn(2, f.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = mck.MeanCache(6, backend="torch", cache_dir=tmp_path / "c")
    mc.sample(f, z, s)
    mc.save(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["budget"] == 6
    for other in (mck.MeanCache.load(tmp_path / "m.json", backend="torch"),
                  mck.MeanCache(6, backend="torch", cache_dir=tmp_path / "c")):
        fn, calls = _counted(f)
        out = other.sample(fn, z, s)
        assert calls[0] == 6 and not other.last["learning"]
        torch.testing.assert_close(out, mck.sample(f, z, s, mc.learned[mc.last["key"]].schedule, backend="torch"))
    with pytest.raises(ValueError, match="budget=6, not budget=5"):
        mck.MeanCache.load(tmp_path / "m.json", budget=5)
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a MeanCache learnt-schedule file"):
        mck.MeanCache.load(tmp_path / "x.json")


@pytest.mark.parametrize("kwargs, err", [(dict(budget=0), ValueError), (dict(budget=4, learn="yes"), TypeError),
                                         (dict(budget=4, cache_dir=3), TypeError),
                                         (dict(budget=4, backend="cuda"), ValueError),
                                         (dict(budget=4, estimators=("jvp",)), ValueError)])
def test_meancache_bad_input(kwargs, err):
    with pytest.raises(err):
        mck.MeanCache(**kwargs)


def test_meancache_budget_above_n_is_refused_before_any_call():
    fn, calls = _counted(realistic_flow("power-mild"))
    with pytest.raises(ValueError, match="budget"):
        mck.MeanCache(20).sample(fn, torch.zeros(1, 1024, dtype=torch.float64), flow_sigmas(10, 3.0))
    assert calls[0] == 0


def test_learn_schedule_regimes_and_key():
    s = flow_sigmas(20, 3.0)
    for name, regime in (("power-strong", "early phase"), ("late-mixture", "smooth")):
        f = realistic_flow(name)
        z0 = torch.randn(4, f.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        zs, vs = [z0], []
        mck.sample(f, z0, s, mck.Schedule.full(20), backend="torch",
                   callback=lambda i, zn, v, c: (zs.append(zn), vs.append(v)))
        z, v = torch.stack(zs), torch.stack(vs)
        assert (early_share(output_changes(v)) > 1 / 3) == (regime == "early phase")
        for b in (10, 4):
            sched, info = learn_schedule(z, v, s, b)
            assert info["regime"] == regime and sched.budget == b
            if regime == "smooth":  # the replay's best, or the even rule when the best promises under the margin
                rep = info["replay"]
                best = min(rep, key=rep.get)
                margin = 10.0 ** (-learning.REPLAY_MARGIN_DB / 20.0)
                assert info["choice"] == (best if rep[best] <= rep["default rule"] * margin else "default rule")
        sched, info = learn_schedule(z, v, s, 4, sampler="multistep")
        assert set(sched.estimator_names()) - {""} <= {"taylor1", "taylor2"}
    assert trajectory_key(s, (4, 8)) != trajectory_key(s, (4, 9)) != trajectory_key(s, (4, 8), "multistep")
    with pytest.raises(ValueError, match="z must be"):
        learn_schedule(z[:-1], v, s, 4)


def test_early_phase_needs_the_output_norm_to_grow():
    """A trajectory whose output turns fast early with a constant norm (the trained tiny models: 0.30-0.49 of the
    change early, norm +2-4 %) is smooth; the same turn with FLUX.1-like norm growth is an early phase."""
    n, s = 20, flow_sigmas(20, 3.0)
    g = torch.Generator().manual_seed(0)
    a, c = torch.randn(2, 64, generator=g, dtype=torch.float64)
    c = c - (c @ a) / (a @ a) * a
    c = c / c.norm() * a.norm()
    theta = torch.tensor([1.5 * (1 - math.exp(-i / 3)) for i in range(n)], dtype=torch.float64)
    for growth, regime in ((1.0, "smooth"), (1.6, "early phase")):
        scale = torch.tensor([growth ** min(i / 7, 1.0) for i in range(n)], dtype=torch.float64)
        v = (scale * torch.cos(theta))[:, None] * a + (scale * torch.sin(theta))[:, None] * c
        v = v[:, None, :]  # [N, S=1, D]
        z = [torch.randn(1, 64, generator=g, dtype=torch.float64)]
        for i in range(n):
            z.append(z[-1] + (s[i + 1] - s[i]) * v[i])
        z = torch.stack(z)
        assert learning.early_share(learning.output_changes(v)) >= learning.EARLY_PHASE_SHARE
        sched, info = learn_schedule(z, v, s, 8)
        assert info["regime"] == regime and sched.budget == 8
        assert (info["early_growth"] >= learning.EARLY_GROWTH_MIN) == (regime == "early phase")
        if regime == "smooth":
            assert "replay" in info and info["choice"] in info["replay"]
        else:
            assert info["choice"].startswith("warp")
            # under a multistep sampler the warp (fitted under Euler) gives way to PSSP over the estimators it allows
            sched, info = learn_schedule(z, v, s, 8, sampler="multistep")
            assert info["choice"] == "pssp[taylor1,taylor2]" and sched.budget == 8
            assert set(sched.estimator_names()) - {""} <= {"taylor1", "taylor2"}
