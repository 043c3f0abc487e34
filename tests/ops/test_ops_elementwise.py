"""Fused elementwise ops (mean_velocity_step, euler_step, velocity_delta): Triton kernels (through the interpreter on
CPU) and the torch reference against float64, every dtype and shape, poisoned and aliased outputs, dispatch rules.

Low-precision rule (flash-attention's): the kernel's max error against float64 must be at most twice the error of
the same-precision eager computation (the torch reference: float32 arithmetic, rounded to the output dtype) plus a
tiny eps. For bfloat16 outputs under the interpreter the eps is half a bfloat16 ulp at the output's scale: the
interpreter's float32 -> bfloat16 store truncates where a GPU (and torch) rounds to nearest even.
"""

import subprocess
import sys

import pytest
import torch

from meancache_kernels import ops
from meancache_kernels.ops import reference

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.triton)]

SHAPES = [(1,), (7,), (3, 5, 7), (2, 4, 16, 16), (1, 4, 3, 8, 8)]  # 1 element, odd, [B,C,H,W], [B,C,T,H,W]
# (z dtype, v dtype): every precision, and float32 latents with bfloat16 velocities
DTYPES = [
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
    (torch.float32, torch.bfloat16),
]
# the eps of assert_as_accurate (the conftest fixture) for bfloat16 outputs under the interpreter: half a bfloat16 ulp
BF16_INTERP_ULPS = 0.5


def _randn(shape, dtype, device, scale=1.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


SIG = (0.93, 0.71, 0.58)  # s_anchor, s, s_next (decreasing, like a flow-matching schedule)


# The float64 expectations, written out here from the formulas (not the library's reference module), so the torch
# rows check the reference against something other than itself.
def _mean_velocity_f64(z, za, va, vl, s_anchor, s, s_next):
    """v_hat = v_last - (v_a - (z - z_a) / (s - s_a)) / (s - s_a) * (s_next - s); z_next = z + (s_next - s) v_hat."""
    z, za, va, vl = (t.double() for t in (z, za, va, vl))
    span, ds = s - s_anchor, s_next - s
    v_hat = vl - (va - (z - za) / span) / span * ds
    return v_hat, z + ds * v_hat


def _euler_f64(z, v, ds):
    return z.double() + ds * v.double()


def _delta_f64(a, b):
    """(sum |a - b|, sum |b|) in float64."""
    return (a.double() - b.double()).abs().sum(), b.double().abs().sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, vdt", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_out", [False, True], ids=["alloc", "poisoned_out"])
