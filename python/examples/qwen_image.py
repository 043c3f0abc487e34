"""Qwen-Image with MeanCache: one line, MeanCacheConfig(budget=B), accelerates every generation.

    python python/examples/qwen_image.py --model Qwen/Qwen-Image --budget 17 --prompt "a red fox in the snow"

B of the N steps run the transformer; Qwen-Image's true CFG makes two transformer calls per computed step (2B per
image, against 2N uncached). Needs the Qwen-Image weights (hub id or local directory) and a GPU for a reasonable run
time. --preset runs the paper's published schedule instead (50 steps, B = 10, 17, 25; other N fitted by sigma with a
warning): kept for reproducing the paper, it was below the one line at every budget measured (bench/RESULTS.md).
--schedule takes a tuned schedule JSON (`meancache calibrate`, then `meancache tune`).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen-Image", help="hub id or local directory of a QwenImagePipeline")
    parser.add_argument("--prompt", default="A coffee shop entrance with a chalkboard sign reading 'MeanCache'")
    parser.add_argument("--negative-prompt", default=" ")
    parser.add_argument("--budget", type=int, default=17, help="computed steps B (default 17)")
    parser.add_argument("--steps", type=int, default=50, help="num_inference_steps N (default 50)")
    parser.add_argument("--schedule", default=None, help="a tuned schedule JSON (`meancache tune --out`) instead")
    parser.add_argument("--preset", default=None, help="the paper's published schedule instead: qwen-image or "
                        "qwen-image-2512 (B = 10, 17, 25)")
    parser.add_argument("--true-cfg-scale", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=1328, help="height = width (default 1328)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compare", action="store_true", help="also generate without MeanCache and time both")
    parser.add_argument("--out", default="qwen_image_meancache.png")
    args = parser.parse_args(argv)

    import torch
    from diffusers import QwenImagePipeline

    import meancache_kernels as mck
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats

    try:
        pipe = QwenImagePipeline.from_pretrained(args.model, torch_dtype=torch.bfloat16).to(args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot load {args.model!r} (download the weights or pass --model DIR): {e}")

    def generate():
        t0 = time.perf_counter()
        image = pipe(prompt=args.prompt, negative_prompt=args.negative_prompt, true_cfg_scale=args.true_cfg_scale,
                     height=args.size, width=args.size, num_inference_steps=args.steps,
                     generator=torch.Generator(args.device).manual_seed(args.seed)).images[0]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return image, time.perf_counter() - t0

    if args.compare:
        full, t_full = generate()
        full.save(args.out.replace(".png", "_full.png"))
        print(f"full {args.steps} steps: {t_full:.1f} s")

    if args.schedule and args.preset:
        raise SystemExit("give --schedule or --preset, not both")
    if args.schedule:
        config = MeanCacheConfig(schedule=mck.Schedule.from_json(args.schedule))
    elif args.preset:
        config = MeanCacheConfig(preset=args.preset, budget=args.budget)
    else:
        config = MeanCacheConfig(budget=args.budget)
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
