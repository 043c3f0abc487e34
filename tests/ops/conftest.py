"""Fixtures and the ``triton`` marker of the ops tests.

Where the Triton tests run: CUDA when present (and not interpreting), else the CPU interpreter (tests/conftest.py
sets TRITON_INTERPRET=1 where there is no CUDA device). The facts are taken once, when this conftest is imported, so
a test that monkeypatches TRITON_INTERPRET does not change them.

- ``@pytest.mark.triton`` (registered in pyproject.toml; or ``pytest.param("triton", marks=pytest.mark.triton)``):
  runs a Triton kernel. triton is a test dependency: when it does not import, or when the kernels can run nowhere
  (no CUDA device and TRITON_INTERPRET=0 exported), these tests FAIL with the reason; they are never skipped.
- fixtures: ``device`` ("cuda" or "cpu"), ``interpret`` (bool), ``has_triton`` (bool) and ``assert_as_accurate``
  (the low-precision accuracy rule of the elementwise kernel tests).
"""

import os

import pytest
import torch

try:
    import triton  # noqa: F401

    _TRITON_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the environment; reported as a failure below
    _TRITON_ERROR = f"{type(exc).__name__}: {exc}"

_HAS_TRITON = _TRITON_ERROR is None
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_DEVICE = "cuda" if torch.cuda.is_available() and not _INTERPRET else "cpu"
if not _HAS_TRITON:
    _TRITON_FAIL = f"triton, a test dependency (pip install -e '.[test]'), does not import: {_TRITON_ERROR}"
elif _DEVICE == "cpu" and not _INTERPRET:
    _TRITON_FAIL = ("no CUDA device and TRITON_INTERPRET=0: the Triton kernels can run nowhere; unset "
                    "TRITON_INTERPRET (the test conftest then interprets them on the CPU)")
else:
    _TRITON_FAIL = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _TRITON_FAIL is not None and item.get_closest_marker("triton") is not None:
        pytest.fail(_TRITON_FAIL, pytrace=False)


@pytest.fixture
def device() -> str:
    """The device of the Triton tests' tensors: "cuda" when present and not interpreting, else "cpu"."""
    return _DEVICE


@pytest.fixture
def interpret() -> bool:
    """Whether the session runs the Triton kernels through the interpreter (TRITON_INTERPRET=1)."""
    return _INTERPRET


@pytest.fixture
def has_triton() -> bool:
    """Whether triton imports."""
    return _HAS_TRITON


# The low-precision accuracy rule of the elementwise kernel tests (flash-attention's), shared by the test modules.
#
# The kernel's max error against float64 must be at most twice the error of the same-precision eager computation (the
# torch reference: float32 arithmetic, rounded to the output dtype) plus a tiny eps. For bfloat16 outputs under the
# Triton interpreter the eps is ``bf16_interp_ulps`` bfloat16 ulps at the output's scale: the interpreter's float32 ->
# bfloat16 store truncates where a GPU (and torch) rounds to nearest even.


def _tolerance_eps(out: torch.Tensor, ref64: torch.Tensor, bf16_interp_ulps: float) -> float:
    scale = float(ref64.abs().max()) if ref64.numel() else 0.0
    if out.dtype == torch.bfloat16 and _INTERPRET:
        return bf16_interp_ulps * torch.finfo(torch.bfloat16).eps * scale
    return 1e-6 * max(scale, 1e-30)


def _assert_as_accurate(out: torch.Tensor, out_torch: torch.Tensor, ref64: torch.Tensor, *,
                        bf16_interp_ulps: float) -> float:
    """Kernel error <= 2x the same-precision torch error + tiny eps, both against float64; returns the error."""
    assert out.shape == ref64.shape and out.dtype == out_torch.dtype
    assert not torch.isnan(out).any(), "output has NaN (an element was not written)"
    err = (out.double() - ref64).abs().max().item()
    err_torch = (out_torch.double() - ref64).abs().max().item()
    # the same-precision baseline must itself be as accurate as float32 arithmetic rounded to the output dtype
    # allows (measured: at most 1.6 ulp of the output dtype at the output's scale); otherwise the torch-backend
    # rows, where out is out_torch, would check nothing
    scale = float(ref64.abs().max()) if ref64.numel() else 0.0
    assert err_torch <= 4 * torch.finfo(out.dtype).eps * scale + 1e-30, (err_torch, scale)
    assert err <= 2 * err_torch + _tolerance_eps(out, ref64, bf16_interp_ulps), (err, err_torch)
    return err


@pytest.fixture
def assert_as_accurate():
    """The low-precision accuracy rule (flash-attention's): ``assert_as_accurate(out, out_torch, ref64, *,
    bf16_interp_ulps)`` asserts that the kernel's max error against float64 is at most twice the error of the
    same-precision eager computation (``out_torch``: float32 arithmetic rounded to the output dtype) plus a tiny eps,
    and that this baseline itself is within 4 ulps of the output dtype; returns the kernel's error. For bfloat16
    outputs under the Triton interpreter the eps is ``bf16_interp_ulps`` bfloat16 ulps at the output's scale (the
    interpreter's float32 -> bfloat16 store truncates where a GPU and torch round to nearest even); otherwise it is
    1e-6 of the scale."""
    return _assert_as_accurate