def test_mean_velocity_step_matches_float64(backend, zdt, vdt, shape, with_out, device, assert_as_accurate):
    z, za = _randn(shape, zdt, device), _randn(shape, zdt, device)
    va, vl = _randn(shape, vdt, device), _randn(shape, vdt, device)
    kw = {}
    if with_out:
        kw = dict(out_v=torch.full(shape, float("nan"), dtype=vdt, device=device),
                  out_z=torch.full(shape, float("nan"), dtype=zdt, device=device))  # fmt: skip
    v_hat, z_next = ops.mean_velocity_step(z, za, va, vl, *SIG, backend=backend, **kw)
    if with_out:
        assert v_hat is kw["out_v"] and z_next is kw["out_z"]
    assert v_hat.dtype == vdt and z_next.dtype == zdt
    v64, z64 = _mean_velocity_f64(z, za, va, vl, *SIG)
    vt, zt = reference.mean_velocity_step(z, za, va, vl, *SIG)
    assert_as_accurate(v_hat, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(z_next, zt, z64, bf16_interp_ulps=BF16_INTERP_ULPS)


def test_mean_velocity_step_formula_float64():
    # the reference itself against the formula written out by hand, on a few scalars
    z, za, va, vl = (torch.tensor([x], dtype=torch.float64) for x in (0.3, 1.1, -0.4, 0.25))
    s_a, s, s_n = 0.9, 0.6, 0.45
    v_hat, z_next = ops.mean_velocity_step(z, za, va, vl, s_a, s, s_n)
    avg = (0.3 - 1.1) / (s - s_a)
    expect_v = 0.25 - (-0.4 - avg) / (s - s_a) * (s_n - s)
    assert abs(v_hat.item() - expect_v) < 1e-15
    assert abs(z_next.item() - (0.3 + (s_n - s) * expect_v)) < 1e-15


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, vdt", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_mean_velocity_step_in_place(backend, zdt, vdt, device):
    shape = (2, 3, 9, 5)
    z, za = _randn(shape, zdt, device), _randn(shape, zdt, device)
    va, vl = _randn(shape, vdt, device), _randn(shape, vdt, device)
    v_exp, z_exp = ops.mean_velocity_step(z.clone(), za, va, vl, *SIG, backend=backend)
    v_hat, z_next = ops.mean_velocity_step(z, za, va, vl, *SIG, out_z=z, backend=backend)
    assert z_next is z
    torch.testing.assert_close(z, z_exp, rtol=0, atol=0)
    torch.testing.assert_close(v_hat, v_exp, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs_and_outputs(backend, device):
    # transposed (non-contiguous) inputs are read correctly; a strided out (here z itself) is written in full
    base = [_randn((6, 10), torch.float32, device) for _ in range(4)]
    z, za, va, vl = (t.t() for t in base)
    v64, z64 = _mean_velocity_f64(z, za, va, vl, *SIG)
    v_hat, z_next = ops.mean_velocity_step(z, za, va, vl, *SIG, out_z=z, backend=backend)
    assert z_next is z and not z.is_contiguous()
    torch.testing.assert_close(v_hat.double(), v64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z.double(), z64, rtol=1e-6, atol=1e-6)


@pytest.mark.triton
def test_many_programs_with_ragged_tail(monkeypatch, device, interpret, assert_as_accurate):
    # small blocks force several program instances and a masked last block in the interpreter too
    from meancache_kernels.ops.triton import launch

    if interpret:
        monkeypatch.setattr(launch, "_INTERPRET_MAX_BLOCK", 64)
    shape = (3, 7, 11)  # 231 elements = 3 full blocks of 64 + a tail of 39
    z, za, va, vl = (_randn(shape, torch.bfloat16, device) for _ in range(4))
    out_v = torch.full(shape, float("nan"), dtype=torch.bfloat16, device=device)
    out_z = torch.full(shape, float("nan"), dtype=torch.bfloat16, device=device)
    ops.mean_velocity_step(z, za, va, vl, *SIG, out_v=out_v, out_z=out_z, backend="triton")
    v64, z64 = _mean_velocity_f64(z, za, va, vl, *SIG)
    vt, zt = reference.mean_velocity_step(z, za, va, vl, *SIG)
    assert_as_accurate(out_v, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(out_z, zt, z64, bf16_interp_ulps=BF16_INTERP_ULPS)
    out = torch.full(shape, float("nan"), dtype=torch.bfloat16, device=device)
    ops.euler_step(z, va, -0.2, out=out, backend="triton")
    assert_as_accurate(out, reference.euler_step(z, va, -0.2), _euler_f64(z, va, -0.2),
                       bf16_interp_ulps=BF16_INTERP_ULPS)
    d, nb = ops.velocity_delta(za, vl, backend="triton")
    d64, nb64 = _delta_f64(za, vl)
    assert abs(d.item() - d64.item()) <= 1e-5 * d64.item()
    assert abs(nb.item() - nb64.item()) <= 1e-5 * nb64.item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, vdt", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_euler_step_matches_float64(backend, zdt, vdt, shape, device, assert_as_accurate):
    z, v = _randn(shape, zdt, device), _randn(shape, vdt, device)
    ds = -0.137
    out = torch.full(shape, float("nan"), dtype=zdt, device=device)
    res = ops.euler_step(z, v, ds, out=out, backend=backend)
    assert res is out
    assert_as_accurate(out, reference.euler_step(z, v, ds), _euler_f64(z, v, ds), bf16_interp_ulps=BF16_INTERP_ULPS)
    fresh = ops.euler_step(z, v, ds, backend=backend)
    torch.testing.assert_close(fresh, out, rtol=0, atol=0)
    ops.euler_step(z, v, ds, out=z, backend=backend)  # in place
    torch.testing.assert_close(z, out, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, vdt", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_velocity_delta_matches_float64(backend, zdt, vdt, shape, device):
    a, b = _randn(shape, zdt, device), _randn(shape, vdt, device)
    delta, norm = ops.velocity_delta(a, b, backend=backend)
    assert delta.shape == () and norm.shape == ()
    assert delta.dtype == torch.float32 and norm.dtype == torch.float32
    assert delta.device == a.device
    d64, n64 = _delta_f64(a, b)
    dt, nt = reference.velocity_delta(a, b)
    for got, torch_val, ref in ((delta, dt, d64), (norm, nt, n64)):
        err = abs(got.item() - ref.item())
        err_torch = abs(torch_val.item() - ref.item())
        assert err_torch <= 1e-6 * ref.item(), (err_torch, ref.item())  # float32 accumulation over <= 2k elements
        assert err <= 2 * err_torch + 1e-6 * ref.item(), (err, err_torch)


def test_velocity_delta_known_values():
    a = torch.tensor([1.0, -2.0, 3.0])
    b = torch.tensor([0.5, -2.0, 4.0])
    delta, norm = ops.velocity_delta(a, b)
    assert delta.item() == pytest.approx(1.5) and norm.item() == pytest.approx(6.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_tensors(backend, device):
    z = torch.empty(0, 3, device=device)
    v_hat, z_next = ops.mean_velocity_step(z, z, z, z, *SIG, backend=backend)
    assert v_hat.shape == (0, 3) and z_next.shape == (0, 3)
    assert ops.euler_step(z, z, 0.1, backend=backend).shape == (0, 3)
    delta, norm = ops.velocity_delta(z, z, backend=backend)
    assert delta.item() == 0.0 and norm.item() == 0.0


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_sampler_with_triton_backend_matches_torch(dtype, device):
    # the kernels inside MeanCache sampling (fused step on skipped steps, Euler step on computed ones)
    import meancache_kernels as mck
    from meancache_kernels.testing import flow_sigmas, smooth_random_field

    n = 12
    sigmas = flow_sigmas(n).tolist()
    schedule = mck.Schedule.from_official([0, 1, 3, 6, 9, 11], [0, 1, 2, 2, 1], n)
    field = smooth_random_field(3 * 5, seed=4)
    z0 = _randn((2, 3, 5), dtype, device)
    expect = mck.sample(field, z0, sigmas, schedule, backend="torch")
    got = mck.sample(field, z0, sigmas, schedule, backend="triton")
    assert got.dtype == dtype and not torch.isnan(got).any()
    # float16 (rounded to nearest like torch, also in the interpreter): a few ulps after 12 rounded steps. bfloat16 is
    # left out here: the interpreter's truncating bfloat16 store biases every step the same way.
    tol = 1e-5 if dtype == torch.float32 else 8 * torch.finfo(dtype).eps
    torch.testing.assert_close(got.float(), expect.float(), rtol=tol, atol=tol)


@pytest.mark.triton
def test_custom_op_for_torch_compile(device):
    from meancache_kernels.ops import triton as kernels

    z, za = _randn((3, 5), torch.float32, device), _randn((3, 5), torch.float32, device)
    va, vl = _randn((3, 5), torch.bfloat16, device), _randn((3, 5), torch.bfloat16, device)
    args = (z, za, va, vl, *SIG)
    op = torch.ops.meancache_kernels.mean_velocity_step
    assert kernels.mean_velocity_step_op is not None
    result = torch.library.opcheck(op.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    compiled = torch.compile(lambda *a: op(*a), backend="aot_eager", fullgraph=True)
    v_hat, z_next = compiled(*args)
    v_exp, z_exp = ops.mean_velocity_step(*args, backend="triton")
    torch.testing.assert_close(v_hat, v_exp, rtol=0, atol=0)
    torch.testing.assert_close(z_next, z_exp, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_runs_the_kernel_on_cuda_tensors(assert_as_accurate):
    # on a GPU the default backend is the Triton kernel: same bits as backend="triton", as accurate as the rule asks
    shape = (2, 4, 33, 17)
    z, za = _randn(shape, torch.float32, "cuda"), _randn(shape, torch.float32, "cuda")
    va, vl = _randn(shape, torch.bfloat16, "cuda"), _randn(shape, torch.bfloat16, "cuda")
    assert ops.functional._resolve_backend("auto", z, za, va, vl) == "triton"
    v_auto, z_auto = ops.mean_velocity_step(z, za, va, vl, *SIG)
    v_tri, z_tri = ops.mean_velocity_step(z, za, va, vl, *SIG, backend="triton")
    assert torch.equal(v_auto, v_tri) and torch.equal(z_auto, z_tri) and z_auto.device.type == "cuda"
    v64, z64 = _mean_velocity_f64(z, za, va, vl, *SIG)
    vt, zt = reference.mean_velocity_step(z, za, va, vl, *SIG)
    assert_as_accurate(v_auto, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(z_auto, zt, z64, bf16_interp_ulps=BF16_INTERP_ULPS)


# --- dispatch and errors ---------------------------------------------------------------------------------------


def test_auto_uses_reference_on_cpu_and_for_float64():
    cpu = torch.zeros(3)
    assert ops.functional._resolve_backend("auto", cpu) == "torch"
    assert ops.functional._resolve_backend("triton", cpu.double(), op="t") == "torch"  # kernels are float32-only
    assert ops.functional._resolve_backend("torch", cpu) == "torch"


@pytest.mark.triton
def test_triton_backend_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    z = torch.zeros(4)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.mean_velocity_step(z, z, z, z, *SIG, backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.calibration_errors(torch.zeros(3, 1, 2), torch.zeros(2, 1, 2), [1.0, 0.5, 0.0], 1, 1, backend="triton")


def test_missing_triton_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(ops.functional, "_TRITON_OK", False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    z = torch.zeros(4)
    with pytest.raises(ImportError, match="pip install triton"):
        ops.euler_step(z, z, 0.1, backend="triton")
    # auto falls back to the reference without a word
    assert ops.euler_step(z, z + 1, 0.5, backend="auto").tolist() == [0.5] * 4


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda z: ops.mean_velocity_step(z, z[:-1], z, z, *SIG), ValueError, "z_anchor must have the shape"),
        (lambda z: ops.mean_velocity_step(z, z, z.int(), z, *SIG), TypeError, "v_anchor must be float16"),
        (lambda z: ops.mean_velocity_step(z, z, z, z, 0.5, 0.5, 0.2), ValueError, "s_anchor and s must differ"),
        (lambda z: ops.mean_velocity_step(z, z, z, z, *SIG, out_z=z.half()), TypeError, "out_z must have z's dtype"),
        (lambda z: ops.mean_velocity_step(z, z, z, z, *SIG, backend="cuda"), ValueError, "backend must be one of"),
        (lambda z: ops.mean_velocity_step(z, z, z, z, float("nan"), 0.5, 0.2), ValueError, "s_anchor must be finite"),
        (lambda z: ops.euler_step(z, z, "0.1"), TypeError, "ds must be a real number"),
        (lambda z: ops.euler_step(z, z.reshape(1, -1), 0.1), ValueError, "v must have the shape"),
        (lambda z: ops.velocity_delta(z, [1.0]), TypeError, "b must be a torch.Tensor"),
        (lambda z: ops.velocity_delta(z, z[:2]), ValueError, "b must have the shape"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(5))


def test_import_does_not_import_triton():
    code = "import sys, meancache_kernels; assert 'triton' not in sys.modules, 'triton imported at package import'"
    subprocess.run([sys.executable, "-c", code], check=True)
