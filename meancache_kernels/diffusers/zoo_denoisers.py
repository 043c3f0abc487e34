"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): pipelines whose denoiser is not
pipe.transformer alone (Ideogram 4: a second, unconditional transformer; DreamLite: a UNet).

Neither pipeline takes prompt embeddings, so each gets a tiny random text encoder and a character-level tokenizer
(:func:`.testing._qwen_tokenizer`): nothing is downloaded. ``zoo._unzero`` unzeroes every model MeanCache hooks
(``hooks._transformers``), the unconditional transformer and the UNet included.
"""

from __future__ import annotations

import torch

from .zoo import _builder, _flow_scheduler, _kwargs, _make, _seeded

# The chat template Ideogram 4 applies: a message's content is a list of {"type": "text", "text": ...} parts.
_PARTS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ------------------------------------------------------------------------------ Ideogram 4
@_builder("Ideogram4Pipeline", family="Ideogram 4")
def _ideogram4(name):
    """Conditional and unconditional Ideogram4Transformer2DModel (two models of one architecture, different
    weights), a Qwen3-VL text model deep enough for the pipeline's tapped layers (0 .. 35) and a one-block
    AutoencoderKLFlux2 (not run: output_type="latent")."""
    from diffusers import AutoencoderKLFlux2, Ideogram4Transformer2DModel
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import QWEN3_VL_ACTIVATION_LAYERS
    from transformers import Qwen3VLConfig, Qwen3VLModel

    from .testing import _qwen_tokenizer

    text_hidden = 8
    cfg = dict(in_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=2, intermediate_size=32,
               adaln_dim=16, llm_features_dim=len(QWEN3_VL_ACTIVATION_LAYERS) * text_hidden, rope_theta=10_000,
               mrope_section=(2, 1, 1))
    transformer = _seeded(Ideogram4Transformer2DModel, **cfg)
    torch.manual_seed(1)  # the unconditional model has weights of its own
    unconditional = Ideogram4Transformer2DModel(**cfg)
    vae = _seeded(AutoencoderKLFlux2, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                  up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), layers_per_block=1,
                  latent_channels=4, norm_num_groups=1, patch_size=(2, 2), use_quant_conv=False,
                  use_post_quant_conv=False)
    tokenizer = _qwen_tokenizer(_PARTS_TEMPLATE)
    text_encoder = _seeded(Qwen3VLModel, Qwen3VLConfig(
        text_config=dict(hidden_size=text_hidden, num_hidden_layers=max(QWEN3_VL_ACTIVATION_LAYERS) + 1,
                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=16, head_dim=4,
                         vocab_size=len(tokenizer), max_position_embeddings=256, rope_theta=10_000.0),
        vision_config=dict(hidden_size=8, depth=1, num_heads=2, intermediate_size=16, out_hidden_size=text_hidden,
                           patch_size=14)))
    pipe = _make(name, dict(scheduler=_flow_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            transformer=transformer, unconditional_transformer=unconditional))
    # guidance_schedule=None: its default is the 48-step one; a constant scale instead.
    call = dict(prompt="a red cube", height=16, width=16, guidance_scale=4.0, guidance_schedule=None,
                max_sequence_length=64)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ DreamLite
@_builder("DreamLitePipeline", "DreamLiteMobilePipeline", family="DreamLite")
def _dreamlite(name):
    """DreamLiteUNetModel (two levels, cross-attention on a 16-wide Qwen3 text model), AutoencoderTiny (not run:
    output_type="latent"). DreamLitePipeline batches its two CFG branches into one UNet call per step; the
    distilled Mobile pipeline makes one call without CFG."""
    from diffusers import AutoencoderTiny, DreamLiteUNetModel
    from transformers import Qwen3Config, Qwen3Model

    from .testing import _qwen_tokenizer

    width = 16
    unet = _seeded(DreamLiteUNetModel, sample_size=8, in_channels=4, out_channels=4,
                   down_block_types=("DreamLiteCrossAttnNoSelfAttnDownBlock2D", "DreamLiteCrossAttnDownBlock2D"),
                   up_block_types=("DreamLiteCrossAttnUpBlock2D", "DreamLiteUpBlock2D"), block_out_channels=(16, 32),
                   cross_attention_dim=width, attention_head_dim=8, layers_per_block=1, norm_num_groups=8,
                   transformer_layers_per_block=1)
    vae = _seeded(AutoencoderTiny, in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8),
                  decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                  latent_channels=4)
    tokenizer = _qwen_tokenizer()
    text_encoder = _seeded(Qwen3Model, Qwen3Config(hidden_size=width, intermediate_size=width, num_hidden_layers=2,
                                                   num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                   vocab_size=len(tokenizer), max_position_embeddings=512))
    pipe = _make(name, dict(text_encoder=text_encoder, tokenizer=tokenizer, processor=None, vae=vae, unet=unet,
                            scheduler=_flow_scheduler()))
    call = dict(prompt="a red cube", height=16, width=16, max_sequence_length=256)
    if name == "DreamLitePipeline":
        call.update(negative_prompt="blurry", guidance_scale=3.5)
    return pipe, _kwargs(call)
