"""The estimator family (docs/design.md 2b): exactness on polynomial fields, schedules, history, calibration, tune."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import meancache_kernels as mck
from meancache_kernels import estimators as est
from meancache_kernels.calibration import poly_edge_rows
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

N = 12


def _poly_field(coeffs, shape=(3, 5)):
    """v(z, sigma) = sum_k c_k sigma^k (c_k random tensors, independent of z): polynomial in sigma along any path."""
    g = torch.Generator().manual_seed(len(coeffs))
    cs = [torch.randn(shape, dtype=torch.float64, generator=g) * c for c in coeffs]

    def field(z, sigma):
        return sum(c * sigma**k for k, c in enumerate(cs)).expand(z.shape).clone()

    def integral(s0, s1):  # exact integral of v over [s0, s1] (ds signed)
        return sum(c * (s1 ** (k + 1) - s0 ** (k + 1)) / (k + 1) for k, c in enumerate(cs))

    return field, integral


# The paper's PSSP optima of the v1 profile and of test_jvp_only_calibration_is_the_old_profile's profile, written
# once by data/make_expected_schedules.py (the pure-Python DP and the C++ solver, checked equal).
_EXPECTED = json.loads((Path(__file__).parent / "data" / "expected_schedules_v1.json").read_text())


def _assert_is_expected(got: mck.Schedule, row: dict, n: int) -> None:
    """``got`` runs exactly the stored optimum: its computed steps, the stored span K of each edge on every skipped
    step of that edge, the paper's jvp estimator there, and the stored objective."""
    steps, spans = row["compute_steps"], row["spans"]
    assert got.num_steps == n and got.compute_steps == steps, (row["budget"], got.compute_steps)
    per_step = [0] * n
    for start, end, k in zip(steps, steps[1:] + [n], spans):
        per_step[start + 1:end] = [k] * (end - start - 1)
    assert list(got.spans) == per_step, row["budget"]
    assert list(got.estimators) == ["" if i in steps else "jvp" for i in range(n)]
    assert math.isclose(got.meta["objective"], row["objective"], rel_tol=1e-12), (got.meta["objective"], row)


def _mixed_schedule(n: int, family: str, p: int) -> mck.Schedule:
    # the first p + 1 steps computed (so every skipped step sees p + 1 computed velocities), then every third step
    compute = [i <= p or i % 3 == 0 for i in range(n)]
    return mck.Schedule(compute, [0 if c else p for c in compute], estimators=["" if c else family for c in compute])


def test_names_and_parse():
    assert est.available() == ["jvp", "taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2"]
    assert est.parse("taylorc1") == ("taylorc", 1) and est.get("taylorc", 2).retain == 4
    assert est.parse("jvp") == ("jvp", None) and est.parse("mean2") == ("mean", 2)
    for bad in ("taylor3", "mean", "foo", "taylor0"):
        with pytest.raises(ValueError, match="unknown estimator"):
            est.parse(bad)
    with pytest.raises(TypeError, match="str"):
        est.parse(1)
    with pytest.raises(ValueError, match="order p"):
        est.get("taylor", 3)
    with pytest.raises(ValueError, match="K >= 1"):
        est.get("jvp", 0)


@pytest.mark.parametrize("p, degree", [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)])
def test_taylor_reproduces_polynomial_fields_exactly(p, degree):
    field, _ = _poly_field([1.0] * (degree + 1))
    sig = flow_sigmas(N, 3.0)
    z = torch.randn(3, 5, dtype=torch.float64)
    sched = _mixed_schedule(N, "taylor", p)
    assert sched.budget < N
    full = mck.sample(field, z, sig, mck.Schedule.full(N))
    out = mck.sample(field, z, sig, sched)
    torch.testing.assert_close(out, full, rtol=0, atol=1e-12)


def test_taylor_is_not_exact_above_its_order():
    # the exactness test above can fail: a quadratic field is not reproduced by taylor1
    field, _ = _poly_field([1.0, 1.0, 1.0])
    sig = flow_sigmas(N, 3.0)
    z = torch.randn(3, 5, dtype=torch.float64)
    full = mck.sample(field, z, sig, mck.Schedule.full(N))
    out = mck.sample(field, z, sig, _mixed_schedule(N, "taylor", 1))
    assert (out - full).abs().max() > 1e-6


