"""`meancache demo` on the shipped pipeline, and the image metrics it reports."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from meancache_kernels import cli  # noqa: E402
from meancache_kernels.demo import _ssim_numpy, psnr, run_demo, ssim  # noqa: E402

PROMPTS = ["a red circle at the top left", "a large blue square in the center"]


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rows = run_demo(None, prompts=PROMPTS, budgets=(10, 25), steps=50, out=out, progress=False, repeats=1,
                    log=lambda *_: None)
    return rows, out


def test_demo_writes_table_grid_plot_and_json(demo_rows):
    rows, out = demo_rows
    for name in ("table.txt", "results.json", "grid.png", "psnr_vs_speedup.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.width > grid.height  # 3 image columns + the prompt column, 2 rows
    res = json.loads((out / "results.json").read_text())
    assert [r["budget"] for r in res["rows"]] == [50, 25, 10] and res["prompts"] == PROMPTS
    table = (out / "table.txt").read_text()
    assert "MeanCache" in table and "PSNR" in table


def test_demo_numbers_are_sane(demo_rows):
    rows, _ = demo_rows
    full, b25, b10 = rows
    assert full.label == "full" and full.transformer_calls == 50 and math.isinf(full.psnr)
    # one batched call per computed step: exactly B transformer forwards per image batch
    assert (b25.budget, b25.transformer_calls) == (25, 25) and (b10.budget, b10.transformer_calls) == (10, 10)
    assert len(b25.schedule) == 25 and b25.schedule[0] == 0
    for r in (b25, b10):
        assert math.isfinite(r.psnr)  # close to the uncached image, not a copy of it
        assert 0.0 < r.max_abs_diff < 1.0 and 0.0 < r.ssim <= 1.0
        assert r.wall_s > 0 and r.speedup > 0
    assert b25.psnr > b10.psnr  # more computed steps, closer to the uncached output
    # measured 58.9 / 47.7 dB on the shipped model and profile (plain reuse of the last velocity: 52.6 / 41.1 dB,
    # bench/RESULTS.md); a broken estimator or schedule falls far below these floors
    assert b25.psnr > 52.0 and b10.psnr > 42.0


def test_cli_demo_runs_with_comma_budgets(tmp_path, capsys):
    rc = cli.main(["demo", "--budget", "20,40", "--steps", "40", "--prompt", "a green circle at the top right",
                   "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "calibrating" in text  # the shipped profile is for 50 steps: a 40-step profile is calibrated first
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["budget"], r["transformer_calls"]) for r in rows] == [(40, 40), (40, 40), (20, 20)]
    assert math.isinf(rows[1]["psnr"]) or rows[1]["psnr"] > 60  # B = N computes every step: no approximation


def test_demo_is_the_default_command(tmp_path):
    assert cli.DEFAULT_COMMAND == "demo"
    rc = cli.main(["--budget", "10", "--prompt", "a cyan square at the bottom left", "--out", str(tmp_path),
                   "--no-progress"])
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["label"], r["transformer_calls"]) for r in rows] == [("full", 50), ("MeanCache", 10)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=1), "steps"), (dict(budgets=(60,)), "budget"), (dict(prompts=[]), "prompts"),
    (dict(repeats=0), "repeats must be an int >= 1"),
])
def test_demo_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_demo(None, out=tmp_path, progress=False, **kwargs)


def test_cli_demo_bad_budget_exits_with_message(tmp_path):
    with pytest.raises(SystemExit, match="budget"):
        cli.main(["demo", "--budget", "ten", "--out", str(tmp_path)])


def test_psnr_known_values():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (8, 8, 3))
    assert math.isinf(psnr(a, a))
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-9)  # mse 0.01 -> 10 log10(1 / 0.01)


def test_ssim_matches_scikit_image_and_the_fallback():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (32, 32, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    ref = skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=7)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-12)
    assert _ssim_numpy(a, b, 1.0, 7) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, b) < 0.99
