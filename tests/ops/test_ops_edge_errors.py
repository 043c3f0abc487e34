"""ops.edge_errors (err[e, s] = mean_d |sum_m coef[e, m] sources[index[e, m], s, d]|): the torch reference against a
brute-force float64 loop and against calibration_errors' span-1 costs, chunking, unused (-1) slots, validation, and
the Triton kernel (interpreter on CPU) against float64 in every dtype, odd shapes and with many ragged blocks.

Kernel rule (as test_ops_calibration.py): max error against float64 arithmetic on the same (rounded) inputs at most
2x the error of the same-precision torch reference (float32 arithmetic) + 1e-6 of the scale; the baseline itself
must meet a float32 bound, so the torch rows check something too.
"""

import math

import pytest
import torch

from meancache_kernels import ops
from meancache_kernels.ops import reference
from meancache_kernels.testing import flow_sigmas, smooth_random_field

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.triton)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# [T, S, ...]: one element per sample, odd sizes, image latents [T, S, C, H, W], video latents [T, S, C, F, H, W]
SHAPES = [(3, 1, 1), (9, 2, 5, 7), (7, 3, 4, 8, 8), (11, 2, 3, 2, 4, 4)]


def _problem(shape, num_edges, num_slots, device, dtype=torch.float32, unused=0.25, seed=0):
    """Random sources (on ``device``), index (about ``unused`` of the slots -1, NaN coefficients there) and float64
    coef."""
    g = torch.Generator().manual_seed(seed)
    sources = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    index = torch.randint(0, shape[0], (num_edges, num_slots), generator=g)
    index[torch.rand(num_edges, num_slots, generator=g) < unused] = -1
    coef = torch.randn(num_edges, num_slots, generator=g, dtype=torch.float64) * 2.0
    coef[index < 0] = float("nan")
    return sources, index, coef


def _brute_force(sources, index, coef):
    """Edge by edge, slot by slot, in float64."""
    src = sources.double().reshape(sources.shape[0], sources.shape[1], -1)
    out = torch.zeros(index.shape[0], src.shape[1], dtype=torch.float64)
    for e in range(index.shape[0]):
        comb = torch.zeros(src.shape[1:], dtype=torch.float64)
        for m in range(index.shape[1]):
            if index[e, m] >= 0:
                comb = comb + float(coef[e, m]) * src[int(index[e, m])].cpu()
        out[e] = comb.abs().mean(dim=1)
    return out


def _magnitude(sources, index, coef):
    """mean_d sum_m |coef| |x|: the scale of float32 rounding errors, per (e, s)."""
    return _brute_force(sources.double().abs(), index, coef.abs())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("num_slots", [1, 3, 8])
def test_reference_matches_brute_force_float64(shape, num_slots, device):
    sources, index, coef = _problem(shape, 13, num_slots, device, dtype=torch.float64)
    err = ops.edge_errors(sources, index, coef, backend="torch")
    assert err.dtype == torch.float64 and err.shape == (13, shape[1]) and err.device == sources.device
    torch.testing.assert_close(err.cpu(), _brute_force(sources, index, coef), rtol=1e-13, atol=1e-15)