@pytest.mark.parametrize("p", [1, 2])
def test_mean_reproduces_the_exact_step_of_polynomial_fields(p):
    field, integral = _poly_field([1.0] * (p + 1))
    sig = flow_sigmas(N, 3.0).tolist()
    sched = _mixed_schedule(N, "mean", p)
    state = mck.MeanCacheState(sched, sig)
    z = torch.randn(3, 5, dtype=torch.float64)
    checked = 0
    for i in range(N):
        if state.should_compute(i):
            z = state.step(i, z, field(z, sig[i]))
        else:
            v_hat, z_next = state.skip(i, z)
            torch.testing.assert_close(z_next - z, integral(sig[i], sig[i + 1]), rtol=0, atol=1e-12)
            torch.testing.assert_close(v_hat * (sig[i + 1] - sig[i]), integral(sig[i], sig[i + 1]), rtol=0,
                                       atol=1e-12)
            z = z_next
            checked += 1
    assert checked == N - sched.budget


@pytest.mark.parametrize("p", [1, 2])
def test_corrector_makes_skipped_increments_exact_on_quadratic_fields(p):
    field, _ = _poly_field([1.0, 1.0, 1.0])  # degree 2: taylor1's prediction is not exact, the corrector is
    sig = flow_sigmas(N, 3.0)
    z = torch.randn(3, 5, dtype=torch.float64)
    compute = [i <= 2 or i % 3 == 0 or i == N - 1 for i in range(N)]
    sched = mck.Schedule(compute, [0 if c else p for c in compute],
                         estimators=["" if c else "taylorc" for c in compute])
    full = mck.sample(field, z, sig, mck.Schedule.full(N))
    torch.testing.assert_close(mck.sample(field, z, sig, sched), full, rtol=0, atol=1e-12)
    plain = mck.Schedule(compute, sched.spans, estimators=["" if c else "taylor" for c in compute])
    if p == 1:
        assert (mck.sample(field, z, sig, plain) - full).abs().max() > 1e-6  # without the corrector it is not
    # record() hands back the corrected state for loops that do their own Euler update, and leaves z alone
    state = mck.MeanCacheState(sched, sig)
    zz = z.clone()
    for i in range(N):
        if state.should_compute(i):
            v = field(zz, float(sig[i]))
            before = zz.clone()
            start = state.record(i, zz, v)
            assert torch.equal(zz, before)
            zz = start + (float(sig[i + 1]) - float(sig[i])) * v
        else:
            _, zz = state.skip(i, zz)
    torch.testing.assert_close(zz, full, rtol=0, atol=1e-12)


def test_lagrange_weights():
    nodes = [0.9, 0.5, 0.2]
    for x in (0.7, 0.1, 0.0):
        w = est.lagrange_weights(nodes, x)
        for k in range(3):  # reproduces 1, x, x^2
            assert math.isclose(sum(wi * n**k for wi, n in zip(w, nodes)), x**k, rel_tol=0, abs_tol=1e-14)
    w = est.lagrange_mean_weights(nodes, 0.4, 0.1)
    exact = (0.1**3 - 0.4**3) / 3 / (0.1 - 0.4)  # mean of x^2 over [0.1, 0.4]
    assert math.isclose(sum(wi * n**2 for wi, n in zip(w, nodes)), exact, abs_tol=1e-14)


def test_history_holds_only_what_the_estimators_read():
    sig = flow_sigmas(N, 3.0)
    field, _ = _poly_field([1.0, 1.0])
    z = torch.randn(3, 5, dtype=torch.float64)
    for family, p, traj, comp in [("taylor", 1, 0, 2), ("mean", 2, 0, 3)]:
        s = _mixed_schedule(N, family, p)
        assert (s.k_max, s.poly_depth) == (traj, comp)
        state = mck.MeanCacheState(s, sig)
        held = []
        zz = z
        for i in range(N):
            if state.should_compute(i):
                zz = state.step(i, zz, field(zz, float(sig[i])))
            else:
                _, zz = state.skip(i, zz)
            held.append(state.num_latents_held())
            assert len(state.history) == 0  # no trajectory entries: polynomial estimators read none
        assert max(held) == comp
    # the paper's schedule keeps no computed-velocity buffer
    s = mck.Schedule.from_official([0, 1, 2, 4, 7], [0, 0, 1, 2], 8)
    assert s.poly_depth == 0 and mck.MeanCacheState(s, flow_sigmas(8, 3.0)).poly_capacity == 0


