"""One table of the fused ops against eager torch and a device-to-device copy measured in the same run.

    python -m bench.gpu.ops_table                               # on a CUDA GPU: the full table
    TRITON_INTERPRET=1 python -m bench.gpu.ops_table --smoke    # CPU check of this script (tiny sizes, interpreter)

Sizes run from a FLUX.1 1024x1024 latent (4096 tokens x 64 channels = 262,144 elements) to a HunyuanVideo 720p,
129-frame latent (33 x 90 x 160 x 16 = 7,603,200 elements), in float32 and bfloat16. For every op and size: the copy
bandwidth (a ``copy_`` moving the same number of bytes), the eager torch reference and the fused kernel in GB/s
(bytes read + written once / median time), the kernel's fraction of the copy bandwidth, its speedup over eager,
and max|fused - eager| / max|eager| as a sanity check (combine_step: the estimate of any estimator, M = 4 distinct
terms). Then the calibration kernels against their eager references: the official roll-out (calibration_errors) and
the polynomial estimators' coefficient rows (edge_errors).
Issue 3's targets (H100/H200): >= 80% of copy bandwidth from 4M elements up and >= 2x over eager for the fused
step; >= 10x over the eager roll-out for calibration. Small sizes fit in L2 (50 MB on H100), copy included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from meancache_kernels import ops
from meancache_kernels.ops import reference

SIZES = [
    ("flux-1024 4096x64", 4096 * 64),
    ("1M", 1 << 20),
    ("4M", 4 << 20),
    ("hunyuan-720p 33x90x160x16", 33 * 90 * 160 * 16),
]
SMOKE_SIZES = [("tiny 64x64", 64 * 64), ("odd 5003", 5003)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _timer(device: torch.device):
    """``time(fn, reps, repeats)`` -> median seconds per call; CUDA events on a GPU, perf_counter on CPU."""

    def time_cuda(fn, reps, repeats):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / reps)
        return statistics.median(times)

    def time_cpu(fn, reps, repeats):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times.append((time.perf_counter() - t0) / reps)
        return statistics.median(times)

    return time_cuda if device.type == "cuda" else time_cpu


def _ops(n: int, dtype: torch.dtype, device: torch.device):
    """Per op: (name, bytes moved, eager fn, fused fn, outputs-to-compare fn)."""
    z, za, va, vl, w = (torch.randn(n, device=device).to(dtype) for _ in range(5))
    ov_e, oz_e, ov_f, oz_f = (torch.empty_like(z) for _ in range(4))
    args = (z, za, va, vl, 0.9, 0.7, 0.55)
    terms, coeffs = [za, va, vl, w], [1.5, -0.5, 0.25, -0.125]
    el = z.element_size()
    out_e, out_f = torch.empty_like(z), torch.empty_like(z)
    res = {}

    def rel(a, b):
        return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()

    def delta_eager():
        res["e"] = reference.velocity_delta(z, vl)

    def delta_fused():
        res["f"] = ops.velocity_delta(z, vl, backend="triton")

    return [
        (
            "mean_velocity_step",
            6 * n * el,
            lambda: reference.mean_velocity_step(*args, out_v=ov_e, out_z=oz_e),
            lambda: ops.mean_velocity_step(*args, out_v=ov_f, out_z=oz_f, backend="triton"),
            lambda: max(rel(ov_f, ov_e), rel(oz_f, oz_e)),
        ),
        (
            "combine_step",
            7 * n * el,  # reads z and 4 terms, writes v_hat and z_next
            lambda: reference.combine_step(z, terms, coeffs, -0.02, v_dtype=dtype, out_v=ov_e, out_z=oz_e),
            lambda: ops.combine_step(z, terms, coeffs, -0.02, out_v=ov_f, out_z=oz_f, backend="triton"),
            lambda: max(rel(ov_f, ov_e), rel(oz_f, oz_e)),
        ),
        (
            "euler_step",
            3 * n * el,
            lambda: reference.euler_step(z, va, -0.02, out=out_e),
            lambda: ops.euler_step(z, va, -0.02, out=out_f, backend="triton"),
            lambda: rel(out_f, out_e),
        ),
        (
            "velocity_delta",
            2 * n * el,
            delta_eager,
            delta_fused,
            lambda: max(rel(res["f"][k], res["e"][k]) for k in (0, 1)),
        ),
    ]


def _copy_fn(nbytes: int, device: torch.device):
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def elementwise_table(device, sizes, dtypes, reps, repeats):
    time_fn = _timer(device)
    header = f"{'op':<19} {'dtype':<5} {'size':<26} {'elements':>10} {'MB':>7} {'copy GB/s':>9} {'eager GB/s':>10} "
    header += f"{'fused GB/s':>10} {'%copy':>6} {'speedup':>7} {'rel diff':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for op_index in range(len(_ops(1, torch.float32, device))):
        for dname in dtypes:
            for label, n in sizes:
                name, nbytes, eager, fused, diff = _ops(n, DTYPES[dname], device)[op_index]
                t_copy = time_fn(_copy_fn(nbytes, device), reps, repeats)
                t_eager = time_fn(eager, reps, repeats)
                t_fused = time_fn(fused, reps, repeats)
                eager()
                fused()
                gb = lambda t: nbytes / t / 1e9  # noqa: E731
                row = (name, dname, label, n, nbytes / 1e6, gb(t_copy), gb(t_eager), gb(t_fused),
                       100 * t_copy / t_fused, t_eager / t_fused, diff())  # fmt: skip
                rows.append(row)
                print(f"{row[0]:<19} {row[1]:<5} {row[2]:<26} {row[3]:>10} {row[4]:>7.1f} {row[5]:>9.1f} "
                      f"{row[6]:>10.1f} {row[7]:>10.1f} {row[8]:>5.0f}% {row[9]:>6.2f}x {row[10]:>9.2e}")  # fmt: skip
    return rows


def calibration_row(device, n, samples, numel, max_span, max_skip, repeats):
    time_fn = _timer(device)
    z = torch.randn(n + 1, samples, numel, device=device)
    v = torch.randn(n, samples, numel, device=device)
    sigmas = torch.linspace(1.0, 0.0, n + 1).tolist()
    eager = lambda: ops.calibration_errors(z, v, sigmas, max_span, max_skip, backend="torch")  # noqa: E731
    fused = lambda: ops.calibration_errors(z, v, sigmas, max_span, max_skip, backend="triton")  # noqa: E731
    t_eager = time_fn(eager, 1, repeats)
    t_fused = time_fn(fused, 1, repeats)
    e, f = eager(), fused()
    finite = torch.isfinite(e)
    assert torch.equal(finite, torch.isfinite(f)), "calibration kernel: +inf layout differs from the reference"
    rel = ((f - e)[finite].abs().max() / e[finite].abs().max().clamp_min(1e-30)).item()
    print(f"\ncalibration_errors  N={n} S={samples} elements/sample={numel} max_span={max_span} max_skip={max_skip}: "
          f"eager roll-out {t_eager * 1e3:.2f} ms, kernel {t_fused * 1e3:.2f} ms, speedup {t_eager / t_fused:.1f}x, "
          f"max rel diff {rel:.1e}")  # fmt: skip
    return t_eager, t_fused, rel


def edge_errors_row(device, n, samples, numel, edges, slots, repeats):
    """Polynomial calibration: ``edges`` coefficient rows of ``slots`` terms over 2N + 1 trajectory tensors."""
    time_fn = _timer(device)
    g = torch.Generator().manual_seed(0)
    sources = torch.randn(2 * n + 1, samples, numel, device=device)
    index = torch.randint(-1, 2 * n + 1, (edges, slots), generator=g).to(device)
    coef = torch.randn(edges, slots, generator=g, dtype=torch.float64).to(device)
    eager = lambda: ops.edge_errors(sources, index, coef, backend="torch")  # noqa: E731
    fused = lambda: ops.edge_errors(sources, index, coef, backend="triton")  # noqa: E731
    t_eager = time_fn(eager, 1, repeats)
    t_fused = time_fn(fused, 1, repeats)
    e, f = eager(), fused()
    rel = ((f - e).abs().max() / e.abs().max().clamp_min(1e-30)).item()
    gathered = edges * slots * samples * numel * 4 / t_fused / 1e9
    print(f"edge_errors  T={2 * n + 1} S={samples} elements/sample={numel} E={edges} M={slots}: "
          f"eager {t_eager * 1e3:.2f} ms, kernel {t_fused * 1e3:.2f} ms ({gathered:.0f} GB/s of gathered fp32 rows), "
          f"speedup {t_eager / t_fused:.1f}x, max rel diff {rel:.1e}")  # fmt: skip
    return t_eager, t_fused, rel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU under TRITON_INTERPRET=1")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--reps", type=int, default=None, help="calls per timed block (default 50 on GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks, median taken (default 7 on GPU)")
    args = parser.parse_args(argv)

    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if torch.cuda.is_available() and not interpret:
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    elif args.smoke and interpret:
        device = torch.device("cpu")
        print("device: cpu through the Triton interpreter (a check of the script: the numbers are not kernel speed)")
    else:
        print("no CUDA device: run on a GPU, or check the script with TRITON_INTERPRET=1 ... --smoke", file=sys.stderr)
        return 2
    import triton

    print(f"triton {triton.__version__}\n")
    torch.manual_seed(0)
    if args.smoke:
        sizes, reps, repeats = SMOKE_SIZES, args.reps or 1, args.repeats or 1
        cal = dict(n=6, samples=2, numel=64, max_span=2, max_skip=3)
        edge = dict(n=6, samples=2, numel=100, edges=37, slots=5)
    else:
        sizes, reps, repeats = SIZES, args.reps or 50, args.repeats or 7
        cal = dict(n=50, samples=2, numel=4096 * 64, max_span=4, max_skip=10)
        edge = dict(n=50, samples=2, numel=4096 * 64, edges=4000, slots=6)
    rows = elementwise_table(device, sizes, args.dtypes, reps, repeats)
    _, _, rel = calibration_row(device, repeats=max(repeats // 2, 1), **cal)
    _, _, rel_edge = edge_errors_row(device, repeats=max(repeats // 2, 1), **edge)
    bad = [r for r in rows if not r[10] < (1e-2 if r[1] == "bf16" else 1e-5)]
    if bad or not rel < 1e-3 or not rel_edge < 1e-5:
        print(
            f"MISMATCH between fused and eager: {bad} calibration rel {rel} edge_errors rel {rel_edge}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
