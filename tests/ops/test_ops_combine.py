"""ops.combine_step (v_hat = sum_k c_k x_k, z_next = z + ds * v_hat): the Triton kernel (through the interpreter on
CPU) and the torch reference against float64, every dtype and mix of dtypes, 1 to 4 terms, odd shapes, repeated
terms, poisoned, aliased and strided outputs, the paper's jvp rule as a combination, and bad input.

Low-precision rule (flash-attention's, as in test_ops_elementwise.py): the kernel's max error against float64 must be
at most twice the error of the same-precision eager computation (the torch reference: float32 arithmetic, rounded to
the output dtype) plus a tiny eps; bfloat16 outputs under the interpreter get one bfloat16 ulp at the output's scale
instead (its float32 -> bfloat16 store truncates where a GPU and torch round to nearest even, so an element can be
almost a whole ulp off: seen at M = 2, where half an ulp was not enough).
"""

import pytest
import torch

from meancache_kernels import ops
from meancache_kernels.ops import reference

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.triton)]

SHAPES = [(1,), (7,), (3, 5, 7), (2, 4, 16, 16), (1, 4, 3, 8, 8)]  # 1 element, odd, [B,C,H,W], [B,C,T,H,W]
# (z dtype, dtypes of the 4 terms, v_dtype): every precision; float32 latents with bfloat16 velocities; a full mix
DTYPES = [
    (torch.float32, (torch.float32,) * 4, None),
    (torch.bfloat16, (torch.bfloat16,) * 4, None),
    (torch.float16, (torch.float16,) * 4, None),
    (torch.float32, (torch.bfloat16, torch.bfloat16, torch.float32, torch.float32), None),
    (torch.float16, (torch.bfloat16, torch.float32, torch.float16, torch.bfloat16), torch.float32),
]
DTYPE_IDS = ["fp32", "bf16", "fp16", "fp32-z_bf16-v", "mixed-v_fp32"]
COEFFS = (0.83, -1.37, 0.29, 2.06)
DS = -0.137
# the eps of assert_as_accurate (the conftest fixture) for bfloat16 outputs under the interpreter: one bfloat16 ulp
BF16_INTERP_ULPS = 1.0