# ---------------------------------------------------------------------------------------------------- Schedule
def test_schedule_estimators_json_and_official():
    s = _mixed_schedule(N, "taylor", 2)
    assert not s.is_official and s.estimator_names()[4] == "taylor2"
    d = json.loads(s.to_json())
    assert d["version"] == 2 and d["estimators"][4] == "taylor"
    back = mck.Schedule.from_json(s.to_json())
    assert back == s and back.estimators == s.estimators
    with pytest.raises(ValueError, match="besides the paper's 'jvp'"):
        s.to_official()
    # a jvp-only schedule is still written as version 1, exactly as before estimators existed
    p = mck.presets.get("qwen-image", 10)
    d1 = json.loads(p.to_json())
    assert d1["version"] == 1 and "estimators" not in d1 and set(d1) == {"format", "version", "num_steps", "compute",
                                                                          "spans", "meta"}
    old = {"format": "meancache-schedule", "version": 1, "num_steps": 4, "compute": [1, 0, 1, 0], "spans": [0, 1, 0, 2]}
    assert mck.Schedule.from_dict(old).estimators == ("", "jvp", "", "jvp")
    # different estimators: different schedules
    assert s != mck.Schedule(s.compute, s.spans)


def test_schedule_estimator_validation():
    with pytest.raises(ValueError, match="estimators\\[1\\]='foo'"):
        mck.Schedule([True, False], [0, 1], estimators=["", "foo"])
    with pytest.raises(ValueError, match="computed"):
        mck.Schedule([True, False], [0, 1], estimators=["jvp", "jvp"])
    with pytest.raises(ValueError, match="order"):
        mck.Schedule([True, False], [0, 3], estimators=["", "taylor"])
    with pytest.raises(ValueError, match="one entry per step"):
        mck.Schedule([True, False], [0, 1], estimators=[""])
    with pytest.raises(TypeError, match="estimators must be a sequence"):
        mck.Schedule([True, False], [0, 1], estimators="taylor")


def test_uniform_schedule():
    s = mck.Schedule.uniform(50, 10, "taylor1")
    assert s.compute_steps == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49] and s.budget == 10
    assert set(s.estimator_names()) == {"", "taylor1"}
    assert mck.Schedule.uniform(50, 50).compute_steps == list(range(50))
    j = mck.Schedule.uniform(20, 5, "jvp", span=2)
    assert j.is_official and set(j.spans) == {0, 2}
    w = mck.Schedule.uniform(50, 17, "taylorc2", warp=1.3)
    assert w.budget == 17 and w.compute_steps[:4] == [0, 1, 3, 6] and w.compute_steps[-1] == 49
    assert w.meta["warp"] == 1.3 and set(w.estimator_names()) == {"", "taylorc2"}
    for b, warp in [(48, 1.5), (50, 3.0), (2, 0.5), (10, 2.2)]:  # always exactly B distinct steps in 0..N-1
        steps = mck.Schedule.uniform(50, b, warp=warp).compute_steps
        assert len(steps) == b and steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] <= 49
    with pytest.raises(ValueError, match="warp"):
        mck.Schedule.uniform(10, 5, warp=0.0)
    with pytest.raises(ValueError, match="budget"):
        mck.Schedule.uniform(10, 11)
    with pytest.raises(ValueError, match="unknown estimator"):
        mck.Schedule.uniform(10, 5, "taylor9")


def test_fit_schedule_keeps_estimators():
    s = mck.Schedule.uniform(20, 6, "mean2")
    fitted = mck.schedule.fit_schedule(s, flow_sigmas(20, 3.0), flow_sigmas(30, 3.0), warn=False)
    assert fitted.num_steps == 30 and "mean2" in fitted.estimator_names()
    # every target interval inside a source mean2 interval keeps mean2 (the final chain source interval gives K=1)
    names = fitted.estimator_names()
    assert all(names[t] == "mean2" for t in range(1, 28) if not fitted.compute[t])


