"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): pipelines conditioned by a vision-
language encoder (Cosmos 3 Omni, GLM-Image, JoyImage Edit Plus, Bria FIBO 2).
"""

from __future__ import annotations

import torch

from .zoo import _builder, _embeds, _flow_scheduler, _kwargs, _make, _seeded


# ------------------------------------------------------------------------------ GLM-Image
@_builder("GlmImagePipeline", family="GLM-Image")
def _glm_image(name):
    from diffusers import GlmImageTransformer2DModel

    # The pipeline takes the autoregressive prior's output (prior_token_ids, what generate_prior_tokens returns:
    # the d32 image tokens upsampled 2x, one per latent patch) and the glyph embeddings (its ByT5 encoder's) as
    # arguments: no vision-language model, processor or text encoder is needed to run its denoising loop.
    transformer = _seeded(GlmImageTransformer2DModel, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                          attention_head_dim=8, num_attention_heads=2, text_embed_dim=16, time_embed_dim=16,
                          condition_dim=8, prior_vq_quantizer_codebook_size=128)
    scheduler = _flow_scheduler(use_dynamic_shifting=True, base_shift=0.25, max_shift=0.75, base_image_seq_len=256)
    pipe = _make(name, dict(transformer=transformer, vae=None, scheduler=scheduler))
    # 64 x 64 pixels, the default 8x VAE: 8 x 8 latents, 4 x 4 patches, as many prior tokens.
    prior = torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(2))
    call = dict(_embeds(16), prior_token_ids=prior, height=64, width=64, guidance_scale=1.5)
    return pipe, _kwargs(call)
