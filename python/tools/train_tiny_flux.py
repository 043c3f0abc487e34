"""Train the tiny text-conditioned FluxPipeline that ships in meancache_kernels/assets/tiny_flux/.

Every component is a real diffusers/transformers class built from a small config: FluxTransformer2DModel,
AutoencoderKL, CLIPTextModel + CLIPTokenizer, T5EncoderModel + T5Tokenizer (tokenizers built from an in-memory
vocabulary covering the prompt words), FlowMatchEulerDiscreteScheduler. The data are procedurally rendered 32x32
images of one coloured shape (python/tools/tiny_flux_data.py). The text encoders stay frozen at their seeded random
initialisation (their outputs still tell the prompts apart); the VAE is trained as an autoencoder for a few minutes,
then the transformer with the rectified-flow loss on VAE latents packed exactly as FluxPipeline packs them,
conditioned on exactly what ``FluxPipeline.encode_prompt`` returns.

    python python/tools/train_tiny_flux.py --out meancache_kernels/assets/tiny_flux --minutes 26 --seed 0
    python python/tools/train_tiny_flux.py --smoke --out /tmp/tiny_flux_smoke     # end-to-end check in seconds

The shipped model was trained with ``--minutes 26 --seed 0 --threads 1 --vae-fraction 0.16`` on the shared 2-core
machine (566 VAE and 2665 transformer iterations, recorded in meancache_tiny_flux.json). ``--vae-iters`` and
``--transformer-iters`` replace the time budget by fixed iteration counts (learning-rate schedule by iteration), which
makes a run reproducible on one machine.

Runs on CPU; seeded. With a time budget the number of iterations depends on the machine's load (it is printed and
saved).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import tiny_flux_data as data  # this folder is on sys.path when a script here runs
import torch
import torch.nn.functional as F

RES = 32
MAX_SEQ = 12  # T5 sequence length used in training and recommended at inference


def build_tokenizers():
    from transformers import CLIPTokenizer, T5Tokenizer

    words = data.vocabulary()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    pieces = set()
    for w in words:
        pieces.update(w[:-1])
        pieces.add(w[-1] + "</w>")
    for p in sorted(pieces):
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


def build_components(seed: int, smoke: bool = False, tokenizers=None):
    """The pipeline's components, seeded; ``tokenizers`` (CLIP, T5) default to this dataset's (train_natural_flux.py
    passes its own)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = tokenizers if tokenizers is not None else build_tokenizers()
    torch.manual_seed(seed)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id, projection_dim=64,
        )
    ).eval()
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=0,
        )
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=RES, mid_block_add_attention=False,
    )
    width = 32 if smoke else 96
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1 if smoke else 2, num_single_layers=1 if smoke else 3,
        attention_head_dim=width // 4, num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
        guidance_embeds=False, axes_dims_rope=(4, 2, 2) if smoke else (4, 10, 10),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return dict(
        scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok,
        transformer=transformer,
    )


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_vae(vae, images: torch.Tensor, seconds: float, batch: int, gen: torch.Generator, iters=None) -> int:
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    t0, it = time.perf_counter(), 0
    while (it < iters) if iters else (time.perf_counter() - t0 < seconds):
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
        it += 1
        if it % 50 == 0:
            _log(f"vae it {it}: mse {F.mse_loss(rec, x).item():.5f} kl {kl.item():.3f}")
    vae.eval()
    return it


