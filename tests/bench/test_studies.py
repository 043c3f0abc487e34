"""The studies of bench/studies that patch or subclass library internals: their rules do what their docstrings say,
the patches are undone, and each runs end to end in its --smoke mode (so an API change cannot break them silently)."""

import importlib

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import meancache_kernels as mck  # noqa: E402
from meancache_kernels import estimators as est  # noqa: E402
from meancache_kernels.testing import flow_sigmas  # noqa: E402


def load(name):
    return importlib.import_module(f"bench.studies.{name}")  # the repository root is on sys.path (pyproject)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_damped_weights_blend_linear_and_quadratic():
    dp = load("damped_predictor")
    nodes, s = [0.9, 0.7, 0.6], 0.45  # oldest first; o = 0.15 from the newest, h = 0.1 the last gap
    w = dp.damped_weights(nodes, s)
    lam = 0.15 / (0.15 + 0.1)
    w2 = est.lagrange_weights(nodes, s)
    w1 = [0.0] + est.lagrange_weights(nodes[1:], s)
    assert w == pytest.approx([a + lam * (b - a) for a, b in zip(w1, w2)], abs=1e-15)
    # exact for a velocity linear in sigma (both parts are); a quadratic is damped, not reproduced
    assert sum(w) == pytest.approx(1.0, abs=1e-12)
    assert sum(wk * x for wk, x in zip(w, nodes)) == pytest.approx(s, abs=1e-12)
    linear = sum(wk * x * x for wk, x in zip(w1, nodes))  # the linear prediction of sigma^2 (0.165; exact 0.2025)
    damped = sum(wk * x * x for wk, x in zip(w, nodes))
    assert damped == pytest.approx(linear + lam * (s * s - linear), abs=1e-12)  # the quadratic predicts it exactly
    assert linear < damped < s * s


def test_damped_patch_is_scoped():
    dp = load("damped_predictor")
    taylor2 = est.get("taylor", 2)
    nodes = [0.9, 0.7, 0.6]
    plain = taylor2.weights(nodes, 0.45, 0.4)
    with dp.damped(True):
        assert taylor2.weights(nodes, 0.45, 0.4) == dp.damped_weights(nodes, 0.45)
        assert est.get("mean", 2).weights(nodes, 0.45, 0.4) == est.lagrange_mean_weights(nodes, 0.45, 0.4)
    assert taylor2.weights(nodes, 0.45, 0.4) == plain
    with dp.damped(False):
        assert taylor2.weights(nodes, 0.45, 0.4) == plain


def test_order_select_keeps_the_budget_and_picks_an_order_per_segment():
    ao = load("adaptive_order")
    n, b = 20, 6
    sigmas = flow_sigmas(n)
    state = ao.OrderSelect(sigmas, b, "taylor", "min")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, generator=g, dtype=torch.float64)
    a, c = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    for i in range(n):
        if state.should_compute(i):
            s = sigmas[i]
            z = state.step(i, z, a + s * c + 3.0 * s * s * a)  # a velocity quadratic in sigma: order 2 predicts it
        else:
            z = state.skip(i, z)[1]
    assert state.calls == b
    assert state.decisions == list(mck.Schedule.uniform(n, b, "taylor2").compute)  # the default's steps
    assert state.chosen and set(state.chosen.values()) == {2}  # the exact order wins on every segment


@pytest.mark.slow  # 9-13 s each
@pytest.mark.parametrize("name, expected", [
    ("adaptive_order", ["static taylorc2 (the default)", "online taylor order, ratio 1.5",
                        "oracle of the static rows"]),
    ("damped_predictor", ["Euler B=5 taylorc2 damped", "UniPC order 2 B=3 taylor2 damped",
                          "DPM-Solver++ 2M B=3 3 steps"]),
    ("tune_any_scheduler", ["against the scheduler's own N-step output", "against the converged reference",
                            "| Adams order 1 | 3 |"]),
    ("multistep_estimator", ["| UniPC order 2 | 3 |", "| Heun | 3 |", "best mean per setting"]),
    ("learned_default", ["| FLUX.1-dev (published) | 0.51 | 1.86 | early phase |", "one line (learnt; mean of 4",
                         "| smoke power | 12/6 |"]),
])
def test_smoke_runs(name, expected, capsys):
    load(name).main(["--smoke"])
    out = capsys.readouterr().out
    for text in expected:
        assert text in out
    assert "nan" not in out.lower()
