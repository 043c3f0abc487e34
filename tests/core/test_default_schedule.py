"""The calibration-free default schedule (meancache_kernels.default_rule)."""


import numpy as np
import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.default_rule import DEFAULT_RULE, Rule, default_schedule, rule_schedule
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

POLY = {"taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2"}


def _sig(n, shift=3.0):
    return flow_sigmas(n, shift).tolist()


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_exact_budget_every_n_and_b(shift):
    for n in list(range(1, 31)) + [50, 64]:
        s = _sig(n, shift)
        for b in range(1, n + 1):
            sched = default_schedule(s, b)
            assert sched.num_steps == n
            assert sched.budget == b, (n, b, sched.compute_steps)
            assert sched.compute[0] is True
            names = {e for e in sched.estimator_names() if e}
            assert names <= POLY, names
            assert all(e for c, e in zip(sched.compute, sched.estimator_names()) if not c)


def test_full_budget_is_all_computed_and_budget_one_works():
    s = _sig(28)
    assert default_schedule(s, 28) == mck.Schedule.full(28)
    one = default_schedule(s, 1)
    assert one.compute_steps == [0] and one.budget == 1
    assert default_schedule([1.0, 0.0], 1) == mck.Schedule.full(1)


def test_inputs_list_tuple_numpy_tensor_agree_and_deterministic():
    t = flow_sigmas(50, 3.0)
    ref = default_schedule(t, 10)
    for s in (t.tolist(), tuple(t.tolist()), t.numpy(), t.float(), np.asarray(t.tolist(), np.float32)):
        got = default_schedule(s, 10)
        assert got == ref
    again = default_schedule(t, 10)
    assert again == ref and again.meta == ref.meta and again.estimator_names() == ref.estimator_names()


def test_meta_records_source_and_rule():
    sched = default_schedule(_sig(50), 17)
    assert sched.meta["source"] == "default"
    assert sched.meta["rule"] == DEFAULT_RULE.name and isinstance(sched.meta["rule"], str) and sched.meta["rule"]


@pytest.mark.parametrize("bad", [0, 21, -3])
def test_budget_out_of_range_names_budget_and_range(bad):
    with pytest.raises(ValueError, match=r"budget.*1\.\.N=20"):
        default_schedule(_sig(20), bad)


@pytest.mark.parametrize("bad", [2.5, True, "3", None])
def test_budget_wrong_type_names_budget_and_range(bad):
    with pytest.raises(TypeError, match=r"budget.*1\.\.N=20"):
        default_schedule(_sig(20), bad)


def test_budget_numpy_integer_accepted():
    assert default_schedule(_sig(20), np.int64(7)).budget == 7


@pytest.mark.parametrize("bad, err", [
    ([0.0, 0.5, 1.0], ValueError),  # increasing
    ([1.0, 0.5, 0.5, 0.0], ValueError),  # not strictly decreasing
    ([1.0, 0.5, 0.1], ValueError),  # does not end at 0
    ([1.0, float("nan"), 0.0], ValueError),
    ([1.0], ValueError),
    ([[1.0, 0.5, 0.0]], ValueError),
    ("1.0 0.5 0.0", TypeError),
    (3.0, TypeError),
])
def test_bad_sigmas_name_sigmas(bad, err):
    with pytest.raises(err, match="sigmas"):
        default_schedule(bad, 1)


def test_estimators_restriction_honoured():
    for n, b in ((50, 10), (50, 25), (28, 7), (20, 4), (12, 2)):
        s = _sig(n)
        for allowed in (("taylor1", "taylor2"), ("taylor1",), ("taylor2",), ("mean1",), ("taylorc1", "jvp")):
            sched = default_schedule(s, b, estimators=allowed)
            used = {e for e in sched.estimator_names() if e}
            assert used and used <= set(allowed), (n, b, allowed, used)
            assert sched.budget == b
            assert sched.compute == default_schedule(s, b).compute  # the restriction changes estimators only