def train_transformer(pipe, x0, pooled, prompt_embeds, labels, seconds, batch, gen, lr, iters=None) -> int:
    """Rectified-flow training; runs for ``seconds`` or, when ``iters`` is given, exactly ``iters`` iterations (then
    the learning-rate schedule follows the iteration count and the result is reproducible on one machine)."""
    tr = pipe.transformer
    tr.train()
    opt = torch.optim.AdamW(tr.parameters(), lr=lr, weight_decay=0.0)
    n_tok = x0.shape[1]
    side = int(math.isqrt(n_tok))
    img_ids = pipe._prepare_latent_image_ids(batch, side, side, "cpu", torch.float32)
    txt_ids = torch.zeros(prompt_embeds.shape[1], 3)
    t0, it, ema = time.perf_counter(), 0, None
    warm = 100
    while True:
        elapsed = time.perf_counter() - t0
        if (it >= iters) if iters else (elapsed >= seconds):
            break
        # learning rate: linear warm-up, then cosine decay over the time budget
        frac = it / iters if iters else min(elapsed / seconds, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (it + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(0, x0.shape[0], (batch,), generator=gen)
        x = x0[idx]
        lab = labels[idx]
        noise = torch.randn(x.shape, generator=gen)
        # sigma: half logit-normal, half uniform (covers the shifted inference sigmas near 1 and near 0)
        u = torch.sigmoid(torch.randn(batch, generator=gen))
        uni = torch.rand(batch, generator=gen)
        s = torch.where(torch.rand(batch, generator=gen) < 0.5, u, uni)
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
        it += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if it % 50 == 0:
            _log(f"transformer it {it}: loss(ema) {ema:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                 f"elapsed {elapsed / 60:.1f} min")
    tr.eval()
    return it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (FluxPipeline.save_pretrained format)")
    ap.add_argument("--minutes", type=float, default=26.0, help="total training budget in minutes (default 26)")
    ap.add_argument("--vae-fraction", type=float, default=0.15, help="share of the budget for the VAE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-iters", type=int, default=None, help="fixed VAE iterations instead of the time budget")
    ap.add_argument("--transformer-iters", type=int, default=None,
                    help="fixed transformer iterations instead of the time budget (reproducible runs)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, tiny data, a few seconds: end-to-end check")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit(f"--minutes must be > 0, got {args.minutes}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import FluxPipeline

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    total = 6.0 if args.smoke else args.minutes * 60.0
    t_start = time.perf_counter()

    comps = build_components(args.seed, smoke=args.smoke)
    pipe = FluxPipeline(**comps)
    n_params = {k: sum(p.numel() for p in v.parameters()) for k, v in comps.items() if hasattr(v, "parameters")}
    _log(f"parameters: {n_params}")

    imgs, labels, specs = data.make_dataset(1 if args.smoke else 12, res=RES, seed=args.seed)
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous() * 2 - 1  # [-1, 1] as the VAE expects
    labels_t = torch.from_numpy(labels)
    prompts = [data.prompt_for(*s) for s in specs]
    _log(f"dataset: {images.shape[0]} images, {len(prompts)} prompts")

    with torch.no_grad():
        prompt_embeds, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, max_sequence_length=MAX_SEQ)
    _log(f"prompt embeddings {tuple(prompt_embeds.shape)}, pooled {tuple(pooled.shape)}")

    vae_it = train_vae(pipe.vae, images, total * args.vae_fraction, 16 if args.smoke else 32, gen,
                       iters=args.vae_iters)
    with torch.no_grad():
        lat = torch.cat([pipe.vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
    shift, scale = lat.mean().item(), 1.0 / lat.std().item()
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    x0 = (lat - shift) * scale
    b, c, h, w = x0.shape
    x0 = FluxPipeline._pack_latents(x0, b, c, h, w)
    _log(f"vae: {vae_it} iterations; latents {tuple(lat.shape)} shift {shift:.4f} scale {scale:.4f}")

    remaining = total - (time.perf_counter() - t_start) - (1 if args.smoke else 30)
    tr_it = train_transformer(pipe, x0, pooled, prompt_embeds, labels_t, max(remaining, 1.0),
                              8 if args.smoke else args.batch, gen, args.lr, iters=args.transformer_iters)
    _log(f"transformer: {tr_it} iterations")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    meta = {
        "height": RES, "width": RES, "max_sequence_length": MAX_SEQ, "seed": args.seed,
        "vae_iterations": vae_it, "transformer_iterations": tr_it, "batch": args.batch, "lr": args.lr,
        "minutes": round((time.perf_counter() - t_start) / 60, 2), "threads": args.threads, "smoke": args.smoke,
        "parameters": n_params, "trainer": "python/tools/train_tiny_flux.py",
    }
    (out / "meancache_tiny_flux.json").write_text(json.dumps(meta, indent=2) + "\n")

    # check: reload offline and generate
    re = FluxPipeline.from_pretrained(out)
    re.set_progress_bar_config(disable=True)
    test_prompts = [data.prompt_for(c, "circle", p) for c, p in zip(data.COLOURS, data.POSITIONS)]
    res = re(test_prompts, height=RES, width=RES, num_inference_steps=20 if args.smoke else 50,
             max_sequence_length=MAX_SEQ, output_type="np", generator=torch.Generator().manual_seed(0)).images
    hits = 0
    for (c, p), im in zip(zip(data.COLOURS, data.POSITIONS), res):
        got = data.classify(im)
        hits += got == (c, p)
        _log(f"check: want ({c}, {p}) got {got}")
    _log(f"saved to {out}; reload + generate ok; {hits}/{len(res)} checks agree; "
         f"total {(time.perf_counter() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
