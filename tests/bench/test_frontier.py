"""``python -m bench.frontier`` runs end to end in its --smoke mode (shipped pipeline at N = 8, budgets 5 and 3, one
analytic flow), prints a row for every method family, writes strict JSON, and every alternative really runs at its
budget: the counted transformer forwards of Euler-B and UniPC-B equal B, FlowMatchHeun's are within one of B, and a
cache's counted cost is within 10 % of B or its row is marked."""

import contextlib
import importlib
import io
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

def load_script():
    return importlib.import_module("bench.frontier")  # the repository root is on sys.path (pyproject: pythonpath)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    module = load_script()
    out_dir = tmp_path_factory.mktemp("frontier")
    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            assert module.main(["--smoke", "--out-dir", str(out_dir)]) == 0
    finally:
        torch.set_num_threads(threads)

    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    data = json.loads((out_dir / "frontier.json").read_text(), parse_constant=reject)
    return module, buf.getvalue(), data, out_dir


@pytest.mark.slow  # the smoke fixture: 61 s measured on a loaded 2-core machine
def test_smoke_prints_every_family(smoke):
    module, out, data, out_dir = smoke
    rows = data["pipelines"][0]["rows"]
    for family in module.FAMILIES:
        assert any(r["family"] == family and r["status"] == "ok" for r in rows), family
        table_rows = [line for line in out.splitlines() if line.startswith("| ") and f"| {family} |" in line]
        assert len(table_rows) >= len(module.SMOKE_BUDGETS), family
    assert {r["budget"] for r in rows} == set(module.SMOKE_BUDGETS)
    assert "Best per budget" in out
    assert (out_dir / "frontier.png").stat().st_size > 0
    assert (out_dir / "frontier.md").read_text().count("| Euler |") >= 2 * len(module.SMOKE_BUDGETS)  # pipeline, flow


def test_few_step_solvers_run_at_their_budget(smoke):
    _, _, data, _ = smoke
    for part in (data["pipelines"][0]["rows"], data["flows"][0]["rows"]):
        for r in part:
            if r["family"] in ("Euler", "UniPC", "DPM"):
                assert r["status"] == "ok" and r["forwards"] == r["budget"], r
            if r["family"] == "Heun":
                assert r["status"] == "ok" and abs(r["forwards"] - r["budget"]) <= 1, r
            if r["family"] == "MeanCache" and r["status"] == "ok":
                assert r["forwards"] == r["budget"], r


def test_cache_cost_within_tolerance_or_marked(smoke):
    module, _, data, _ = smoke
    caches = [r for r in data["pipelines"][0]["rows"] if r["family"] in ("FirstBlockCache", "MagCache", "TaylorSeer")]
    assert caches
    for r in caches:
        assert r["status"] == "ok", r
        within = abs(r["equiv"] - r["budget"]) <= module.TOLERANCE * r["budget"]
        assert within or r["marked"], r
        assert r["marked"] == (not within), r
        assert r["forwards"] == module.SMOKE_N  # a cache is asked at every step; equiv counts the work it did


def test_heun_steps_and_taylor_count():
    module = load_script()
    for b in (25, 17, 10, 5, 3):
        assert abs(2 * module.heun_steps(b) - 1 - b) <= 1
    # diffusers' TaylorSeer rule at N = 50 with the default warm-up of 3 steps and interval 2: steps 0, 1, 2, 4, 6, ...
    assert module.taylor_computed(50, 3, 2) == 3 + len(range(4, 50, 2))


def test_prompt_sets_are_disjoint():
    module = load_script()
    evaluation, tuning, calibration = (set(module.eval_prompts(8)), set(module.tuning_prompts(8)),
                                       set(module.calibration_prompts()))
    assert len(evaluation) == len(tuning) == len(calibration) == 8
    assert not (evaluation & tuning) and not (evaluation & calibration) and not (tuning & calibration)
