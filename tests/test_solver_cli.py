"""`meancache solve` and `meancache show` on a small calibrated profile."""

import pytest
import torch

import meancache_kernels as mck
from meancache_kernels.cli import main
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
    assert expected.meta["estimators"] == ["jvp", "taylor1", "taylor2", "mean1", "mean2"]
    assert f"compute steps: {expected.compute_steps}" in text and "estimator per interval: [" in text
    assert mck.Schedule.from_json(out_json) == expected


def test_solve_errors_are_clean(profile_path, tmp_path):
    with pytest.raises(SystemExit, match="infeasible"):
        main(["solve", str(profile_path), "--budget", "1"])  # 0 -> 12 would skip 11 > max_skip = 5 steps
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(SystemExit, match="not a readable MeanCache profile"):
        main(["solve", str(bad), "--budget", "3"])


def test_show_writes_png(profile_path, tmp_path, capsys):
    out = tmp_path / "plot.png"
    assert main(["show", str(profile_path), "--budget", "4", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "feasible budgets 2..12" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="infeasible"):
        main(["show", str(profile_path), "--budget", "1", "-o", str(out)])
