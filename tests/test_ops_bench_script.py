"""bench/gpu_ops_table.py runs end to end in its --smoke mode through the Triton interpreter (its own fused-vs-eager
agreement checks included), so the GPU script cannot rot on CPU-only CI."""

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="smoke mode runs on the interpreter")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_ops_table.py"


def test_gpu_table_smoke(capsys):
    spec = importlib.util.spec_from_file_location("gpu_ops_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for op in ("mean_velocity_step", "euler_step", "velocity_delta"):
        assert out.count(op) == 2 * len(module.SMOKE_SIZES), op
    assert "calibration_errors  N=6" in out