# ---------------------------------------------------------------------------------------------------- calibration
def test_polynomial_edge_costs_vanish_on_fields_they_reproduce():
    sig = flow_sigmas(N, 3.0)
    field, _ = _poly_field([1.0, 1.0])  # degree 1: taylor1 and taylor2 reproduce the Euler steps exactly
    z = torch.randn(4, 3, 5, dtype=torch.float64)
    prof = mck.calibrate(field, z, sig, max_span=2, max_skip=4, progress=False)
    assert prof.poly_estimators == ("taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2")
    pc = prof.poly_costs
    fin = np.isfinite(pc)
    assert pc.shape == (6, N, 6, 6, 6)
    c = pc[4:, 1:][fin[4:, 1:]]  # the corrector interpolates a degree-1 field exactly
    assert c.size > 100 and c.max() < 1e-12
    t = pc[:2, 1:][fin[:2, 1:]]  # from i = 1 on (at i = 0 only one computed velocity exists: order 0)
    assert t.size > 100 and t.max() < 1e-12
    assert pc[:2, 0][fin[:2, 0]].max() > 1e-4  # order 0 at i = 0 does not reproduce a degree-1 field
    m = pc[2:][fin[2:]]
    assert m.max() > 1e-4  # the mean estimators take the exact step, not Euler's: nonzero against Euler


def test_polynomial_edge_costs_equal_an_explicit_rollout():
    flow = GaussianMixtureFlow.random(5, components=3, seed=2)
    sig = flow_sigmas(N, 3.0).tolist()
    z0 = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    prof = mck.calibrate(flow, z0, sig, max_span=2, max_skip=5, progress=False)
    # the true trajectory
    zs, vs = [z0], []
    for i in range(N):
        vs.append(flow(zs[-1], sig[i]))
        zs.append(zs[-1] + (sig[i + 1] - sig[i]) * vs[-1])
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        e = int(rng.integers(len(prof.poly_estimators)))
        i = int(rng.integers(0, N - 2))
        name = prof.poly_estimators[e]
        p = est.get(*est.parse(name)).param
        d = int(rng.integers(2, min(6, N - i) + 1))
        if i == 0:
            a, b = 0, 0
        else:
            a = int(rng.integers(1, min(6, i) + 1))
            h = i - a
            b = 0 if h == 0 else int(rng.integers(1, min(6, h) + 1))
        nodes = [i] if a == 0 else [i - a, i] if b == 0 else [i - a - b, i - a, i]
        nodes = nodes[-(p + 1):]
        e_obj = est.get(*est.parse(name))
        z = zs[i] + (sig[i + 1] - sig[i]) * vs[i]
        for t in range(i + 1, i + d):
            w = e_obj.weights([sig[n] for n in nodes], sig[t], sig[t + 1])
            z = z + (sig[t + 1] - sig[t]) * sum(wk * vs[n] for wk, n in zip(w, nodes))
        if e_obj.corrected and i + d < N:  # the corrector's increments through h, i, j instead
            cn = ([i - a] if a else []) + [i, i + d]
            z = z + sum((sig[t + 1] - sig[t]) * sum(wk * vs[n] for wk, n in zip(
                e_obj.corrector_weights([sig[n] for n in cn], sig[t]), cn)) for t in range(i + 1, i + d))
            z = z - sum((sig[t + 1] - sig[t]) * sum(wk * vs[n] for wk, n in zip(
                e_obj.weights([sig[n] for n in nodes], sig[t], sig[t + 1]), nodes)) for t in range(i + 1, i + d))
        expected = ((z - zs[i + d]) / (sig[i + d] - sig[i])).abs().mean(dim=1).mean().item()
        if p == 1:
            b = 0 if i == 0 else b
        assert math.isclose(prof.poly_costs[e, i, a, b, d], expected, rel_tol=1e-10, abs_tol=1e-15), (name, i, a, b)
        checked += 1
    assert checked == 60


def test_jvp_only_calibration_is_the_old_profile(tmp_path):
    flow = GaussianMixtureFlow.random(5, components=3, seed=2)
    z0 = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sig = flow_sigmas(N, 3.0)
    old = mck.calibrate(flow, z0, sig, max_span=2, max_skip=5, progress=False, estimators=("jvp",))
    new = mck.calibrate(flow, z0, sig, max_span=2, max_skip=5, progress=False)
    assert old.poly_costs is None and old.estimators == ("jvp",)
    np.testing.assert_array_equal(old.costs, new.costs)
    old.save(tmp_path / "old.npz")
    assert mck.Profile.load(tmp_path / "old.npz").estimators == ("jvp",)
    new.save(tmp_path / "new.npz")
    back = mck.Profile.load(tmp_path / "new.npz")
    np.testing.assert_array_equal(back.poly_costs, new.poly_costs)
    assert back.poly_estimators == new.poly_estimators
    # the paper's PSSP on either profile is the one it always was: the optima stored in
    # data/expected_schedules_v1.json (solved by the pure-Python DP and the C++ solver, checked equal)
    for row in _EXPECTED["gaussian_mixture_jvp"]:
        b = row["budget"]
        got = mck.solve(old, b)
        _assert_is_expected(got, row, N)
        assert mck.solve(new, b, estimators=("jvp",)) == got
    with pytest.raises(ValueError, match="no costs for 'taylor1'"):
        mck.solve(old, 4, estimators=("taylor1",))
    with pytest.raises(ValueError, match="unknown estimator"):
        mck.calibrate(flow, z0, sig, progress=False, estimators=("nope",))


