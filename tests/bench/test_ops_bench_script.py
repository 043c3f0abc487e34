"""``python -m bench.gpu.ops_table`` runs end to end in its --smoke mode (its own fused-vs-eager agreement checks
included): on the GPU where there is one, else through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 where there is no CUDA device), so the GPU script cannot rot on CPU-only CI."""

import importlib
import os

import pytest
import torch
import triton  # noqa: F401  (a test dependency: missing, this module fails to import)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

def test_gpu_table_smoke(capsys):
    if not _INTERPRET and not torch.cuda.is_available():
        pytest.fail("no CUDA device and TRITON_INTERPRET=0: the script's kernels can run nowhere; unset "
                    "TRITON_INTERPRET", pytrace=False)
    module = importlib.import_module("bench.gpu.ops_table")  # the repository root is on sys.path (pyproject)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for op in ("mean_velocity_step", "euler_step", "velocity_delta"):
        assert out.count(op) == 2 * len(module.SMOKE_SIZES), op
    assert "calibration_errors  N=6" in out
    assert ("through the Triton interpreter" in out) == _INTERPRET  # the device line names where it ran
