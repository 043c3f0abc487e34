"""Calibrate the shipped tiny FluxPipeline and write its MeanCache profile beside it.

    python python/tools/calibrate_tiny_flux.py            # -> meancache_kernels/assets/tiny_flux_profile.npz

Full 50-step runs of the shipped pipeline (FluxPipeline.from_pretrained, offline) on calibration prompts and seeds
that differ from the ones `meancache demo` and bench/frontier/ evaluate (seeds 100.. here, 0.. there), recorded at
scheduler.step and turned into edge costs by meancache_kernels.diffusers.calibrate_pipeline.
"""

from __future__ import annotations

import argparse
import os

import tiny_flux_data as data  # this folder is on sys.path when a script here runs
import torch

CALIBRATION_PROMPTS = [
    data.prompt_for(c, s, p, z)
    for c, s, p, z in [
        ("purple", "square", "top left", "large"),
        ("cyan", "circle", "bottom right", None),
        ("red", "triangle", "center", "small"),
        ("green", "square", "bottom left", None),
        ("blue", "triangle", "top right", "large"),
        ("yellow", "circle", "center", None),
        ("red", "square", "bottom right", "small"),
        ("blue", "circle", "top left", None),
    ]
]


def main(argv=None) -> int:
    from meancache_kernels._assets import SHIPPED_PROFILE
    from meancache_kernels.diffusers import calibrate_pipeline
    from meancache_kernels.diffusers.loading import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_PROFILE), help=f"profile file (default {SHIPPED_PROFILE})")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=4, help="runs per prompt (noise seeds 100, 101, ..., one per sample)")
    ap.add_argument("--max-span", type=int, default=6)
    ap.add_argument("--max-skip", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="a train_tiny_flux.py output dir (default: the shipped model)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    pipe, kw = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    # one batched pipeline call per repetition of the prompt list; sample k of the whole run gets noise seed 100 + k
    prof = calibrate_pipeline(
        pipe, CALIBRATION_PROMPTS * args.seeds, args.steps, max_span=args.max_span, max_skip=args.max_skip,
        batch_size=len(CALIBRATION_PROMPTS), seed=100, progress=True,
        meta={"model": "meancache_kernels/assets/tiny_flux", "tool": "python/tools/calibrate_tiny_flux.py"}, **kw,
    )
    prof.save(args.out)
    st = prof.meta.get("stability", {})
    print(f"wrote {args.out}: {prof!r}; stability {st}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
