"""Edge errors of polynomial estimators, many coefficient rows at once (docs/design.md section 2b, calibration):

    err[e, s] = mean_d | sum_m coef[e, m] * sources[index[e, m], s, d] |          (index -1: unused slot)

One program owns a block of edges and a block of the elements of one sample: it gathers each row of its edges once,
accumulates the combinations in float32 registers and adds one partial sum per edge atomically into [E, S]. Edge
blocks vary fastest over the grid, so the programs running together read the same element block of the sources
(from L2 once it is resident). (The module is ``edges``, not ``edge_errors``: the package exports the function
``edge_errors``, which would hide a submodule of that name.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, interpreting, next_power_of_2

__all__ = ["edge_errors"]

_GPU_BLOCK = 256  # elements per row segment (coalesced 512 B bf16 / 1 KB fp32 loads)
_GPU_EDGE_BLOCK = 8  # edges per program: an [8, 256] fp32 tile, 16 accumulator registers per thread at 4 warps
_GPU_WARPS = 4
_INTERPRET_MAX_BLOCK = 1 << 12
_INTERPRET_MAX_EDGE_BLOCK = 16
_MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension (samples)


@triton.jit
def _edge_errors_kernel(
    src_ptr,  # [T, S, D] trajectory tensors, native dtype, contiguous
    index_ptr,  # [E, M] int64 rows of src, -1 = unused
    coef_ptr,  # [E, M] float64 weights
    acc_ptr,  # [E, S] float32 sums over elements (zero-initialised)
    num_edges,
    num_edge_blocks,
    num_samples,  # S
    row_stride,  # S * D, elements per row of src (from the host: an int64 product, and S == 1 may be a constexpr)
    numel,  # D, elements per sample
    sample0,  # first sample of this launch (grids of more than 65535 samples are split)
    M: tl.constexpr,
    EDGE_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    eblk = pid % num_edge_blocks
    dblk = pid // num_edge_blocks
    sample = tl.program_id(1).to(tl.int64) + sample0
    edges = eblk * EDGE_BLOCK + tl.arange(0, EDGE_BLOCK)
    emask = edges < num_edges
    offs = dblk * BLOCK + tl.arange(0, BLOCK)
    dmask = offs < numel
    base = sample * numel + offs
    acc = tl.zeros((EDGE_BLOCK, BLOCK), dtype=tl.float32)
    for m in tl.static_range(M):
        idx = tl.load(index_ptr + edges * M + m, mask=emask, other=-1)
        used = idx >= 0
        # an unused slot contributes exactly 0 whatever its coefficient (NaN included) and reads nothing
        c = tl.load(coef_ptr + edges * M + m, mask=emask, other=0.0).to(tl.float32)
        c = tl.where(used, c, 0.0)
        rows = tl.maximum(idx, 0)
        x = tl.load(
            src_ptr + rows[:, None] * row_stride + base[None, :], mask=used[:, None] & dmask[None, :], other=0.0
        ).to(tl.float32)  # the interpreter hands bf16 over as raw bits: cast before arithmetic
        acc = acc + c[:, None] * x
    # masked element lanes and edges hold exactly 0 and add nothing
    tl.atomic_add(acc_ptr + edges * num_samples + sample, tl.sum(tl.abs(acc), axis=1), mask=emask)


def edge_errors(sources: torch.Tensor, index: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Launcher (arguments validated by ``ops.edge_errors``: index int64 and coef float64, both contiguous on
    sources' device): float16/bfloat16/float32 sources, strided ones copied to contiguous first. Returns float64
    [E, S] (float32 sums divided by the element count)."""
    check_device(sources, "edge_errors")
    num_rows, num_samples = sources.shape[0], sources.shape[1]
    src = sources.contiguous().view(num_rows, num_samples, -1)
    numel = src.shape[2]
    num_edges, num_slots = index.shape
    acc = torch.zeros((num_edges, num_samples), dtype=torch.float32, device=sources.device)
    if num_edges > 0:
        if interpreting():
            block = min(next_power_of_2(numel), _INTERPRET_MAX_BLOCK)
            edge_block, warps = min(next_power_of_2(num_edges), _INTERPRET_MAX_EDGE_BLOCK), 1
        else:
            block = min(next_power_of_2(numel), _GPU_BLOCK)
            edge_block, warps = min(next_power_of_2(num_edges), _GPU_EDGE_BLOCK), _GPU_WARPS
        num_edge_blocks = triton.cdiv(num_edges, edge_block)
        programs = num_edge_blocks * triton.cdiv(numel, block)
        if programs >= 1 << 31:
            raise ValueError(
                f"edge_errors: {num_edges} edges x {numel} elements per sample need {programs} programs per sample, "
                "more than one launch allows (2**31 - 1); split the edges into several calls"
            )
        for s0 in range(0, num_samples, _MAX_GRID_Y):
            _edge_errors_kernel[(programs, min(_MAX_GRID_Y, num_samples - s0))](
                src, index, coef, acc, num_edges, num_edge_blocks, num_samples, num_samples * numel, numel, s0,
                M=num_slots, EDGE_BLOCK=edge_block, BLOCK=block, num_warps=warps,
            )  # fmt: skip
    return acc.double().div_(numel)