def test_multistep_sampler_takes_taylor1_on_every_gap_at_the_same_steps():
    for n, b in ((50, 25), (50, 17), (50, 10), (28, 14), (8, 4), (5, 5), (9, 1)):
        s = _sig(n)
        euler = default_schedule(s, b, estimators=("taylor1", "taylor2"))
        multi = default_schedule(s, b, estimators=("taylor1", "taylor2"), sampler="multistep")
        assert multi.compute == euler.compute == default_schedule(s, b).compute
        assert {e for e in multi.estimator_names() if e} <= {"taylor1"}
        if b < n:
            assert set(multi.estimator_names()) == {"", "taylor1"}
        assert default_schedule(s, b, sampler="multistep") == multi  # taylor1 is the rule's first choice, allowed
        # a restriction still wins over the rule's preference
        assert {e for e in default_schedule(s, b, estimators=("taylor2",), sampler="multistep").estimator_names()
                if e} <= {"taylor2"}
    # at B = 17 of 50 (gaps of 2-3 skipped steps) the Euler rule's corrector-free choice is taylor2: the rules differ
    assert set(default_schedule(_sig(50), 17, estimators=("taylor1", "taylor2")).estimator_names()) == {"", "taylor2"}
    with pytest.raises(ValueError, match=r"sampler must be one of \['euler', 'multistep'\], got 'unipc'"):
        default_schedule(_sig(50), 10, sampler="unipc")


def test_estimators_restriction_errors():
    s = _sig(20)
    with pytest.raises(ValueError, match="polynomial"):
        default_schedule(s, 5, estimators=("jvp",))
    with pytest.raises(ValueError, match="unknown estimator"):
        default_schedule(s, 5, estimators=("taylor7",))
    with pytest.raises(ValueError, match="estimators"):
        default_schedule(s, 5, estimators=())


def _rel(flow, z, sig, sched, ref):
    out = mck.sample(flow, z, sig, sched)
    return ((out - ref).norm() / ref.norm()).item()


def test_runs_with_sample_and_beats_uniform_jvp():
    flow = GaussianMixtureFlow.random(16, components=4, seed=3)
    n, b = 28, 8
    sig = flow_sigmas(n, 3.0)
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = mck.sample(flow, z, sig, mck.Schedule.full(n))
    err_default = _rel(flow, z, sig, default_schedule(sig, b), ref)
    err_jvp = _rel(flow, z, sig, mck.Schedule.uniform(n, b, "jvp"), ref)
    assert err_default < 0.5 * err_jvp, (err_default, err_jvp)
    # the taylor-only variant runs too and also beats the paper's estimator on evenly spaced steps
    err_taylor = _rel(flow, z, sig, default_schedule(sig, b, estimators=("taylor1", "taylor2")), ref)
    assert err_taylor < err_jvp, (err_taylor, err_jvp)


def test_rule_baseline_is_uniform_and_spacing_in_sigma_differs():
    for n, b in ((50, 25), (50, 17), (28, 10), (20, 4), (7, 3)):
        assert rule_schedule(_sig(n), b, Rule()) == mck.Schedule.uniform(n, b, "taylorc2")
    s = _sig(50, 6.0)
    by_sigma = rule_schedule(s, 10, Rule(alpha=1.0))
    assert by_sigma.budget == 10 and by_sigma.compute_steps != mck.Schedule.uniform(50, 10).compute_steps
    gaps = np.diff(by_sigma.compute_steps)
    assert gaps[0] > gaps[-1]  # evenly in sigma: sparse at high sigma (slow change per step with shift 6)


def test_shipped_rule_is_the_one_the_benchmark_selected():
    """bench/zero_config.py chose DEFAULT_RULE on its selection data; the package must ship exactly that rule."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "zero_config.json"
    assert path.is_file(), f"{path} (tracked in git: the benchmark's record of the selection) is missing"
    sel = json.loads(path.read_text())["selected_rule"]
    assert sel["name"] == DEFAULT_RULE.name
    rule = Rule(alpha=sel["alpha"], warp=sel["warp"], warmup=sel["warmup"], last=sel["last"],
                short=tuple(sel["short"]), long=tuple(sel["long"]) if sel["long"] else None, long_gap=sel["long_gap"])
    assert rule == DEFAULT_RULE


def test_rule_validation():
    with pytest.raises(ValueError, match="warmup"):
        Rule(warmup=0)
    with pytest.raises(ValueError, match="warp"):
        Rule(warp=0.0)
    with pytest.raises(ValueError, match="short"):
        Rule(short=("jvp",))
    with pytest.raises(TypeError, match="rule"):
        rule_schedule(_sig(10), 3, "uniform")
