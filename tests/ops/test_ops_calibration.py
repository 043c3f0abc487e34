"""ops.calibration_errors: the torch reference against an independent roll-out with MeanCacheState, the edge
layout (chain edges, +inf outside), validation, and the Triton kernel (interpreter) against the reference."""

import math

import pytest
import torch

from meancache_kernels import MeanCacheState, Schedule, ops
from meancache_kernels.testing import flow_sigmas, smooth_random_field


def _trajectory(n, shape, seed=0, dtype=torch.float64):
    """Full-step Euler trajectory of a smooth curved field: z [N+1, *shape], v [N, *shape], sigmas (N+1 floats)."""
    sigmas = flow_sigmas(n, shift=3.0).tolist()
    field = smooth_random_field(math.prod(shape[1:]), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    zs, vs = [z], []
    for m in range(n):
        vm = field(z, sigmas[m])
        z = z + (sigmas[m + 1] - sigmas[m]) * vm
        zs.append(z)
        vs.append(vm)
    return torch.stack(zs).to(dtype), torch.stack(vs).to(dtype), sigmas


def _rollout_with_state(z, v, sigmas, k, i, j):
    """Independent check: compute steps 0..i from the true history, skip i+1..j-1 with span k (MeanCacheState)."""
    n = len(sigmas) - 1
    compute = [m <= i or m >= j for m in range(n)]
    spans = [0 if c else k for c in compute]
    state = MeanCacheState(Schedule(compute, spans), sigmas, backend="torch")
    for m in range(i + 1):
        state.step(m, z[m], v[m])
    cur = z[i + 1]
    for m in range(i + 1, j):
        _, cur = state.skip(m, cur)
    per_elem = ((cur - z[j]) / (sigmas[j] - sigmas[i])).abs()
    return per_elem.reshape(per_elem.shape[0], -1).mean(dim=1)


def test_reference_matches_mean_cache_state_rollout():
    n, max_span, max_skip = 9, 3, 4
    z, v, sigmas = _trajectory(n, (3, 2, 5))
    err = ops.calibration_errors(z, v, sigmas, max_span, max_skip, backend="torch")
    assert err.shape == (3, max_span + 1, n + 1, n + 1)
    assert err.dtype == torch.float64
    checked = 0
    for k in range(1, max_span + 1):
        for i in range(n - 1):
            for j in range(i + 2, min(n, i + 1 + max_skip) + 1):
                expect = _rollout_with_state(z, v, sigmas, k, i, j)
                torch.testing.assert_close(err[:, k, i, j], expect, rtol=1e-10, atol=1e-12)
                checked += 1
    assert checked > 50
    # a curved field: skipping is not free, and longer skips cost more on average: for every span K the mean cost
    # over samples and starts i of the edges i -> i + L grows with L (measured for K = 1: 0.126, 0.249, 0.365, 0.476)
    assert bool((err[:, 1, 0, 2] > 0).all())
    for k in range(1, max_span + 1):
        means = [torch.stack([err[:, k, i, i + length] for i in range(n + 1 - length)]).mean().item()
                 for length in range(2, max_skip + 2)]
        assert all(a < b for a, b in zip(means, means[1:])), (k, means)


def test_reference_edge_layout():
    n, max_span, max_skip = 7, 2, 3
    z, v, sigmas = _trajectory(n, (2, 6), dtype=torch.float32)
    err = ops.calibration_errors(z, v, sigmas, max_span, max_skip)
    assert err.dtype == torch.float32
    for k in range(max_span + 1):
        for i in range(n + 1):
            for j in range(n + 1):
                cell = err[:, k, i, j]
                if j == i + 1:
                    assert bool((cell == 0).all()), (k, i, j)
                elif k >= 1 and i + 2 <= j <= min(n, i + 1 + max_skip):
                    assert bool(torch.isfinite(cell).all() and (cell >= 0).all()), (k, i, j)
                else:
                    assert bool(torch.isinf(cell).all()), (k, i, j)


def test_reference_float32_close_to_float64():
    n = 8
    z, v, sigmas = _trajectory(n, (2, 3, 4))
    e64 = ops.calibration_errors(z, v, sigmas, 3, 5, backend="torch")
    e32 = ops.calibration_errors(z.float(), v.bfloat16(), sigmas, 3, 5, backend="torch")
    assert e32.dtype == torch.float32
    # v in bf16 changes the inputs themselves: compare with float64 arithmetic on the same rounded inputs
    e64b = ops.calibration_errors(z, v.bfloat16().double(), sigmas, 3, 5, backend="torch")
    finite = torch.isfinite(e64)
    assert torch.equal(finite, torch.isfinite(e32))
    torch.testing.assert_close(e32[finite].double(), e64b[finite], rtol=1e-4, atol=1e-6)


def test_span_one_on_linear_trajectory_is_exact():
    # constant velocity: reuse (K = 1) and every larger span reproduce the trajectory, so every edge costs ~0
    n = 6
    sigmas = flow_sigmas(n).tolist()
    vel = torch.randn(2, 5, dtype=torch.float64)
    z0 = torch.randn(2, 5, dtype=torch.float64)
    z = torch.stack([z0 + (sigmas[m] - sigmas[0]) * vel for m in range(n + 1)])
    v = vel.expand(n, 2, 5).clone()
    err = ops.calibration_errors(z, v, sigmas, 3, 4)
    finite = torch.isfinite(err)
    assert float(err[finite].max()) < 1e-12


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(max_span=0), ValueError, "max_span"),
        (dict(max_skip=0), ValueError, "max_skip"),
        (dict(max_span=1.5), TypeError, "max_span"),
        (dict(max_skip=True), TypeError, "max_skip"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(sigmas=[1.0, 0.5, 0.25, 0.1]), ValueError, "sigmas"),
        (dict(sigmas=[1.0, 0.6, 0.7, 0.2, 0.0]), ValueError, "decreasing"),
        (dict(v_shape=(5, 2, 3)), ValueError, "v must have shape"),
        (dict(z_shape=(5,)), ValueError, "z must have shape"),
        (dict(z_int=True), TypeError, "z must be"),
    ],
)
def test_validation(kwargs, exc, match):
    n = 4
    z = torch.randn(kwargs.pop("z_shape", (n + 1, 2, 3)))
    if kwargs.pop("z_int", False):
        z = z.to(torch.int32)
    v = torch.randn(kwargs.pop("v_shape", (n, 2, 3)))
    args = dict(sigmas=flow_sigmas(n).tolist(), max_span=2, max_skip=2, backend="auto")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.calibration_errors(z, v, args.pop("sigmas"), args.pop("max_span"), args.pop("max_skip"), **args)