def test_reference_chunks_over_edges(monkeypatch, device):
    # a working tensor of at most 1 element: one edge per chunk; and 40 elements: 2 edges of S * D = 20 per chunk
    sources, index, coef = _problem((6, 4, 5), 9, 4, device, dtype=torch.float64)
    expect = _brute_force(sources, index, coef)
    for limit in (1, 40):
        monkeypatch.setattr(reference, "_EDGE_CHUNK_ELEMENTS", limit)
        got = ops.edge_errors(sources, index, coef, backend="torch")
        torch.testing.assert_close(got.cpu(), expect, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_values_unused_slots_and_repeats(backend, device):
    # sources rows (S = 1, D = 2): r0 = [1, 2], r1 = [3, -4]
    sources = torch.tensor([[[1.0, 2.0]], [[3.0, -4.0]]], device=device)
    index = torch.tensor([[0, 1, -1], [1, 1, 0], [-1, -1, -1], [-1, 0, -1]])
    coef = torch.tensor([[2.0, 1.0, float("nan")], [0.5, 0.5, -1.0], [1.0, float("nan"), 3.0], [7.0, -0.5, 1.0]])
    err = ops.edge_errors(sources, index, coef.double(), backend=backend)
    # row 0: 2 r0 + r1 = [5, 0] -> 2.5; row 1: r1 - r0 = [2, -6] -> 4; row 2: nothing -> 0; row 3: -r0/2 -> 0.75
    assert err.squeeze(1).tolist() == [2.5, 4.0, 0.0, 0.75]
    # float32 coefficients and int32 index are accepted too
    same = ops.edge_errors(sources, index.int(), coef.float(), backend=backend)
    assert torch.equal(same, err)


def test_reproduces_span_one_calibration_costs():
    # a K = 1 skip reuses v_i: zhat_j = z_i + (s_j - s_i) v_i, so L_1(i, j) = mean |z_i / d + v_i - z_j / d|,
    # d = s_j - s_i, over sources = cat(z, v): the polynomial path agrees with the official calibration
    n, max_skip = 8, 3
    sigmas = flow_sigmas(n, shift=3.0).tolist()
    field = smooth_random_field(2 * 5, seed=2)
    z = [torch.randn(3, 2, 5, dtype=torch.float64)]
    v = []
    for m in range(n):
        v.append(field(z[-1], sigmas[m]))
        z.append(z[-1] + (sigmas[m + 1] - sigmas[m]) * v[-1])
    z, v = torch.stack(z), torch.stack(v)
    expect = ops.calibration_errors(z, v, sigmas, 1, max_skip, backend="torch")
    rows, coefs, edges = [], [], []
    for i in range(n - 1):
        for j in range(i + 2, min(n, i + 1 + max_skip) + 1):
            d = sigmas[j] - sigmas[i]
            rows.append([i, n + 1 + i, j])
            coefs.append([1 / d, 1.0, -1 / d])
            edges.append((i, j))
    err = ops.edge_errors(torch.cat([z, v]), torch.tensor(rows), torch.tensor(coefs, dtype=torch.float64))
    for e, (i, j) in enumerate(edges):
        torch.testing.assert_close(err[e], expect[:, 1, i, j], rtol=1e-10, atol=1e-13)
    assert len(edges) > 10 and bool((err > 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_edges(backend, device):
    sources = torch.randn(4, 3, 2, device=device)
    err = ops.edge_errors(sources, torch.empty(0, 2, dtype=torch.int64), torch.empty(0, 2, dtype=torch.float64))
    assert err.shape == (0, 3) and err.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(sources=[1.0]), TypeError, "sources must be a torch.Tensor"),
        (dict(sources=torch.ones(4, 2, 3, dtype=torch.int32)), TypeError, "sources must be float16"),
        (dict(sources=torch.randn(4)), ValueError, r"sources must have shape \[T, S, ...\]"),
        (dict(sources=torch.randn(4, 2, 0)), ValueError, "sources must have T >= 1 rows, S >= 1 samples"),
        (dict(index=[[0, 1]]), TypeError, "index must be an int64 torch.Tensor"),
        (dict(index=torch.zeros(3, 2)), TypeError, "index must be int64"),
        (dict(index=torch.zeros(6, dtype=torch.int64)), ValueError, r"index must have shape \[E, M\]"),
        (dict(index=torch.zeros(3, 0, dtype=torch.int64)), ValueError, "1 <= M <= 8"),
        (dict(index=torch.zeros(3, 9, dtype=torch.int64)), ValueError, r"1 <= M <= 8, got \(3, 9\)"),
        (dict(index=torch.tensor([[0, 4], [1, 2], [3, 0]])), ValueError, "rows 0..3 of sources or -1 .*, got 4"),
        (dict(index=torch.tensor([[0, 1], [-2, 2], [3, 0]])), ValueError, "rows 0..3 of sources or -1 .*, got -2"),
        (dict(index=torch.zeros(3, 2, dtype=torch.int64, device="meta")), ValueError, "index must be on the CPU"),
        (dict(coef=[[1.0, 2.0]] * 3), TypeError, "coef must be a float64 torch.Tensor"),
        (dict(coef=torch.ones(3, 2, dtype=torch.int64)), TypeError, "coef must be float64"),
        (dict(coef=torch.ones(3, 3, dtype=torch.float64)), ValueError, r"coef must have index's shape \(3, 2\)"),
        (dict(coef=torch.tensor([[1.0, float("inf")], [1, 1], [1, 1]])), ValueError, "coef must be finite"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
    ],
)
def test_validation(kwargs, exc, match):
    args = dict(
        sources=torch.randn(4, 2, 3),
        index=torch.tensor([[0, 1], [2, -1], [3, 3]]),
        coef=torch.ones(3, 2, dtype=torch.float64),
        backend="auto",
    )
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.edge_errors(args.pop("sources"), args.pop("index"), args.pop("coef"), **args)


# --- the Triton kernel (interpreter on CPU) against float64 ------------------------------------------------------


def _assert_kernel_as_accurate(sources, index, coef):
    got = ops.edge_errors(sources, index, coef, backend="triton")
    same = ops.edge_errors(sources, index, coef, backend="torch")
    ref64 = _brute_force(sources, index, coef).to(sources.device)  # float64, edge by edge: not the reference
    assert got.dtype == torch.float64 and got.shape == ref64.shape and got.device == sources.device
    assert not torch.isnan(got).any()
    err = (got - ref64).abs().max().item()
    err_torch = (same - ref64).abs().max().item()
    # float32 arithmetic: coefficients and products rounded, M - 1 sums, then a float32 sum over D elements
    numel = sources[0, 0].numel()
    mag = _magnitude(sources, index, coef).to(ref64.device)
    rounding = (index.shape[1] + 2 + math.log2(numel)) * torch.finfo(torch.float32).eps
    assert bool(((same - ref64).abs() <= rounding * mag + 1e-30).all()), (err_torch, mag.max().item())
    scale = ref64.abs().max().item()
    assert err <= 2 * err_torch + 1e-6 * scale, (err, err_torch, scale)
    return got, err


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("num_slots", [1, 3, 8])
def test_kernel_matches_float64(dtype, shape, num_slots, device):
    sources, index, coef = _problem(shape, 21, num_slots, device, dtype=dtype, seed=num_slots)
    _assert_kernel_as_accurate(sources, index, coef)


@pytest.mark.triton
def test_kernel_many_blocks_accumulate(monkeypatch, device, interpret):
    # small edge and element blocks: 6 ragged edge blocks x 3 ragged element blocks per sample add into the sums
    from meancache_kernels.ops.triton import edges as module

    if interpret:
        monkeypatch.setattr(module, "_INTERPRET_MAX_BLOCK", 16)
        monkeypatch.setattr(module, "_INTERPRET_MAX_EDGE_BLOCK", 4)
    else:
        monkeypatch.setattr(module, "_GPU_BLOCK", 16)
        monkeypatch.setattr(module, "_GPU_EDGE_BLOCK", 4)
    sources, index, coef = _problem((5, 2, 3, 13), 23, 4, device, dtype=torch.bfloat16, seed=7)
    _assert_kernel_as_accurate(sources, index, coef)


@pytest.mark.triton
def test_kernel_splits_many_samples(monkeypatch, device):
    # more samples than one launch's second grid dimension holds (forced to 2 here): 3 launches for 5 samples
    from meancache_kernels.ops.triton import edges as module

    monkeypatch.setattr(module, "_MAX_GRID_Y", 2)
    sources, index, coef = _problem((4, 5, 6), 7, 3, device, seed=3)
    _assert_kernel_as_accurate(sources, index, coef)


@pytest.mark.triton
def test_kernel_unused_slots_read_nothing(device):
    # rows of -1 only give exactly 0; NaN sources in row 0 (what a clamped -1 would read) do not leak in
    sources, index, coef = _problem((4, 2, 9), 6, 3, device, unused=0.5, seed=5)
    sources[0] = float("nan")
    index[index == 0] = 1
    index[2] = -1
    got = ops.edge_errors(sources, index, coef, backend="triton")
    expect = ops.edge_errors(sources, index, coef, backend="torch")
    assert not torch.isnan(got).any() and bool((got[2] == 0).all())
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-7)
