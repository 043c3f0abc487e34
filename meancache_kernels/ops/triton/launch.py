"""Shared launch helpers for the Triton kernels: device checks, flat contiguous views, block sizes.

On a GPU the elementwise kernels use 1024-element blocks (8 fp32 per thread at 4 warps, two 128-bit accesses);
under ``TRITON_INTERPRET=1`` every program instance costs about a millisecond of Python, so blocks are large.
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "interpreting",
    "check_device",
    "flat_input",
    "out_buffer",
    "finish_out",
    "elementwise_config",
    "next_power_of_2",
]

_GPU_BLOCK = 1024
_GPU_WARPS = 4
_INTERPRET_MAX_BLOCK = 1 << 16


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(t: torch.Tensor, op: str) -> None:
    """The Triton kernels run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` only."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreting():
        return
    if t.device.type == "cpu":
        raise RuntimeError(
            f"{op}: backend='triton' got CPU tensors; the Triton kernels run on CUDA tensors, or on CPU only through "
            "the Triton interpreter (set TRITON_INTERPRET=1 before triton is imported). Use backend='auto' or "
            "backend='torch' for the eager reference."
        )
    raise RuntimeError(f"{op}: backend='triton' supports CUDA tensors only, got a tensor on {t.device}")


def next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def flat_input(t: torch.Tensor) -> torch.Tensor:
    """A flat contiguous view of ``t`` (a contiguous copy first when ``t`` is strided)."""
    return t.contiguous().view(-1)


def out_buffer(out: torch.Tensor | None, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Where the kernel writes: ``out`` itself when it is contiguous, else a new contiguous buffer."""
    if out is not None and out.is_contiguous():
        return out
    return torch.empty(shape, dtype=dtype, device=device)


def finish_out(out: torch.Tensor | None, buf: torch.Tensor) -> torch.Tensor:
    """Copy a buffer back into a strided ``out`` (the only case where they differ); returns the result tensor."""
    if out is None or out is buf:
        return buf
    return out.copy_(buf)


def elementwise_config(numel: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for a memory-bound elementwise kernel over ``numel`` elements."""
    if interpreting():
        return min(next_power_of_2(numel), _INTERPRET_MAX_BLOCK), 1
    return _GPU_BLOCK, _GPU_WARPS
