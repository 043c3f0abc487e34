"""FLUX.1 with MeanCache: one line, MeanCacheConfig(budget=B), accelerates every generation.

    python python/examples/flux.py --model black-forest-labs/FLUX.1-dev --budget 17 --steps 50 --compare

B of the N steps run the transformer (FLUX.1-dev's guidance is batched into one call: B transformer calls per image);
no calibration, no file, any N >= B. Needs the FLUX.1 weights (hub id or local directory) and a GPU for a reasonable
run time. Optional upgrade, measured in bench/RESULTS.md: `meancache calibrate` then `meancache tune` write a schedule
JSON, passed here with --schedule (thousands of extra model calls, once per model, N and budget).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="black-forest-labs/FLUX.1-dev", help="hub id or local FluxPipeline dir")
    parser.add_argument("--prompt", default="A cat holding a sign that says hello world")
    parser.add_argument("--budget", type=int, default=17, help="computed steps B")
    parser.add_argument("--steps", type=int, default=50, help="num_inference_steps N (default 50)")
    parser.add_argument("--schedule", default=None, help="a tuned schedule JSON (`meancache tune --out`) instead")
    parser.add_argument("--guidance-scale", type=float, default=3.5)
    parser.add_argument("--size", type=int, default=1024, help="height = width (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compare", action="store_true", help="also generate without MeanCache and time both")
    parser.add_argument("--out", default="flux_meancache.png")
    args = parser.parse_args(argv)

    import torch
    from diffusers import FluxPipeline

    import meancache_kernels as mck
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, preview_schedule

    try:
        pipe = FluxPipeline.from_pretrained(args.model, torch_dtype=torch.bfloat16).to(args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot load {args.model!r} (download the weights or pass --model DIR): {e}")

    def generate():
        t0 = time.perf_counter()
        image = pipe(prompt=args.prompt, guidance_scale=args.guidance_scale, height=args.size, width=args.size,
                     num_inference_steps=args.steps, generator=torch.Generator(args.device).manual_seed(args.seed),
                     ).images[0]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return image, time.perf_counter() - t0

    if args.compare:
        full, t_full = generate()
        full.save(args.out.replace(".png", "_full.png"))
        print(f"full {args.steps} steps: {t_full:.1f} s")

    if args.schedule:
        config = MeanCacheConfig(schedule=mck.Schedule.from_json(args.schedule))
    else:
        config = MeanCacheConfig(budget=args.budget)
    # The steps that will run, before running (FluxPipeline passes these sigmas and shifts them by resolution).
    seq_len = (args.size // (2 * pipe.vae_scale_factor)) ** 2
    sigmas = [1.0 - k * (1.0 - 1.0 / args.steps) / max(args.steps - 1, 1) for k in range(args.steps)]
    preview = preview_schedule(pipe, config, args.steps, sigmas=sigmas, image_seq_len=seq_len)
    print(f"{preview.source}: computed steps {preview.schedule.compute_steps}"
          + (" (the calibration-free rule, until the first generation has learnt the schedule)" if preview.learns
             else ""))
    apply_mean_cache(pipe, config)  # the one line
    image, t_mc = generate()
    stats = get_mean_cache_stats(pipe)
    if stats.learning:  # the first generation computed every step to learn the schedule
        print(f"first generation: all {stats.num_steps} steps computed ({t_mc:.1f} s); the schedule is learned")
        image, t_mc = generate()
        stats = get_mean_cache_stats(pipe)
    image.save(args.out)
    print(f"MeanCache B={stats.steps_computed}/{stats.num_steps}: {t_mc:.1f} s, transformer calls "
          f"{stats.transformer_calls} (saved {stats.transformer_calls_saved}) -> {args.out}")
    if args.compare:
        print(f"measured speedup {t_full / t_mc:.2f}x (ideal N/B = {stats.num_steps / stats.steps_computed:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