# --- the Triton kernel (interpreter on CPU) against the float64 reference --------------------------------------


def _assert_kernel_as_accurate(z, v, sigmas, max_span, max_skip):
    """Kernel error <= 2x the error of the same-precision torch reference + tiny eps, both against float64 arithmetic
    on the same (rounded) inputs; the +inf / 0 layout must match exactly."""
    got = ops.calibration_errors(z, v, sigmas, max_span, max_skip, backend="triton")
    ref_same = ops.calibration_errors(z, v, sigmas, max_span, max_skip, backend="torch")
    ref64 = ops.calibration_errors(z.double(), v.double(), sigmas, max_span, max_skip, backend="torch")
    assert got.dtype == torch.float32 and got.shape == ref64.shape and got.device == z.device
    assert not torch.isnan(got).any()
    finite = torch.isfinite(ref64)
    assert torch.equal(torch.isfinite(got), finite)
    assert torch.equal(got == 0, ref64 == 0)
    err = (got.double() - ref64)[finite].abs().max().item()
    err_torch = (ref_same.double() - ref64)[finite].abs().max().item()
    scale = ref64[finite].abs().max().item()
    # the same-precision reference's own error, bounded against the float64 computation: float32 rounding of states
    # of magnitude M = max |z| + max |v|, divided by the gap s_i - s_j of the edge. Measured at most 2.0 eps M / gap
    # (one element per sample, where no mean over elements averages the rounding out; about 0.1 on larger samples)
    mag = z.double().abs().max().item() + v.double().abs().max().item()
    s = torch.tensor(sigmas, dtype=torch.float64, device=ref64.device)
    bound = 8 * torch.finfo(torch.float32).eps * mag / (s[:, None] - s[None, :]).abs()  # [i, j], broadcast
    over = ((ref_same.double() - ref64).abs() > bound) & finite
    assert not bool(over.any()), (err_torch, scale, over.nonzero()[:5].tolist())
    assert err <= 2 * err_torch + 1e-6 * scale, (err, err_torch, scale)
    return got


@pytest.mark.triton
@pytest.mark.parametrize(
    "zdt, vdt",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
     (torch.float32, torch.bfloat16)],
    ids=lambda d: str(d).replace("torch.", ""),
)  # fmt: skip
@pytest.mark.parametrize("shape", [(1, 1), (2, 5, 7), (2, 3, 8, 8), (1, 2, 3, 4, 4)], ids=str)
def test_kernel_matches_float64(zdt, vdt, shape, device):
    # shape is [S, ...]: one element, odd sizes, image latents [S, C, H, W], video latents [S, C, T, H, W]
    n = 7
    z, v, sigmas = _trajectory(n, shape, seed=3)
    _assert_kernel_as_accurate(z.to(device, zdt), v.to(device, vdt), sigmas, 3, 4)


@pytest.mark.triton
def test_kernel_many_blocks_accumulate(monkeypatch, device, interpret):
    # small element blocks: several programs per (sample, i, K) add into the same sums, with a ragged last block
    from meancache_kernels.ops.triton import calibration

    if interpret:
        monkeypatch.setattr(calibration, "_INTERPRET_MAX_BLOCK", 16)
    else:
        monkeypatch.setattr(calibration, "_GPU_MAX_BLOCK", 16)
    z, v, sigmas = _trajectory(6, (2, 3, 13), seed=5)
    _assert_kernel_as_accurate(z.float().to(device), v.float().to(device), sigmas, 2, 3)


@pytest.mark.triton
@pytest.mark.parametrize("n, max_span, max_skip", [(2, 1, 1), (5, 7, 9), (6, 1, 5), (4, 4, 1)])
def test_kernel_span_and_skip_limits(n, max_span, max_skip, device):
    # spans and skips beyond the trajectory (K' = min(K, m), ends clipped at N), and the smallest cases
    z, v, sigmas = _trajectory(n, (2, 6), seed=n)
    got = _assert_kernel_as_accurate(z.float().to(device), v.float().to(device), sigmas, max_span, max_skip)
    assert got.shape == (2, max_span + 1, n + 1, n + 1)


@pytest.mark.triton
def test_kernel_single_step_trajectory(device):
    # N = 1: no edge can skip, only the chain edge 0 -> 1 (no launch at all)
    z, v, sigmas = _trajectory(1, (2, 4))
    got = ops.calibration_errors(z.float().to(device), v.float().to(device), sigmas, 2, 3, backend="triton")
    assert got[:, :, 0, 1].eq(0).all() and torch.isinf(got).sum() == got.numel() - 2 * 3
