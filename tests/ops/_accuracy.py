"""The low-precision accuracy rule of the elementwise kernel tests (flash-attention's), shared by the test modules.

The kernel's max error against float64 must be at most twice the error of the same-precision eager computation (the
torch reference: float32 arithmetic, rounded to the output dtype) plus a tiny eps. For bfloat16 outputs under the
Triton interpreter the eps is ``bf16_interp_ulps`` bfloat16 ulps at the output's scale: the interpreter's float32 ->
bfloat16 store truncates where a GPU (and torch) rounds to nearest even.
"""

import torch
from _triton_env import INTERPRET


def tolerance_eps(out: torch.Tensor, ref64: torch.Tensor, bf16_interp_ulps: float) -> float:
    scale = float(ref64.abs().max()) if ref64.numel() else 0.0
    if out.dtype == torch.bfloat16 and INTERPRET:
        return bf16_interp_ulps * torch.finfo(torch.bfloat16).eps * scale
    return 1e-6 * max(scale, 1e-30)


def assert_as_accurate(out: torch.Tensor, out_torch: torch.Tensor, ref64: torch.Tensor, *,
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
    assert err <= 2 * err_torch + tolerance_eps(out, ref64, bf16_interp_ulps), (err, err_torch)
    return err
