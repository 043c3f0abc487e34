"""``python -m bench.gpu.ops_table`` runs end to end in its --smoke mode through the Triton interpreter (its own
fused-vs-eager agreement checks included), so the GPU script cannot rot on CPU-only CI."""

import importlib
import os

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="smoke mode runs on the interpreter")

def test_gpu_table_smoke(capsys):
    module = importlib.import_module("bench.gpu.ops_table")  # the repository root is on sys.path (pyproject)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for op in ("mean_velocity_step", "euler_step", "velocity_delta"):
        assert out.count(op) == 2 * len(module.SMOKE_SIZES), op
    assert "calibration_errors  N=6" in out