def test_poly_edge_rows_shapes():
    keys, index, coef = poly_edge_rows(flow_sigmas(6, 3.0).tolist(), 3, ["taylor1"])
    assert keys.shape[1] == 5 and index.shape == coef.shape == (len(keys), 5)
    assert (index[:, :2] >= 0).all() and (keys[:, 4] >= 2).all()


# ---------------------------------------------------------------------------------------------------- solve, tune
def test_solve_with_estimators_beats_the_paper_on_its_own_objective_and_on_the_flow():
    flow = GaussianMixtureFlow.random(8, components=4, seed=0)
    sig = flow_sigmas(24, 3.0)
    prof = mck.calibrate(flow, torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
                         sig, max_span=3, max_skip=6, progress=False)
    z = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    full = mck.sample(flow, z, sig, mck.Schedule.full(24))
    for b in (12, 8):
        paper = mck.solve(prof, b, estimators=("jvp",))
        superset = mck.solve(prof, b, estimators="all", edge_cost="velocity")
        assert superset.meta["objective"] <= paper.meta["objective"]  # a superset of candidates per edge
        ours = mck.solve(prof, b)  # the default: polynomial estimators, state edge cost
        assert ours.budget == b and ours.meta["estimators"] == list(prof.poly_estimators)
        assert ours.meta["edge_cost"] == "state" and paper.meta["edge_cost"] == "velocity"
        err = lambda s: ((mck.sample(flow, z, sig, s) - full).norm() / full.norm()).item()  # noqa: E731
        assert err(ours) < err(paper)


def test_solve_frontier_is_lazy_and_matches_solve():
    flow = GaussianMixtureFlow.random(6, components=3, seed=1)
    sig = flow_sigmas(16, 3.0)
    prof = mck.calibrate(flow, torch.randn(4, 6, dtype=torch.float64), sig, max_span=2, max_skip=5, progress=False)
    for estimators in (None, ("jvp",), ("taylor2", "mean1")):
        fr = mck.solver.solve_frontier(prof, estimators=estimators)
        budgets = list(fr)
        assert budgets and budgets[-1] == 16
        for b in budgets[::3]:
            assert fr[b] == mck.solve(prof, b, estimators=estimators)
            assert fr[b].meta["objective"] == mck.solve(prof, b, estimators=estimators).meta["objective"]


