"""Measured MeanCache speedup on a FLUX.1-size transformer: full 50-step loop vs B = 25, 17, 10.

    python -m bench.gpu.flux_speedup            # CUDA: FLUX.1-dev-size transformer, bf16, 1024x1024
    python -m bench.gpu.flux_speedup --smoke    # CPU: tiny transformer, same code path (proves it runs)

The transformer has FLUX.1-dev's configuration (19 double-stream + 38 single-stream blocks, 24 heads x 128,
about 12B parameters) with random bfloat16 weights: speed does not depend on the weights. It runs inside the real
``diffusers.FluxPipeline`` loop (prompt embeddings given directly, ``output_type="latent"``, no text encoders or VAE),
so the timing includes the pipeline's own per-step work and MeanCache's hook and scheduler adapter. The schedules are
the published Qwen-Image ones at N = 50 (only their budgets matter for speed). Each configuration is generated
``--repeats`` times after a warm-up; the table reports median wall times, the measured speedup over the full loop,
the ideal N/B, and their ratio (target >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8))


def build_pipeline(cfg: dict, device: str, dtype: torch.dtype):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**cfg).eval()
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(args) -> dict:
    import meancache_kernels as mck
    from meancache_kernels.diffusers import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("bench.gpu.flux_speedup needs a CUDA GPU; run with --smoke for the CPU check of the code path")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = FLUX_DEV if cuda else TINY
    size = args.size if args.size else (1024 if cuda else 32)
    pipe = build_pipeline(cfg, device, dtype)
    g = torch.Generator(device).manual_seed(0)
    call = dict(prompt_embeds=torch.randn(1, 512 if cuda else 16, cfg["joint_attention_dim"], generator=g,
                                          device=device, dtype=dtype),
                pooled_prompt_embeds=torch.randn(1, cfg["pooled_projection_dim"], generator=g, device=device,
                                                 dtype=dtype),
                height=size, width=size, num_inference_steps=args.steps, guidance_scale=3.5, output_type="latent")

    def generate():
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe(**call, generator=torch.Generator(device).manual_seed(1))[0]
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    def timed():
        generate()  # warm-up (allocator, kernels)
        return statistics.median(generate()[0] for _ in range(args.repeats))

    rows = [{"config": "full", "budget": args.steps, "seconds": timed(), "calls": args.steps}]
    for b in args.budgets:
        schedule = mck.presets.get("qwen-image", b)
        apply_mean_cache(pipe, MeanCacheConfig(schedule=schedule))
        try:
            seconds = timed()
            stats = get_mean_cache_stats(pipe)
        finally:
            remove_mean_cache(pipe)
        rows.append({"config": f"meancache B={b}", "budget": b, "seconds": seconds, "calls": stats.transformer_calls})
    full = rows[0]["seconds"]
    for r in rows:
        r["speedup"] = full / r["seconds"]
        r["ideal"] = args.steps / r["budget"]
        r["efficiency"] = r["speedup"] / r["ideal"]
    device_name = torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})"
    return {"device": device_name, "dtype": str(dtype).replace("torch.", ""), "size": size, "steps": args.steps,
            "repeats": args.repeats, "model": "FLUX.1-dev config, random weights" if cuda else "tiny (smoke)",
            "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny transformer on the CPU (checks the code path)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budgets", type=int, nargs="+", default=[25, 17, 10])
    p.add_argument("--size", type=int, default=None, help="image side (default 1024 on CUDA, 32 with --smoke)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.steps != 50:
        raise SystemExit("--steps must be 50: the published schedules used here are for N = 50")
    res = run(args)
    print(f"{res['model']} on {res['device']}, {res['dtype']}, {res['size']}x{res['size']}, N={res['steps']}, "
          f"median of {res['repeats']}")
    print(f"{'config':<16}{'calls':>6}{'time [s]':>10}{'speedup':>9}{'ideal N/B':>11}{'ratio':>7}")
    for r in res["rows"]:
        print(f"{r['config']:<16}{r['calls']:>6}{r['seconds']:>10.3f}{r['speedup']:>9.2f}{r['ideal']:>11.2f}"
              f"{r['efficiency']:>7.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
