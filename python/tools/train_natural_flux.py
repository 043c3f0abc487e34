"""Train a tiny FluxPipeline whose output dynamics aim at FLUX.1's published magnitude ratios (issue 22).

FLUX.1's transformer output grows fast over the first steps (``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS`` at
N = 28: sum of |1 - ratio| over steps 1-5 = 0.51, product of ratios 1-10 = 1.86); the tiny models trained on rendered
shapes or on photo crops named by photo stay near 1. The velocity grows early when the data's power sits in a few
coarse directions in which the data are multimodal (the coarse content is a choice made at high noise) and the
latents are not small there. So the data here (python/tools/natural_flux_data.py) are 32x32 images = one of 16
smooth global colour layouts (large amplitude) + a natural-photo texture crop (smaller amplitude), and the prompt
names only the texture's photograph, leaving the layout undecided.

Steps (all seeded; every component a real diffusers/transformers class from a small config, as in
python/tools/train_tiny_flux.py):

1. Render the data; train the AutoencoderKL (4 latent channels, 16x16 latents) for a fixed number of iterations.
2. Choose the latent scale: ``shift_factor`` = the latents' mean, ``scaling_factor`` such that the *ideal* flow of the
   training latents (the exact velocity towards their empirical distribution, a mixture of narrow Gaussians at the
   training latents, :class:`meancache_kernels.testing.GaussianMixtureFlow`) has early-5 = ``--target-early5`` at
   N = 28 with FluxPipeline's sigmas (bisection on the scale). This is the data's reachable signature.
3. Train the FluxTransformer2DModel with the rectified-flow loss as FLUX is trained: sigma from a logit-normal
   distribution time-shifted by FluxPipeline's resolution shift mu (plus 10 % uniform sigmas for coverage).
4. Save (save_pretrained), reload offline, and print the signature of the trained model (N = 28, ratios of the
   transformer output's norm) next to FLUX.1's and the ideal flow's.

    python python/tools/train_natural_flux.py --out meancache_kernels/assets/tiny_flux_natural --seed 0
    python python/tools/train_natural_flux.py --smoke --out /tmp/tiny_flux_natural_smoke   # end-to-end in seconds
    python python/tools/train_natural_flux.py --evaluate meancache_kernels/assets/tiny_flux_natural  # measure

The shipped meancache_kernels/assets/tiny_flux_natural was built by the first command (defaults: 600 VAE and 2400
transformer iterations, batch 64, one torch thread) in 47.6 minutes on the shared 2-core machine; its measured
signature is in its meancache_tiny_flux.json and README.md.

``--evaluate DIR`` measures a saved model: its signature at N = 28 over 8 seeds (2 per prompt for 4 prompts),
and the PSSP jvp schedules of its calibrated profile (8 full N = 50 generations) at B = 17 and 10.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import natural_flux_data as data  # this folder is on sys.path when a script here runs
import numpy as np
import torch
import torch.nn.functional as F
import train_tiny_flux as tiny

RES = 32
MAX_SEQ = 8  # T5 sequence length used in training and recommended at inference
FLUX_EARLY5, FLUX_PROD10 = 0.51, 1.86


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- components


def build_tokenizers():
    from transformers import CLIPTokenizer, T5Tokenizer

    words = data.vocabulary()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in words:
        for p in list(w[:-1]) + [w[-1] + "</w>"]:
            vocab.setdefault(p, len(vocab))
    merges = []
    for w in words:  # merge left to right so that every word becomes one token
        toks = list(w[:-1]) + [w[-1] + "</w>"]
        while len(toks) > 1:
            merges.append((toks[0], toks[1]))
            toks = [toks[0] + toks[1]] + toks[2:]
            vocab.setdefault(toks[0], len(vocab))
    merges = list(dict.fromkeys(merges))
    clip_tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    t5_vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    t5_tok = T5Tokenizer(vocab=t5_vocab, extra_ids=0, model_max_length=MAX_SEQ)
    return clip_tok, t5_tok


def build_components(seed: int, smoke: bool = False):
    """train_tiny_flux.py's components (the same seeded CLIP, T5, VAE, transformer and scheduler) with this data's
    tokenizers."""
    return tiny.build_components(seed, smoke=smoke, tokenizers=build_tokenizers())


# ----------------------------------------------------------------------------------------------- dynamics


def resolution_mu(scheduler_config, image_seq_len: int) -> float:
    """FluxPipeline's dynamic shift mu for an image sequence length (its calculate_shift, linear in the length)."""
    c = scheduler_config
    m = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
    return image_seq_len * m + c["base_shift"] - m * c["base_image_seq_len"]


