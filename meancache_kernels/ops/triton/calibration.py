"""Edge errors of MeanCache's estimator rolled out from full-step trajectories (docs/design.md section 2, edge cost):

    E[s, K, i, j] = mean_elements | (zhat_j - z_j) / (s_j - s_i) |,  zhat rolled from the true z_{i+1} over i+1..j-1.

One program owns a block of elements of one sample for one (i, K) (all pairs in one launch); each element is an
independent scalar recurrence, so the program rolls forward in registers (the last MAX_SPAN rolled states are the
only history it needs), reads the trajectory window once and atomically adds its block sum for every end j.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import check_device, interpreting, next_power_of_2

__all__ = ["calibration_errors"]

_GPU_MAX_BLOCK = 512  # the register ring holds 2 * MAX_SPAN rolled states per element
_GPU_WARPS = 4
_INTERPRET_MAX_BLOCK = 1 << 16


@triton.jit
def _calibration_kernel(
    z_ptr,  # [N+1, S, D] true states, native dtype
    v_ptr,  # [N, S, D] true velocities, native dtype
    sig_ptr,  # [N+1] float64 sigmas
    acc_ptr,  # [S, MAX_SPAN+1, N+1, N+1] float32 sums over elements (zero-initialised)
    n_steps,
    step_stride,  # S * D, elements per step (passed from the host: S == 1 may arrive as a constexpr)
    numel,  # D, elements per sample
    MAX_SPAN: tl.constexpr,
    MAX_SKIP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid_e = tl.program_id(0).to(tl.int64)
    sample = tl.program_id(1).to(tl.int64)
    pair = tl.program_id(2).to(tl.int64)
    i = pair // MAX_SPAN
    k = pair % MAX_SPAN + 1
    offs = pid_e * BLOCK + tl.arange(0, BLOCK)
    emask = offs < numel
    base = sample * numel + offs
    n1 = n_steps + 1
    acc_row = acc_ptr + ((sample * (MAX_SPAN + 1) + k) * n1 + i) * n1

    s_i = tl.load(sig_ptr + i)
    # step i is computed: zhat_{i+1} = z_{i+1}, and the next step's v_last is the true v_i
    z_cur = tl.load(z_ptr + (i + 1) * step_stride + base, mask=emask, other=0.0).to(tl.float32)
    v_last = tl.load(v_ptr + i * step_stride + base, mask=emask, other=0.0).to(tl.float32)
    hist_z = ()
    hist_v = ()
    for t in tl.static_range(MAX_SKIP):
        m = i + 1 + t  # skipped step, edge end j = m + 1
        valid = m < n_steps
        m_c = tl.minimum(m, n_steps - 1)  # keeps every address in range once the roll has passed N
        a = m_c - tl.minimum(k, m_c)
        # anchor at or before i: true trajectory; after i: a rolled-out state held in registers
        # Masks combine the scalar conditions into the bound (offs < bound), not with `&`: triton 3.9's interpreter
        # turns (block mask & scalar) into int64 data that tl.load rejects as a mask.
        true_mask = offs < tl.where(valid & (a <= i), numel, 0)
        z_a = tl.load(z_ptr + a * step_stride + base, mask=true_mask, other=0.0).to(tl.float32)
        v_a = tl.load(v_ptr + a * step_stride + base, mask=true_mask, other=0.0).to(tl.float32)
        rolled = a - i - 1
        for tt in tl.static_range(t):
            if tt >= t - MAX_SPAN:
                z_a = tl.where(rolled == tt, hist_z[tt], z_a)
                v_a = tl.where(rolled == tt, hist_v[tt], v_a)
        s_m = tl.load(sig_ptr + m_c)
        span = (s_m - tl.load(sig_ptr + a)).to(tl.float32)
        s_next = tl.load(sig_ptr + m_c + 1)
        ds = (s_next - s_m).to(tl.float32)
        avg = (z_cur - z_a) / span
        jvp = (v_a - avg) / span
        v_hat = v_last - jvp * ds
        z_next = z_cur + ds * v_hat
        valid_mask = offs < tl.where(valid, numel, 0)
        z_true = tl.load(z_ptr + (m_c + 1) * step_stride + base, mask=valid_mask, other=0.0).to(tl.float32)
        err = tl.abs((z_next - z_true) / (s_next - s_i).to(tl.float32))
        err = tl.where(emask, err, 0.0)
        tl.atomic_add(acc_row + m + 1, tl.sum(err, axis=0), mask=valid)
        hist_z = hist_z + (z_cur,)
        hist_v = hist_v + (v_hat,)
        z_cur = z_next
        v_last = v_hat


def _edge_masks(n: int, max_span: int, max_skip: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rolled edges: K >= 1 and i + 2 <= j <= min(N, i + 1 + max_skip); chain edges j = i + 1), [K+1, N+1, N+1]."""
    idx = torch.arange(n + 1)
    i, j = idx.view(-1, 1), idx.view(1, -1)
    rolled = (j >= i + 2) & (j <= i + 1 + max_skip)
    rolled = rolled.unsqueeze(0).expand(max_span + 1, -1, -1).clone()
    rolled[0] = False
    chain = (j == i + 1).unsqueeze(0).expand(max_span + 1, -1, -1)
    return rolled.to(device), chain.to(device)


def calibration_errors(
    z: torch.Tensor, v: torch.Tensor, sigmas: list[float], max_span: int, max_skip: int
) -> torch.Tensor:
    """Launcher (arguments validated by ``ops.calibration_errors``): float16/bfloat16/float32 inputs, float32 E of
    shape [S, max_span + 1, N + 1, N + 1]; strided inputs are copied to contiguous ones first."""
    check_device(z, "calibration_errors")
    n = z.shape[0] - 1
    num_samples = z.shape[1]
    zc = z.contiguous().view(n + 1, num_samples, -1)
    vc = v.contiguous().view(n, num_samples, -1)
    numel = zc.shape[2]
    acc = torch.zeros((num_samples, max_span + 1, n + 1, n + 1), dtype=torch.float32, device=z.device)
    pairs = (n - 1) * max_span
    if pairs > 0:
        sig = torch.tensor(sigmas, dtype=torch.float64).to(z.device)
        if interpreting():
            block, warps = min(next_power_of_2(numel), _INTERPRET_MAX_BLOCK), 1
        else:
            block, warps = min(next_power_of_2(numel), _GPU_MAX_BLOCK), _GPU_WARPS
        grid = (triton.cdiv(numel, block), num_samples, pairs)
        _calibration_kernel[grid](
            zc, vc, sig, acc, n, num_samples * numel, numel,
            MAX_SPAN=max_span, MAX_SKIP=min(max_skip, n - 1), BLOCK=block, num_warps=warps,
        )  # fmt: skip
    rolled, chain = _edge_masks(n, max_span, max_skip, z.device)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=z.device)
    err = torch.where(rolled, acc / numel, inf)
    return err.masked_fill(chain, 0.0)
