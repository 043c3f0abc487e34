"""`meancache solve` and `meancache show` on a small calibrated profile."""

import numpy as np
import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.cli import main
from meancache_kernels.solver import solve_frontier
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    flow = GaussianMixtureFlow.random(6, components=3, seed=0)
    z = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    prof = mck.calibrate(flow, z, flow_sigmas(12, 3.0), max_span=3, max_skip=5, progress=False, meta={"model": "gmm"})
    path = tmp_path_factory.mktemp("prof") / "gmm.npz"
    prof.save(path)
    return path


def test_solve_prints_schedule_and_writes_json(profile_path, tmp_path, capsys):
    out_json = tmp_path / "s.json"
    assert main(["solve", str(profile_path), "--budget", "5", "--gamma", "1.5", "--estimators", "jvp",
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    expected = mck.solve(mck.Profile.load(profile_path), 5, gamma=1.5, estimators=("jvp",))
    steps, ks = expected.to_official()
    assert f"compute steps: {steps}" in text and f"K per interval: {ks}" in text
    assert f"calc_dict = {steps}" in text and "edge_source = [" in text
    assert mck.Schedule.from_json(out_json) == expected


def test_solve_default_uses_every_estimator(profile_path, tmp_path, capsys):
    out_json = tmp_path / "s.json"
    assert main(["solve", str(profile_path), "--budget", "5", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    expected = mck.solve(mck.Profile.load(profile_path), 5)
    assert expected.meta["estimators"] == ["taylor1", "taylor2", "mean1", "mean2", "taylorc1", "taylorc2"]
    assert f"compute steps: {expected.compute_steps}" in text and "estimator per interval: [" in text
    assert mck.Schedule.from_json(out_json) == expected


def test_solve_errors_are_clean(profile_path, tmp_path):
    with pytest.raises(SystemExit, match="infeasible"):
        main(["solve", str(profile_path), "--budget", "1"])  # 0 -> 12 would skip 11 > max_skip = 5 steps
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(SystemExit, match="not a readable MeanCache profile"):
        main(["solve", str(bad), "--budget", "3"])


def test_a_file_that_is_not_a_profile_says_so(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for cmd in (["solve", str(text), "--budget", "3"], ["show", str(text), "-o", str(tmp_path / "p.png")]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        msg = str(e.value)
        assert "not a readable MeanCache profile" in msg and "not an .npz archive" in msg and "notes.txt" in msg
        assert "pickle" not in msg  # numpy's advice to load it unsafely must not reach the user
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"single numpy array \(\.npy\)"):
        mck.Profile.load(tmp_path / "plain.npy")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        mck.Profile.load(tmp_path / "empty.npz")


@pytest.mark.parametrize("budget", ["1", "13"])
def test_solve_and_show_name_the_same_feasible_range(profile_path, tmp_path, budget):
    # N = 12, max_skip = 5: B = 1 needs a 12-step edge; B = 13 > N. Both commands name the range the frontier has.
    front = solve_frontier(mck.Profile.load(profile_path))
    expected = f"feasible budgets: {min(front)}..{max(front)}"
    assert list(front) == list(range(min(front), max(front) + 1)) and min(front) == 2
    msgs = []
    for cmd in (["solve", str(profile_path), "--budget", budget],
                ["show", str(profile_path), "--budget", budget, "-o", str(tmp_path / "p.png")]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        msgs.append(str(e.value))
    for msg in msgs:
        assert f"budget={budget} is infeasible for this profile (N=12, max_skip=5); {expected}" in msg, msg


def test_show_writes_png(profile_path, tmp_path, capsys):
    out = tmp_path / "plot.png"
    assert main(["show", str(profile_path), "--budget", "4", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "feasible budgets: 2..12" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="infeasible"):
        main(["show", str(profile_path), "--budget", "1", "-o", str(out)])
    assert main(["show", str(profile_path), "--budget", "4", "--estimators", "jvp", "-o", str(out)]) == 0


def test_show_heatmap_is_the_cheapest_cost_of_each_edge(profile_path):
    import numpy as np

    from meancache_kernels.cli import _edge_cost_map

    prof = mck.Profile.load(profile_path)
    np.testing.assert_array_equal(_edge_cost_map(prof, ("jvp",)), prof.min_cost())
    poly = _edge_cost_map(prof, prof.poly_estimators)
    both = _edge_cost_map(prof, prof.estimators)
    n = prof.num_steps
    i, d = 3, 4  # edge 3 -> 7: the minimum over estimators and states of the calibrated polynomial costs
    assert poly[i, i + d] == prof.poly_costs[:, i, :, :, d].min()
    assert both[i, i + d] == min(poly[i, i + d], prof.min_cost()[i, i + d])
    assert (np.diag(both, 1) == 0).all() and np.isinf(both[n, 0])