def pipeline_sigmas(scheduler_config, n: int, image_seq_len: int) -> torch.Tensor:
    """The N + 1 sigmas FluxPipeline runs at (linspace(1, 1/N, N) time-shifted by mu, then 0)."""
    mu = resolution_mu(scheduler_config, image_seq_len)
    t = np.linspace(1.0, 1.0 / n, n)
    s = math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))
    return torch.tensor(np.concatenate([s, [0.0]]), dtype=torch.float64)


def signature_of_norms(norms: torch.Tensor) -> dict:
    """norms [S, N] of the transformer output per sample and step -> mean ratio curve, early5 and prod10."""
    r = (norms[:, 1:] / norms[:, :-1]).mean(0).double().numpy()
    r = np.concatenate([[1.0], r])
    return {"ratios": [round(float(x), 4) for x in r], "early5": float(np.abs(1 - r[1:6]).sum()),
            "prod10": float(np.prod(r[1:11]))}


def ideal_signature(latents: torch.Tensor, sigmas: torch.Tensor, samples: int = 8, seed: int = 0,
                    width: float = 1e-3) -> dict:
    """Signature of the exact flow towards the empirical distribution of ``latents`` [n, D] (narrow Gaussians of
    variance ``width`` at each), integrated with Euler on ``sigmas`` from ``samples`` seeded noises."""
    from meancache_kernels.testing import GaussianMixtureFlow

    lat = latents.reshape(latents.shape[0], -1).double()
    flow = GaussianMixtureFlow(lat, torch.full((lat.shape[0],), width, dtype=torch.float64))
    x = torch.randn(samples, lat.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    norms = []
    for i in range(len(sigmas) - 1):
        v = flow(x, float(sigmas[i]))
        norms.append(v.norm(dim=1))
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return signature_of_norms(torch.stack(norms, 1))


def choose_scale(centred: torch.Tensor, sigmas: torch.Tensor, target_early5: float, subset: int = 1200):
    """Scale of the (mean-free) latents at which the ideal flow's early-5 equals ``target_early5`` (bisection on the
    latents' rms in [0.5, 4]; early-5 grows with it). Returns (scale, signature at that scale)."""
    lat = centred[:subset]
    rms0 = lat.pow(2).mean().sqrt().item()
    lo, hi = 0.5, 4.0
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        sig = ideal_signature(lat * (mid / rms0), sigmas)
        if sig["early5"] < target_early5:
            lo = mid
        else:
            hi = mid
    rms = 0.5 * (lo + hi)
    return rms / rms0, ideal_signature(lat * (rms / rms0), sigmas)


# ----------------------------------------------------------------------------------------------- training


def train_vae(vae, images: torch.Tensor, iters: int, batch: int, gen: torch.Generator) -> None:
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    for it in range(1, iters + 1):
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen)
        x = images[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 100 == 0:
            _log(f"vae it {it}/{iters}: mse {F.mse_loss(rec, x).item():.5f} kl {kl.item():.3f}")
    vae.eval()


def train_transformer(pipe, x0, pooled, prompt_embeds, labels, iters, batch, gen, lr, mu, drop=0.1) -> None:
    """Rectified flow, sigma ~ time_shift(mu, sigmoid(N(0, 1))) (FLUX's logit-normal with the resolution shift) on
    90 % of the samples, uniform on the rest; the prompt is replaced by the empty prompt (last row of the embeddings)
    with probability ``drop``. Warm-up then cosine decay over ``iters`` iterations."""
    tr = pipe.transformer
    tr.train()
    opt = torch.optim.AdamW(tr.parameters(), lr=lr, weight_decay=0.0)
    side = int(math.isqrt(x0.shape[1]))
    img_ids = pipe._prepare_latent_image_ids(batch, side, side, "cpu", torch.float32)
    txt_ids = torch.zeros(prompt_embeds.shape[1], 3)
    empty = prompt_embeds.shape[0] - 1
    ema, warm, t0 = None, 100, time.perf_counter()
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (it + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / iters)))
        idx = torch.randint(0, x0.shape[0], (batch,), generator=gen)
        x = x0[idx]
        lab = torch.where(torch.rand(batch, generator=gen) < drop, torch.full_like(labels[idx], empty), labels[idx])
        noise = torch.randn(x.shape, generator=gen)
        u = torch.sigmoid(torch.randn(batch, generator=gen))
        s_ln = math.exp(mu) / (math.exp(mu) + (1.0 / u - 1.0))
        s = torch.where(torch.rand(batch, generator=gen) < 0.9, s_ln, torch.rand(batch, generator=gen))
        zt = (1 - s)[:, None, None] * x + s[:, None, None] * noise
        v = tr(
            hidden_states=zt, timestep=s, guidance=None, pooled_projections=pooled[lab],
            encoder_hidden_states=prompt_embeds[lab], txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
        )[0]
        loss = F.mse_loss(v, noise - x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (it + 1) % 100 == 0:
            _log(f"transformer it {it + 1}/{iters}: loss(ema) {ema:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                 f"elapsed {(time.perf_counter() - t0) / 60:.1f} min")
    tr.eval()


# ----------------------------------------------------------------------------------------------- evaluation


def model_signature(pipe, n_steps: int = 28, seeds_per_prompt: int = 2, record: bool = False):
    """Signature of a pipeline at ``n_steps`` over the first 4 prompts x ``seeds_per_prompt`` seeds (the ratio of the
    transformer output's norm, per sample, averaged). With ``record`` also returns the trajectories (z, v, sigmas)."""
    from meancache_kernels.diffusers.calibration import record_trajectory

    prompts = [data.prompt_for(s) for s in data.SOURCES[:4]] * seeds_per_prompt
    gens = [torch.Generator().manual_seed(1000 + k) for k in range(len(prompts))]
    pipe.set_progress_bar_config(disable=True)
    z, v, sigmas = record_trajectory(pipe, prompt=prompts, num_inference_steps=n_steps, generator=gens,
                                     height=RES, width=RES, max_sequence_length=MAX_SEQ, output_type="latent")
    norms = v.flatten(2).norm(dim=2).T  # [S, N]
    sig = signature_of_norms(norms)
    return (sig, (z, v, sigmas)) if record else sig


def evaluate(out: Path, budgets=(17, 10)) -> dict:
    from diffusers import FluxPipeline
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    import meancache_kernels as mck
    from meancache_kernels.calibration import profile_from_trajectories

    pipe = FluxPipeline.from_pretrained(out)
    sig = model_signature(pipe, 28, seeds_per_prompt=2)
    flux = [round(float(r), 4) for r in FLUX_MAG_RATIOS]
    _log(f"model  N=28: early5 {sig['early5']:.3f} prod10 {sig['prod10']:.3f}  (FLUX.1 {FLUX_EARLY5} / {FLUX_PROD10})")
    _log(f"model  ratios {sig['ratios']}")
    _log(f"FLUX.1 ratios {flux}")
    _, (z, v, sigmas) = model_signature(pipe, 50, seeds_per_prompt=2, record=True)
    profile = profile_from_trajectories([(z, v)], sigmas, estimators=("jvp",))
    schedules = {}
    for b in budgets:
        s = mck.solve(profile, b, estimators=("jvp",))
        schedules[b] = [int(i) for i in s.compute_steps]
        _log(f"PSSP jvp N=50 B={b}: compute steps {schedules[b]}")
    res = {"signature_n28": sig, "flux_ratios": flux, "pssp_jvp_n50": schedules}
    meta_path = out / "meancache_tiny_flux.json"
    if meta_path.exists():
        ideal = json.loads(meta_path.read_text()).get("ideal_signature_n28")
        if ideal:
            _log(f"ideal flow of its data: early5 {ideal['early5']:.3f} prod10 {ideal['prod10']:.3f}")
    return res


# ----------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory (FluxPipeline.save_pretrained format)")
    ap.add_argument("--evaluate", metavar="DIR", help="only measure the saved model in DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-source", type=int, default=300, help="training images per photograph (8 photographs)")
    ap.add_argument("--vae-iters", type=int, default=600)
    ap.add_argument("--transformer-iters", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target-early5", type=float, default=0.55, help="the ideal flow's early-5 the scale aims at")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny model, tiny data, a few seconds: end-to-end check")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.evaluate:
        res = evaluate(Path(args.evaluate))
        print(json.dumps(res))
        return 0
    if not args.out:
        raise SystemExit("--out is required (or --evaluate DIR)")
    for name in ("per_source", "vae_iters", "transformer_iters", "batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from diffusers import FluxPipeline

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()
    comps = build_components(args.seed, smoke=args.smoke)
    pipe = FluxPipeline(**comps)
    n_params = {k: sum(p.numel() for p in v.parameters()) for k, v in comps.items() if hasattr(v, "parameters")}
    _log(f"parameters: {n_params}")

    per_source = 8 if args.smoke else args.per_source
    imgs, src, lay = data.make_dataset(per_source, res=RES, seed=args.seed)
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous() * 2 - 1  # [-1, 1] as the VAE expects
    prompts = [data.prompt_for(s) for s in data.SOURCES] + [""]  # the last one: the empty prompt (dropout)
    with torch.no_grad():
        prompt_embeds, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, max_sequence_length=MAX_SEQ)
    _log(f"dataset: {images.shape[0]} images, {len(prompts)} prompts; embeddings {tuple(prompt_embeds.shape)}")

    train_vae(pipe.vae, images, 20 if args.smoke else args.vae_iters, 16 if args.smoke else 32, gen)
    with torch.no_grad():
        lat = torch.cat([pipe.vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
    shift = lat.mean().item()
    centred = lat - shift
    seq = (lat.shape[2] // 2) * (lat.shape[3] // 2)
    sigmas28 = pipeline_sigmas(pipe.scheduler.config, 28, seq)
    scale, ideal = choose_scale(centred.flatten(1), sigmas28, args.target_early5)
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    x0 = centred * scale
    _log(f"latents {tuple(lat.shape)} shift {shift:.4f} scale {scale:.4f} rms {x0.pow(2).mean().sqrt():.3f}; "
         f"ideal flow N=28: early5 {ideal['early5']:.3f} prod10 {ideal['prod10']:.3f}")
    b, c, h, w = x0.shape
    x0 = FluxPipeline._pack_latents(x0, b, c, h, w)
    mu = resolution_mu(pipe.scheduler.config, seq)

    train_transformer(pipe, x0, pooled, prompt_embeds, torch.from_numpy(src), 30 if args.smoke else
                      args.transformer_iters, 8 if args.smoke else args.batch, gen, args.lr, mu)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    minutes = round((time.perf_counter() - t_start) / 60, 2)
    meta = {
        "height": RES, "width": RES, "max_sequence_length": MAX_SEQ, "seed": args.seed,
        "per_source": per_source, "vae_iterations": args.vae_iters, "transformer_iterations": args.transformer_iters,
        "batch": args.batch, "lr": args.lr, "target_early5": args.target_early5, "minutes": minutes,
        "threads": args.threads, "smoke": args.smoke, "parameters": n_params,
        "trainer": "python/tools/train_natural_flux.py", "latent_rms": round(float(x0.pow(2).mean().sqrt()), 4),
        "ideal_signature_n28": ideal,
    }
    sig = model_signature(FluxPipeline.from_pretrained(out), 28, seeds_per_prompt=1 if args.smoke else 2)
    meta["signature_n28"] = sig
    (out / "meancache_tiny_flux.json").write_text(json.dumps(meta, indent=2) + "\n")
    _log(f"saved to {out} after {minutes} min; trained model N=28: early5 {sig['early5']:.3f} prod10 "
         f"{sig['prod10']:.3f}; ideal flow {ideal['early5']:.3f} / {ideal['prod10']:.3f}; FLUX.1 "
         f"{FLUX_EARLY5} / {FLUX_PROD10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
