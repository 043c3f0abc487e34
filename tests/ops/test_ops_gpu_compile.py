"""The Triton kernels compile for a real GPU target (sm_90, no driver needed): the interpreter runs the kernels' Python,
not Triton's compiler, so this is the CI check of the GPU code path (tuples in unrolled loops, casts, atomics).

Runs in a subprocess with TRITON_INTERPRET=0 (the test session may have the interpreter on). Never skipped: triton is
a test dependency and its wheels ship the NVIDIA backend and ptxas, so a missing backend or a ptxas failure fails.
"""

import json
import os
import subprocess
import sys

import triton  # noqa: F401  (a test dependency: missing, this module fails to import)

_SCRIPT = r"""
import json, shutil, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401  (the NVIDIA backend must be there)
from meancache_kernels.ops.triton import calibration, combine, delta, edges, euler, mean_velocity

P = lambda dt: "*" + dt
jobs = []
for zdt, vdt in (("fp32", "bf16"), ("fp16", "fp16")):
    jobs.append((mean_velocity._mean_velocity_step_kernel, dict(
        z_ptr=P(zdt), za_ptr=P(zdt), va_ptr=P(vdt), vl_ptr=P(vdt), out_v_ptr=P(vdt), out_z_ptr=P(zdt),
        span="fp32", ds="fp32", numel="i64", BLOCK="constexpr"), dict(BLOCK=1024)))
    jobs.append((euler._euler_step_kernel, dict(z_ptr=P(zdt), v_ptr=P(vdt), out_ptr=P(zdt), ds="fp32", numel="i32",
                 BLOCK="constexpr"), dict(BLOCK=1024)))
    jobs.append((delta._velocity_delta_kernel, dict(a_ptr=P(zdt), b_ptr=P(vdt), partial_ptr="*fp32", numel="i32",
                 num_blocks="i32", BLOCK="constexpr"), dict(BLOCK=1024)))
    for span, skip in ((1, 1), (8, 12) if zdt == "fp32" else (4, 9)):
        jobs.append((calibration._calibration_kernel, dict(
            z_ptr=P(zdt), v_ptr=P(vdt), sig_ptr="*fp64", acc_ptr="*fp32", n_steps="i32", step_stride="i64",
            numel="i32", MAX_SPAN="constexpr", MAX_SKIP="constexpr", BLOCK="constexpr"),
            dict(MAX_SPAN=span, MAX_SKIP=skip, BLOCK=512)))
    # every estimator's step, M = 1 and M = 4 terms of mixed dtypes; fp fusion off as the launcher has it (no fma)
    for m in (1, 4):
        jobs.append((combine._combine_step_kernel, dict(
            z_ptr=P(zdt), x0_ptr=P(vdt), x1_ptr=P(vdt), x2_ptr=P(zdt), x3_ptr=P(zdt), out_v_ptr=P(vdt),
            out_z_ptr=P(zdt), c0="fp32", c1="fp32", c2="fp32", c3="fp32", ds="fp32", numel="i64", M="constexpr",
            BLOCK="constexpr"), dict(M=m, BLOCK=1024), dict(enable_fp_fusion=False)))
    jobs.append((edges._edge_errors_kernel, dict(
        src_ptr=P(zdt), index_ptr="*i64", coef_ptr="*fp64", acc_ptr="*fp32", num_edges="i32",
        num_edge_blocks="i32", num_samples="i32", row_stride="i64", numel="i32", sample0="i32", M="constexpr",
        EDGE_BLOCK="constexpr", BLOCK="constexpr"), dict(M=8, EDGE_BLOCK=8, BLOCK=256)))
# Triton specialises integer arguments equal to 1 into constexprs (one sample of one element, a 1-element tensor)
jobs.append((calibration._calibration_kernel, dict(
    z_ptr="*fp32", v_ptr="*fp32", sig_ptr="*fp64", acc_ptr="*fp32", n_steps="i32", step_stride="constexpr",
    numel="constexpr", MAX_SPAN="constexpr", MAX_SKIP="constexpr", BLOCK="constexpr"),
    dict(step_stride=1, numel=1, MAX_SPAN=2, MAX_SKIP=3, BLOCK=1)))
jobs.append((mean_velocity._mean_velocity_step_kernel, dict(
    z_ptr="*fp32", za_ptr="*fp32", va_ptr="*fp32", vl_ptr="*fp32", out_v_ptr="*fp32", out_z_ptr="*fp32",
    span="fp32", ds="fp32", numel="constexpr", BLOCK="constexpr"), dict(numel=1, BLOCK=1)))
jobs.append((delta._velocity_delta_kernel, dict(a_ptr="*fp32", b_ptr="*fp32", partial_ptr="*fp32",
    numel="constexpr", num_blocks="constexpr", BLOCK="constexpr"), dict(numel=1, num_blocks=1, BLOCK=1)))
jobs.append((edges._edge_errors_kernel, dict(
    src_ptr="*fp32", index_ptr="*i64", coef_ptr="*fp64", acc_ptr="*fp32", num_edges="constexpr",
    num_edge_blocks="constexpr", num_samples="constexpr", row_stride="constexpr", numel="constexpr", sample0="i32",
    M="constexpr", EDGE_BLOCK="constexpr", BLOCK="constexpr"),
    dict(num_edges=1, num_edge_blocks=1, num_samples=1, row_stride=1, numel=1, M=1, EDGE_BLOCK=1, BLOCK=1)))
jobs = [job if len(job) == 4 else job + ({},) for job in jobs]
target = GPUTarget("cuda", 90, 32)
bindir = __import__("os").path.join(__import__("os").path.dirname(triton.__file__), "backends", "nvidia", "bin")
cuobjdump = shutil.which("cuobjdump", path=bindir)
results = []
for fn, sig, consts, options in jobs:
    kernel = triton.compile(triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                            options=options)
    usage = None
    if cuobjdump:
        path = sys.argv[1]
        open(path, "wb").write(kernel.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    results.append({"name": fn.__name__, "sig": sig, "consts": consts, "options": options, "ptx": kernel.asm["ptx"],
                    "usage": usage})
print(json.dumps({"results": results}))
"""


def test_kernels_compile_for_sm90(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path / "cache"))
    cubin = str(tmp_path / "kernel.cubin")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, cubin], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    assert len(results) == 2 * 8 + 4
    for r in results:
        ptx = r["ptx"]
        assert ".entry " + r["name"] in ptx, r["name"]
        assert "st.global" in ptx or "atom.global" in ptx or "red.global" in ptx, r["name"]
        if r["name"] == "_calibration_kernel":
            # per-j sums are accumulated atomically; the rolled history lives in registers
            assert "atom.global" in ptx or "red.global" in ptx
        if r["name"] == "_edge_errors_kernel":
            assert "atom.global" in ptx or "red.global" in ptx  # per-(edge, sample) partial sums
        if r["name"] == "_combine_step_kernel":
            # no fused multiply-add: the float32 result rounds as the torch reference (product, then sum)
            assert r["options"] == {"enable_fp_fusion": False} and "fma.rn.f32" not in ptx, r["consts"]
            assert "mul.rn.f32" in ptx or "mul.f32" in ptx
        if r["usage"] is not None:
            assert "LOCAL:0" in r["usage"], f"{r['name']} {r['consts']} spills to local memory: {r['usage']}"