def test_tune_returns_the_lowest_error_candidate_where_the_answer_is_known():
    # degree-1 field: taylor1 / taylor2 on any schedule whose first interval is a chain reproduce the full run exactly
    field, _ = _poly_field([1.0, 1.0], shape=(5,))
    sig = flow_sigmas(N, 3.0)
    prof = mck.calibrate(field, torch.randn(4, 5, dtype=torch.float64), sig, max_span=2, max_skip=4,
                         progress=False)
    lat = torch.randn(3, 5, dtype=torch.float64)
    exact = mck.Schedule([i in (0, 1, 5, 9) for i in range(N)], [0 if i in (0, 1, 5, 9) else 1 for i in range(N)],
                         estimators=["" if i in (0, 1, 5, 9) else "taylor" for i in range(N)])
    cands = {"reuse": mck.Schedule.uniform(N, 4, "jvp"), "exact": exact, "jvp2": mck.Schedule.uniform(N, 4, "jvp",
                                                                                                       span=2)}
    best = mck.tune(field, lat, sig, prof, 4, candidates=cands, progress=False)
    assert best == exact and best.meta["tune"]["best"] == "exact"
    errs = {c["name"]: c["error"] for c in best.meta["tune"]["candidates"]}
    assert errs["exact"] < 1e-12 < errs["reuse"] and errs["jvp2"] > 1e-12
    assert [c["name"] for c in best.meta["tune"]["candidates"]][0] == "exact"
    assert best.meta["tune"]["model_calls"] == 3 * (N + 3 * 4)
    # the default candidate set on a flow: the returned schedule has the smallest measured error of all
    flow = GaussianMixtureFlow.random(6, components=3, seed=0)
    prof = mck.calibrate(flow, torch.randn(6, 6, dtype=torch.float64), sig, max_span=2, max_skip=5, progress=False)
    got = mck.tune(flow, torch.randn(4, 6, dtype=torch.float64), sig, prof, 5, progress=False)
    cs = got.meta["tune"]["candidates"]
    assert len(cs) >= 5 and cs[0]["error"] == min(c["error"] for c in cs) and got.budget == 5
    with pytest.raises(TypeError, match="profile must be"):
        mck.tune(flow, lat, sig, {"costs": 1}, 5, progress=False)
    with pytest.raises(TypeError, match="latents"):
        mck.tune(flow, [1.0], sig, prof, 5, progress=False)
    with pytest.raises(ValueError, match="budget"):
        mck.tune(flow, lat, sig, prof, 0, progress=False)
    with pytest.raises(ValueError, match="candidates"):
        mck.tune(flow, lat[:, :1].repeat(1, 6), sig, prof, 5, candidates={"x": mck.Schedule.full(3)}, progress=False)


def test_sample_error_is_the_geometric_mean_of_per_sample_relative_errors():
    from meancache_kernels.tuning import sample_error

    ref = torch.ones(3, 4, dtype=torch.float64)
    x = ref.clone()
    x[0] += 0.1  # relative errors 0.1, 0.01, 0.001
    x[1] += 0.01
    x[2] += 0.001
    assert math.isclose(sample_error(x, ref), 0.01, rel_tol=1e-12)
    assert sample_error(ref, ref) < 1e-200


def test_files_written_before_estimators_load_and_solve_as_before():
    data = Path(__file__).parent / "data"
    # the shipped profile and a schedule as the library wrote them at git 282b657 (format version 1)
    prof = mck.Profile.load(data / "profile_v1.npz")
    assert prof.estimators == ("jvp",) and prof.poly_costs is None
    assert [row["budget"] for row in _EXPECTED["profile_v1"]] == [25, 17, 10]
    for row in _EXPECTED["profile_v1"]:
        got = mck.solve(prof, row["budget"])
        _assert_is_expected(got, row, prof.num_steps)
        assert got == mck.solve(prof, row["budget"], estimators=("jvp",))
        assert got.meta["edge_cost"] == "velocity"
    sched = mck.Schedule.from_json(data / "schedule_v1.json")
    assert sched.is_official and sched.to_official() == ([0, 1, 3, 7, 14, 21, 28, 35, 42, 49],
                                                         [0, 2, 1, 1, 1, 1, 1, 1, 4])
    assert json.loads(sched.to_json())["version"] == 1  # and it is written back in the old format


def test_successive_halving_select():
    from meancache_kernels.tuning import select

    # per-sample errors of 8 candidates on 8 samples; c3 is best everywhere, c7 is poor on sample 0 only
    table = {f"c{k}": [1.0 + k + 0.1 * j for j in range(8)] for k in range(8)}
    table["c3"] = [0.5] * 8
    table["c7"] = [100.0] + [0.1] * 7
    calls = []

    def run(name, idx):
        calls.append((name, tuple(idx)))
        return [table[name][j] for j in idx]

    full = select(list(table), 8, run, progress=False)
    assert len(calls) == 8 and all(c[1] == tuple(range(8)) for c in calls)
    best_full = min(full, key=lambda r: r["error"])
    assert best_full["name"] == "c7" and all(r["samples"] == 8 for r in full)  # geometric mean: 0.1 * 1000^(1/8)
    calls.clear()
    half = select(list(table), 8, run, progress=False)  # same answer again without halving
    assert half == full
    calls.clear()
    halved = select(list(table), 8, run, halving=True, progress=False)
    evaluated = sum(len(i) for _, i in calls)
    assert evaluated == 8 * 1 + 4 * 1 + 2 * 2 + 1 * 4 == 20 < 64
    by = {r["name"]: r for r in halved}
    assert by["c3"]["samples"] == 8 and by["c7"]["samples"] == 1  # c7 was dropped after its poor first sample
    assert math.isclose(by["c3"]["error"], 0.5)


