"""FLUX.1 with MeanCache: calibrate once, then one call accelerates every generation.

    meancache calibrate --pipeline black-forest-labs/FLUX.1-dev --prompts prompts.txt --steps 50 \\
        --out flux.profile --dtype bfloat16 --device cuda --height 1024 --width 1024
    python python/examples/flux.py --model black-forest-labs/FLUX.1-dev --profile flux.profile --budget 17

Needs the FLUX.1 weights (hub id or local directory) and a GPU for a reasonable run time. MeanCache's published
schedules are for Qwen-Image and Z-Image; for FLUX.1 solve one from your calibration profile (--profile). Without
--profile the Qwen-Image schedule is borrowed (a rough start, not optimised for FLUX.1).
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
    parser.add_argument("--profile", default=None, help="calibration profile from `meancache calibrate`")
    parser.add_argument("--gamma", type=float, default=2.0, help="PSSP peak-suppression exponent")
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
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats

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

    if args.profile:
        config = MeanCacheConfig(profile=mck.Profile.load(args.profile), budget=args.budget, gamma=args.gamma)
    else:
        print("no --profile: borrowing the published Qwen-Image schedule (calibrate FLUX.1 for a better one)")
        config = MeanCacheConfig(preset="qwen-image", budget=args.budget)
    apply_mean_cache(pipe, config)  # the one call
    image, t_mc = generate()
    image.save(args.out)
    stats = get_mean_cache_stats(pipe)
    print(f"MeanCache B={stats.steps_computed}/{stats.num_steps}: {t_mc:.1f} s, transformer calls "
          f"{stats.transformer_calls} (saved {stats.transformer_calls_saved}) -> {args.out}")
    if args.compare:
        print(f"measured speedup {t_full / t_mc:.2f}x (ideal N/B = {stats.num_steps / stats.steps_computed:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