def _randn(shape, dtype, device, scale=1.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _combine_f64(z, ts, cs, ds):
    """v_hat = sum_k c_k x_k and z_next = z + ds * v_hat in float64, written out here (not the library's reference
    module), so the torch rows check the reference against something other than itself."""
    v_hat = sum(c * t.double() for c, t in zip(cs, ts))
    return v_hat, z.double() + ds * v_hat


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, tdts, vdt", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("with_out", [False, True], ids=["alloc", "poisoned_out"])
def test_combine_step_matches_float64(backend, zdt, tdts, vdt, shape, m, with_out, device, assert_as_accurate):
    z = _randn(shape, zdt, device)
    ts = [_randn(shape, dt, device) for dt in tdts[:m]]
    cs = COEFFS[:m]
    out_dt = vdt or tdts[0]
    kw = {}
    if with_out:
        kw = dict(out_v=torch.full(shape, float("nan"), dtype=out_dt, device=device),
                  out_z=torch.full(shape, float("nan"), dtype=zdt, device=device))  # fmt: skip
    v_hat, z_next = ops.combine_step(z, ts, cs, DS, v_dtype=vdt, backend=backend, **kw)
    if with_out:
        assert v_hat is kw["out_v"] and z_next is kw["out_z"]
    assert v_hat.dtype == out_dt and z_next.dtype == zdt and v_hat.device == z.device
    v64, z64 = _combine_f64(z, ts, cs, DS)
    vt, zt = reference.combine_step(z, ts, cs, DS, v_dtype=out_dt)
    assert_as_accurate(v_hat, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(z_next, zt, z64, bf16_interp_ulps=BF16_INTERP_ULPS)


def test_reference_formula_float64():
    # the reference against the formula written out by hand, on scalars (z_next uses the unrounded sum)
    z, a, b, c = (torch.tensor([x], dtype=torch.float64) for x in (0.3, 1.1, -0.4, 0.25))
    v_hat, z_next = ops.combine_step(z, (a, b, c), (0.5, -2.0, 3.0), -0.1)
    expect = 0.5 * 1.1 - 2.0 * -0.4 + 3.0 * 0.25
    assert abs(v_hat.item() - expect) < 1e-15
    assert abs(z_next.item() - (0.3 - 0.1 * expect)) < 1e-15
    # float64 anywhere: float64 arithmetic (here only z), v_hat stored in the first term's dtype by default
    zf = torch.tensor([0.1], dtype=torch.float64)
    xf = torch.tensor([1.0 / 3.0], dtype=torch.float32)
    v_hat, z_next = ops.combine_step(zf, [xf], [0.7], 0.3, backend="triton")  # float64: the reference, always
    assert v_hat.dtype == torch.float32 and z_next.dtype == torch.float64
    assert z_next.item() == 0.1 + 0.3 * (0.7 * xf.double().item())


@pytest.mark.triton
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_kernel_float32_is_the_reference_bit_for_bit(m, device):
    # no fused multiply-add anywhere: acc = c0 x0, acc = acc + c_k x_k, z + ds * acc, each product and sum rounded
    shape = (3, 37, 5)
    z = _randn(shape, torch.float32, device)
    ts = [_randn(shape, torch.float32, device, scale=10.0**k) for k in range(m)]
    cs = (0.1, -3.7e-3, 1.0 / 3.0, 17.25)[:m]
    got = ops.combine_step(z, ts, cs, 1.0 / 7.0, backend="triton")
    expect = ops.combine_step(z, ts, cs, 1.0 / 7.0, backend="torch")
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, tdts, vdt", DTYPES[:4], ids=DTYPE_IDS[:4])
def test_repeated_terms_and_z_as_a_term(backend, zdt, tdts, vdt, device, assert_as_accurate):
    # the same tensor twice, and z itself as a term: (c0 + c3) v + c1 z + c2 w as M = 4 over (v, z, w, v)
    shape = (2, 3, 9, 5)
    z, v, w = _randn(shape, zdt, device), _randn(shape, tdts[0], device), _randn(shape, tdts[1], device)
    cs = (0.6, -0.45, 1.25, -0.2)
    v_hat, z_next = ops.combine_step(z, [v, z, w, v], cs, DS, backend=backend)
    v64 = (cs[0] + cs[3]) * v.double() + cs[1] * z.double() + cs[2] * w.double()
    vt, zt = reference.combine_step(z, [v, z, w, v], cs, DS, v_dtype=v.dtype)
    assert_as_accurate(v_hat, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(z_next, zt, z.double() + DS * v64, bf16_interp_ulps=BF16_INTERP_ULPS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, tdts, vdt", DTYPES[:4], ids=DTYPE_IDS[:4])
def test_in_place_and_outputs_that_are_inputs(backend, zdt, tdts, vdt, device):
    shape = (2, 3, 9, 5)
    z = _randn(shape, zdt, device)
    # z is also a term
    ts = [_randn(shape, tdts[0], device), _randn(shape, tdts[1], device), z, _randn(shape, tdts[3], device)]
    v_exp, z_exp = ops.combine_step(z.clone(), [t.clone() for t in ts], COEFFS, DS, backend=backend)
    # out_z = z (in place) while z is a term; out_v = the first term (a ring slot overwritten by the estimate)
    v0 = ts[0]
    v_hat, z_next = ops.combine_step(z, ts, COEFFS, DS, out_v=v0, out_z=z, backend=backend)
    assert z_next is z and v_hat is v0
    torch.testing.assert_close(z, z_exp, rtol=0, atol=0)
    torch.testing.assert_close(v0, v_exp, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_in_slots_of_one_ring_buffer(backend, device):
    # disjoint slices of one storage (a stacked history) are not aliases: inputs from two slots, output into a third
    ring = _randn((4, 6, 5), torch.float32, device)
    z = _randn((6, 5), torch.float32, device)
    expect_v, expect_z = reference.combine_step(z, [ring[0], ring[1]], (1.5, -0.5), DS, v_dtype=torch.float32)
    v_hat, z_next = ops.combine_step(z, [ring[0], ring[1]], (1.5, -0.5), DS, out_v=ring[2], backend=backend)
    assert v_hat.data_ptr() == ring[2].data_ptr()
    torch.testing.assert_close(ring[2], expect_v, rtol=0, atol=0)
    torch.testing.assert_close(z_next, expect_z, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs_and_outputs(backend, device):
    # transposed and broadcast (stride 0) inputs are read correctly; a strided out (here z itself) is written in full
    base = [_randn((6, 10), torch.float32, device) for _ in range(3)]
    z, a, b = (t.t() for t in base)
    c = _randn((1, 6), torch.float32, device).expand(10, 6)
    ts = [a, b, c, a]
    cs = (0.5, 1.5, -1.0, 0.25)
    v64, z64 = _combine_f64(z, ts, cs, DS)
    out_v = torch.full((6, 10), float("nan"), device=device).t()
    v_hat, z_next = ops.combine_step(z, ts, cs, DS, out_v=out_v, out_z=z, backend=backend)
    assert z_next is z and v_hat is out_v and not z.is_contiguous()
    torch.testing.assert_close(v_hat.double(), v64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z.double(), z64, rtol=1e-6, atol=1e-6)


@pytest.mark.triton
@pytest.mark.parametrize("m", [1, 4])
def test_many_programs_with_ragged_tail(monkeypatch, m, device, interpret, assert_as_accurate):
    # small blocks force several program instances and a masked last block in the interpreter too
    from meancache_kernels.ops.triton import launch

    if interpret:
        monkeypatch.setattr(launch, "_INTERPRET_MAX_BLOCK", 64)
    shape = (3, 7, 11)  # 231 elements = 3 full blocks of 64 + a tail of 39
    z = _randn(shape, torch.bfloat16, device)
    ts = [_randn(shape, torch.bfloat16, device) for _ in range(m)]
    out_v = torch.full(shape, float("nan"), dtype=torch.bfloat16, device=device)
    out_z = torch.full(shape, float("nan"), dtype=torch.bfloat16, device=device)
    ops.combine_step(z, ts, COEFFS[:m], DS, out_v=out_v, out_z=out_z, backend="triton")
    v64, z64 = _combine_f64(z, ts, COEFFS[:m], DS)
    vt, zt = reference.combine_step(z, ts, COEFFS[:m], DS, v_dtype=torch.bfloat16)
    assert_as_accurate(out_v, vt, v64, bf16_interp_ulps=BF16_INTERP_ULPS)
    assert_as_accurate(out_z, zt, z64, bf16_interp_ulps=BF16_INTERP_ULPS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_tensors(backend, device):
    z = torch.empty(0, 3, device=device)
    v_hat, z_next = ops.combine_step(z, [z, z], [1.0, 2.0], 0.1, backend=backend)
    assert v_hat.shape == (0, 3) and z_next.shape == (0, 3)


# --- the paper's estimator as a combination --------------------------------------------------------------------

SIG = (0.93, 0.71, 0.58)  # s_anchor, s, s_next


def _jvp_coeffs(s_anchor, s, s_next):
    d, ds = s - s_anchor, s_next - s
    return (1.0, -ds / d, ds / d**2, -ds / d**2), ds


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zdt, vdt", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16)], ids=str)
@pytest.mark.parametrize("sig", [SIG, (0.4, 0.31, 0.29), (0.12, 0.05, 0.0)], ids=str)
def test_jvp_rule_as_a_combination(backend, zdt, vdt, sig, device):
    # v_hat = v_last - (ds/d) v_a + (ds/d^2) (z - z_a) is mean_velocity_step's estimate up to float32 rounding (a
    # different evaluation order: not bit for bit, which is why the paper path keeps mean_velocity_step)
    shape = (2, 4, 16, 16)
    z, za = _randn(shape, zdt, device), _randn(shape, zdt, device)
    va, vl = _randn(shape, vdt, device), _randn(shape, vdt, device)
    cs, ds = _jvp_coeffs(*sig)
    v_hat, z_next = ops.combine_step(z, [vl, va, z, za], cs, ds, v_dtype=torch.float32, backend=backend)
    # mean_velocity_step on the same values in float32 (velocities upcast exactly), so both v_hat stay float32
    v_ref, z_ref = ops.mean_velocity_step(z, za, va.float(), vl.float(), *sig, backend=backend)
    span, ds64 = sig[1] - sig[0], sig[2] - sig[1]  # the paper's rule in float64, written out
    v64 = vl.double() - (va.double() - (z.double() - za.double()) / span) / span * ds64
    # float32 rounding of either evaluation: a few ulp of the terms' magnitudes, elementwise
    terms = vl.double().abs() + abs(cs[1]) * va.double().abs() + abs(cs[2]) * (z.double().abs() + za.double().abs())
    bound = 8 * torch.finfo(torch.float32).eps * terms
    assert bool(((v_hat.double() - v64).abs() <= bound).all())
    assert bool(((v_ref.double() - v64).abs() <= bound).all())
    assert bool(((v_hat.double() - v_ref.double()).abs() <= 2 * bound).all())
    z_bound = 8 * torch.finfo(torch.float32).eps * (z.double().abs() + abs(ds) * terms)
    assert bool(((z_next.double() - z_ref.double()).abs() <= z_bound).all())
    assert not torch.equal(v_hat, v_ref)  # the bound is not trivially met by an identical evaluation


@pytest.mark.triton
def test_custom_op_for_torch_compile(device):
    from meancache_kernels.ops import triton as kernels

    z = _randn((3, 5), torch.float32, device)
    ts = [_randn((3, 5), torch.bfloat16, device), _randn((3, 5), torch.bfloat16, device), z]
    args = (z, ts, [1.0, -0.5, 0.25], DS, torch.bfloat16)
    op = torch.ops.meancache_kernels.combine_step
    assert kernels.combine_step_op is not None
    result = torch.library.opcheck(op.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    compiled = torch.compile(lambda *a: op(*a), backend="aot_eager", fullgraph=True)
    v_hat, z_next = compiled(*args)
    assert v_hat.dtype == torch.bfloat16 and z_next.dtype == torch.float32
    v_exp, z_exp = ops.combine_step(z, ts, [1.0, -0.5, 0.25], DS, backend="triton")
    torch.testing.assert_close(v_hat, v_exp, rtol=0, atol=0)
    torch.testing.assert_close(z_next, z_exp, rtol=0, atol=0)


# --- dispatch and errors ---------------------------------------------------------------------------------------


@pytest.mark.triton
def test_triton_backend_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    z = torch.zeros(4)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.combine_step(z, [z], [1.0], 0.1, backend="triton")


def _bad_calls():
    def ring_overlap(z):
        buf = torch.randn(6)
        return ops.combine_step(z, [buf[:5]], [1.0], 0.1, out_v=buf[1:])

    return [
        (lambda z: ops.combine_step(z, z, [1.0], 0.1), TypeError, "tensors must be a list or tuple"),
        (lambda z: ops.combine_step(z, [], [], 0.1), ValueError, "tensors must hold 1 to 4 tensors"),
        (lambda z: ops.combine_step(z, [z] * 5, [1.0] * 5, 0.1), ValueError, r"tensors must hold 1 to 4 .* got 5"),
        (lambda z: ops.combine_step(z, [z, z[:-1]], [1.0, 1.0], 0.1), ValueError, r"tensors\[1\] must have the shape"),
        (lambda z: ops.combine_step(z, [z, z.int()], [1.0, 1.0], 0.1), TypeError, r"tensors\[1\] must be float16"),
        (lambda z: ops.combine_step(z, [[1.0] * 5], [1.0], 0.1), TypeError, r"tensors\[0\] must be a torch.Tensor"),
        (lambda z: ops.combine_step(z.int(), [z], [1.0], 0.1), TypeError, "z must be float16"),
        (
            lambda z: ops.combine_step(z, [z, z], [1.0], 0.1),
            ValueError,
            r"coeffs must hold one number per tensor \(2\)",
        ),
        (lambda z: ops.combine_step(z, [z], torch.ones(1), 0.1), TypeError, "coeffs must be a list or tuple"),
        (lambda z: ops.combine_step(z, [z], 1.0, 0.1), TypeError, "coeffs must be a list or tuple"),
        (lambda z: ops.combine_step(z, [z, z], [1.0, float("inf")], 0.1), ValueError, r"coeffs\[1\] must be finite"),
        (lambda z: ops.combine_step(z, [z], ["1"], 0.1), TypeError, r"coeffs\[0\] must be a real number"),
        (lambda z: ops.combine_step(z, [z], [1.0], float("nan")), ValueError, "ds must be finite"),
        (lambda z: ops.combine_step(z, [z], [1.0], 0.1, v_dtype=torch.int32), TypeError, "v_dtype must be None or"),
        (lambda z: ops.combine_step(z, [z], [1.0], 0.1, out_v=z.half()), TypeError, "out_v must have v_dtype"),
        (lambda z: ops.combine_step(z, [z], [1.0], 0.1, out_z=z.half()), TypeError, "out_z must have z's dtype"),
        (lambda z: ops.combine_step(z, [z], [1.0], 0.1, out_z=z[:2]), ValueError, "out_z must have the shape"),
        (ring_overlap, ValueError, r"out_v overlaps tensors\[0\] without being the same view"),
        (lambda z: ops.combine_step(z, [z.clone()], [1.0], 0.1, out_v=z, out_z=z), ValueError, "must not share"),
        (lambda z: ops.combine_step(z, [z], [1.0], 0.1, backend="cuda"), ValueError, "backend must be one of"),
    ]


@pytest.mark.parametrize("call, exc, match", _bad_calls())
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(5))