def test_tune_with_halving_costs_fewer_calls_and_picks_a_fully_evaluated_candidate():
    flow = GaussianMixtureFlow.random(6, components=3, seed=0)
    sig = flow_sigmas(N, 3.0)
    prof = mck.calibrate(flow, torch.randn(6, 6, dtype=torch.float64), sig, max_span=2, max_skip=5, progress=False)
    lat = torch.randn(8, 6, dtype=torch.float64)
    full = mck.tune(flow, lat, sig, prof, 5, progress=False)
    halved = mck.tune(flow, lat, sig, prof, 5, halving=True, progress=False)
    cs = halved.meta["tune"]["candidates"]
    assert cs[0]["samples"] == 8 and cs[0]["error"] == min(c["error"] for c in cs if c["samples"] == 8)
    assert halved.meta["tune"]["model_calls"] < full.meta["tune"]["model_calls"] / 2
    # the best candidate of the full evaluation survived the halving here, so both choose it
    assert halved == full


def test_choose_keeps_the_default_unless_it_is_beaten_by_more_than_the_margin():
    from meancache_kernels.tuning import choose

    def res(name, errors):
        g = math.exp(sum(math.log(e) for e in errors) / len(errors))
        return {"name": name, "error": g, "samples": len(errors), "errors": list(errors)}

    noisy = [res("default", [1.0, 1.0, 1.0, 1.0]), res("tuned", [0.5, 2.0, 0.5, 1.5])]  # lower on average, noisy
    name, how = choose(noisy, "default", 1.0)
    assert name == "default" and how["kept"] and how["name"] == "default"
    assert math.isclose(how["advantage_db"], -20 * math.log10(math.prod([0.5, 2.0, 0.5, 1.5]) ** 0.25))
    assert choose(noisy, "default", 0.0)[0] == "tuned"  # margin 0: the lowest error
    assert choose(noisy, None)[0] == "tuned" and choose(noisy, None)[1] is None
    clear = [res("default", [1.0, 1.1, 0.9, 1.0]), res("tuned", [0.5, 0.56, 0.44, 0.5])]  # 6 dB better, every time
    name, how = choose(clear, "default", 1.0)
    assert name == "tuned" and not how["kept"] and how["advantage_db"] > 5.9
    assert choose([res("default", [1.0]), res("tuned", [0.5])], "default", 1.0)[0] == "tuned"  # one sample: no s.e.
    halved = [res("default", [1.0]), res("tuned", [0.9, 0.9, 0.9, 1.0])]  # default dropped by successive halving
    assert choose(halved, "default", 1.0) == ("tuned", None)
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="default_margin_se"):
            choose(noisy, "default", bad)


def test_tune_weighs_the_library_default_and_says_so():
    from meancache_kernels.tuning import candidate_schedules, default_candidate

    flow = GaussianMixtureFlow.random(6, components=3, seed=0)
    sig = flow_sigmas(N, 3.0)
    prof = mck.calibrate(flow, torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8)),
                         sig, max_span=2, max_skip=5, progress=False)
    lat = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    lowest = mck.tune(flow, lat, sig, prof, 5, default_margin_se=0.0, progress=False)
    t = lowest.meta["tune"]
    assert t["best"] == t["lowest"] == t["candidates"][0]["name"]
    assert t["default"]["name"] == default_candidate(candidate_schedules(prof, 5), prof, 5)
    for margin in (1.0, 1e9):  # a huge margin always keeps the default
        got = mck.tune(flow, lat, sig, prof, 5, default_margin_se=margin, progress=False)
        d = got.meta["tune"]["default"]
        assert d["kept"] == (got.meta["tune"]["best"] == d["name"])
        if d["kept"]:
            assert got == mck.default_schedule(prof.sigmas, 5)  # the calibration-free default, what budget=B runs
        else:
            assert got == lowest and d["advantage_db"] > margin * d["se_db"]
    assert got.meta["tune"]["default"]["kept"] and got == mck.default_schedule(prof.sigmas, 5)
    assert d["name"] == "default rule" and t["candidates"] and "default rule" in [c["name"] for c in t["candidates"]]
    with pytest.raises(ValueError, match="default_margin_se"):
        mck.tune(flow, lat, sig, prof, 5, default_margin_se=-1, progress=False)
