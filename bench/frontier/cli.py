"""The command line of the frontier: ``python -m bench.frontier [flags]`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .common import BUDGETS, FLOWS, RESULTS, ROOT, SMOKE_BUDGETS, SMOKE_FLOWS, SMOKE_N, N
from .flows import bench_flow
from .pipelines import PipelineBench
from .report import json_safe, write_outputs

COMMAND = "python -m bench.frontier"


def main(argv=None) -> int:
    from . import __doc__ as doc

    ap = argparse.ArgumentParser(prog=COMMAND, description=doc.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a train_tiny_flux.py output dir (default: the shipped model)")
    ap.add_argument("--profile", default=None, help="MeanCache profile (default: shipped; calibrated for --model)")
    ap.add_argument("--prompts", type=int, default=8, help="evaluation prompts (default 8)")
    ap.add_argument("--tune-prompts", type=int, default=8, help="tuning prompts (default 8)")
    ap.add_argument("--steps", type=int, default=N)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--no-flows", action="store_true", help="skip the analytic flows")
    ap.add_argument("--no-pipeline", action="store_true", help="only the analytic flows")
    ap.add_argument("--flow", action="append", default=None, type=_flow_spec, metavar="DIM,COMPONENTS,SHIFT,SEED",
                    help="an analytic flow to run instead of the default two (repeatable), e.g. --flow 32,8,1.5,7, or "
                    "a realistic one by name: NAME,SHIFT,SEED, e.g. --flow power-flux,3,0")
    ap.add_argument("--out-dir", default=None,
                    help="where NAME.md/.json/.png go (default bench/results/; --smoke: a tmp dir)")
    ap.add_argument("--name", default=None, help="output file stem (default frontier, or frontier_<model dir name>)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --smoke: 1)")
    ap.add_argument("--smoke", action="store_true", help="1 prompt, N = 8, budgets 5 and 3, small flow: CI check")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="only rewrite NAME.md and NAME.png beside an earlier run's NAME.json")
    args = ap.parse_args(argv)
    if args.report:
        path = Path(args.report)
        print(write_outputs(json.loads(path.read_text()), path.parent, path.stem))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads or (1 if args.smoke else 2))
    t_start = time.perf_counter()
    if args.smoke:
        n, budgets, n_eval, n_tune, flows = SMOKE_N, list(SMOKE_BUDGETS), 1, 1, SMOKE_FLOWS
        flow_sizes = dict(n_eval=16, n_cal=16, n_tune=8)
    else:
        n, budgets, n_eval, n_tune, flows = args.steps, [int(b) for b in args.budgets.split(",")], args.prompts, \
            args.tune_prompts, tuple(args.flow) if args.flow else FLOWS
        flow_sizes = dict(n_eval=256, n_cal=64, n_tune=32)
    name = args.name or ("frontier" if args.model is None else f"frontier_{Path(args.model).name}")
    out_dir = Path(args.out_dir) if args.out_dir else (Path(tempfile.mkdtemp()) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    result = {"command": f"{COMMAND} " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"cpu-{os.cpu_count()}c, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "library": _library_version(),
              "pipelines": [], "flows": []}
    if not args.no_pipeline:
        print(f"pipeline {args.model or 'shipped'}: N = {n}, budgets {budgets}, {n_eval} prompts", flush=True)
        pb = PipelineBench(args.model, n_eval, n_tune, n, budgets, args.profile, smoke=args.smoke,
                           log=lambda s: print(s, flush=True))
        rows = pb.run()
        pmeta = dict(pb.meta, num_steps=n, budgets=budgets, model_dir=args.model)
        result["pipelines"].append(dict(meta=pmeta, rows=[asdict(r) for r in rows]))
    if not args.no_flows:
        for spec in flows:
            print(f"flow {spec}: N = {n}, budgets {budgets}", flush=True)
            rows, fmeta = bench_flow(spec, n, budgets, **flow_sizes, log=lambda s: print(s, flush=True))
            result["flows"].append(dict(meta=fmeta, rows=[asdict(r) for r in rows]))
    result["seconds"] = time.perf_counter() - t_start
    (out_dir / f"{name}.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    text = write_outputs(result, out_dir, name)
    print()
    print(text)
    print(f"wrote {out_dir / name}.md, .json, .png ({result['seconds']:.0f} s)")
    return 0


def _flow_spec(text: str) -> dict:
    """``"dim,components,shift,seed"`` or ``"NAME,shift,seed"`` (a realistic flow, e.g. ``power-flux,3,0``) -> the
    flow spec of :func:`bench_flow` (argparse type of ``--flow``)."""
    parts = text.split(",")
    from meancache_kernels.testing import REALISTIC_FLOWS

    if parts[0] in REALISTIC_FLOWS:
        try:
            if len(parts) != 3 or not float(parts[1]) > 0 or int(parts[2]) < 0:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--flow NAME,SHIFT,SEED wants shift > 0, seed >= 0, got {text!r}") from None
        return dict(name=parts[0], shift=float(parts[1]), seed=int(parts[2]))
    try:
        if len(parts) != 4:
            raise ValueError
        dim, comps, shift, seed = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
        if dim < 1 or comps < 1 or not shift > 0 or seed < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--flow wants DIM,COMPONENTS,SHIFT,SEED (dim, components >= 1, shift > 0, seed >= 0), got {text!r}"
        ) from None
    return dict(dim=dim, components=comps, shift=shift, seed=seed)


def _library_version() -> str:
    import subprocess

    import meancache_kernels as mck

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "meancache_kernels"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    return f"meancache_kernels {mck.__version__}" + (f", git {head}" if head else "") + (
        " + uncommitted changes in meancache_kernels/" if dirty else "")
