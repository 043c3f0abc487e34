"""One owner per parameter: each bad value through each public entry point gets the owner's clear error."""

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels import checks
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas
from meancache_kernels.tuning import candidate_schedules

N = 12


@pytest.fixture(scope="module")
def flow_and_profile():
    flow = GaussianMixtureFlow.random(6, components=3, seed=0)
    sig = flow_sigmas(N, 3.0)
    gen = torch.Generator().manual_seed(1)
    prof = mck.calibrate(flow, torch.randn(4, 6, dtype=torch.float64, generator=gen), sig, max_span=2, max_skip=5,
                         progress=False)
    return flow, sig, prof


def test_tune_keeps_ops_and_solver_backends_apart(flow_and_profile):
    """The bug: tune(backend="torch") passed "torch" to the solver, whose ValueError was swallowed as infeasibility,
    leaving no PSSP candidate at all."""
    flow, sig, prof = flow_and_profile
    lat = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = mck.tune(flow, lat, sig, prof, 5, backend="torch", progress=False)
    names = [c["name"] for c in got.meta["tune"]["candidates"]]
    assert any(n.startswith("pssp[") for n in names), names
    same = mck.tune(flow, lat, sig, prof, 5, backend="torch", solver_backend="python", progress=False)
    assert [c["name"] for c in same.meta["tune"]["candidates"]] == names
    with pytest.raises(ValueError, match=r"solver_backend must be one of \('auto', 'cpp', 'python'\)"):
        mck.tune(flow, lat, sig, prof, 5, solver_backend="torch", progress=False)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'\)"):
        mck.tune(flow, lat, sig, prof, 5, backend="cpp", progress=False)


def test_only_infeasibility_drops_a_candidate(flow_and_profile, monkeypatch):
    _, _, prof = flow_and_profile
    import meancache_kernels.tuning as tuning

    def broken(*args, **kwargs):
        raise ValueError("a bug, not infeasibility")

    monkeypatch.setattr(tuning, "solve", broken)
    with pytest.raises(ValueError, match="a bug, not infeasibility"):
        candidate_schedules(prof, 5)

    def infeasible(*args, **kwargs):
        raise checks.InfeasibleError("infeasible")

    monkeypatch.setattr(tuning, "solve", infeasible)
    cands = candidate_schedules(prof, 5)  # every PSSP candidate dropped, the uniform ones stay
    assert cands and all(name.startswith("uniform") or name == "default rule" for name in cands)


def test_infeasible_is_its_own_error_from_both_solvers(flow_and_profile):
    _, _, prof = flow_and_profile
    for est in (("jvp",), None):
        for backend in ("python", "auto"):
            with pytest.raises(checks.InfeasibleError, match="infeasible"):
                mck.solve(prof, 1, max_skip=2, estimators=est, backend=backend)


@pytest.mark.parametrize("bad, err", [(0, ValueError), (N + 1, ValueError), (2.5, TypeError), (True, TypeError),
                                      ("3", TypeError)])
def test_budget_through_every_entry_point(flow_and_profile, bad, err):
    flow, sig, prof = flow_and_profile
    lat = torch.randn(2, 6, dtype=torch.float64)
    calls = [
        lambda: mck.Schedule.uniform(N, bad, "taylor1"),
        lambda: mck.solve(prof, bad),
        lambda: mck.solve(prof, bad, estimators=("jvp",)),
        lambda: mck.solver.solve_costs(prof.costs, bad),
        lambda: candidate_schedules(prof, bad),
        lambda: mck.tune(flow, lat, sig, prof, bad, progress=False),
    ]
    for call in calls:
        with pytest.raises(err, match="budget"):
            call()


def test_budget_message_names_the_range():
    with pytest.raises(ValueError, match=r"budget must be in 1\.\.N=12"):
        checks.check_budget(13, 12)
    with pytest.raises(TypeError, match=r"budget must be an int .*1\.\.N"):
        checks.check_budget(2.0, 12)
    assert checks.check_budget(12, 12) == 12


@pytest.mark.parametrize("bad, err", [(0.0, ValueError), (-1, ValueError), (float("inf"), ValueError),
                                      ("2", TypeError), (True, TypeError)])
def test_gamma_through_every_entry_point(flow_and_profile, bad, err):
    _, _, prof = flow_and_profile
    for call in (lambda: mck.solve(prof, 5, gamma=bad), lambda: mck.solve(prof, 5, gamma=bad, estimators=("jvp",)),
                 lambda: mck.solver.solve_costs(prof.costs, 5, gamma=bad),
                 lambda: mck.solver.solve_frontier(prof, gamma=bad)):
        with pytest.raises(err, match="gamma"):
            call()


def test_backends_through_every_entry_point(flow_and_profile):
    flow, sig, prof = flow_and_profile
    z = torch.randn(2, 6, dtype=torch.float64)
    sched = mck.Schedule.uniform(N, 5, "taylor1")
    for call in (lambda: mck.sample(flow, z, sig, sched, backend="cpp"),
                 lambda: mck.MeanCacheState(sched, sig, backend="python"),
                 lambda: mck.ops.euler_step(z, z, -0.1, backend="cpp")):
        with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'\)"):
            call()
    for call in (lambda: mck.solve(prof, 5, backend="torch"), lambda: mck.solve(prof, 5, backend="triton",
                                                                                 estimators=("jvp",)),
                 lambda: mck.solver.solve_frontier(prof, backend="torch"),
                 lambda: mck.solver.solve_costs(prof.costs, 5, backend="torch")):
        with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'cpp', 'python'\)"):
            call()


def test_estimator_names_through_every_entry_point(flow_and_profile):
    _, _, prof = flow_and_profile
    for call in (lambda: mck.solve(prof, 5, estimators=("taylor3",)), lambda: mck.Schedule.uniform(N, 5, "nope"),
                 lambda: checks.check_estimator_names(["taylor1", "jvp2"])):
        with pytest.raises(ValueError, match="unknown estimator .* available"):
            call()
    with pytest.raises(ValueError, match="non-empty"):
        mck.solve(prof, 5, estimators=())
    with pytest.raises(TypeError, match="estimator name must be a str"):
        checks.check_estimator_names([1])
    assert checks.check_estimator_names("taylor2") == ("taylor2",)
    assert checks.check_estimator_names(["mean1", "mean1", "jvp"]) == ("mean1", "jvp")


def test_sigmas_through_every_entry_point(flow_and_profile):
    flow, sig, prof = flow_and_profile
    z = torch.randn(2, 6, dtype=torch.float64)
    bad = list(sig.tolist())
    bad[3] = bad[2]  # not strictly decreasing
    sched = mck.Schedule.uniform(N, 5, "taylor1")
    for call in (lambda: mck.sample(flow, z, bad, sched), lambda: mck.MeanCacheState(sched, bad),
                 lambda: mck.tune(flow, z, bad, prof, 5, progress=False),
                 lambda: mck.calibrate(flow, z, bad, progress=False)):
        with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
            call()


def test_moved_solver_names_still_resolve_with_a_warning():
    import meancache_kernels.schedule as schedule

    with pytest.warns(DeprecationWarning, match="moved to meancache_kernels.solver.solve"):
        assert schedule.solve is mck.solve
    with pytest.raises(AttributeError):
        schedule.no_such_name  # noqa: B018
    import meancache_kernels.tuning as tuning

    assert callable(mck.tune) and callable(mck.calibrate) and tuning.tune is mck.tune
