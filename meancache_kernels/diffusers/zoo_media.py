"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): video, audio and editing pipelines
built later (Wan-Animate, Sana-WM, ACE-Step, Kandinsky 5 I2I, LongCat-Image Edit).
"""

from __future__ import annotations

from .zoo import _BUILDERS, _builder, _flow_scheduler, _flux_like, _image, _kwargs, _make, _seeded


def _kl_vae_deep(latent_channels: int, levels: int):
    """An AutoencoderKL of ``levels`` blocks (downsampling 2 ** (levels - 1)), 4 channels wide: for the pipelines
    that resize their condition image to a fixed, large area (about 1024 x 1024)."""
    from diffusers import AutoencoderKL

    return _seeded(AutoencoderKL, sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,) * levels,
                   down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                   layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                   use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


# ------------------------------------------------------------------------------ Kandinsky 5 image-to-image
@_builder("Kandinsky5I2IPipeline", family="Kandinsky 5")
def _kandinsky5_i2i(name):
    from diffusers import Kandinsky5Transformer3DModel

    # The text-to-image build's call (Qwen and CLIP embeddings in place of the text encoders) and, conditioned on
    # the image, noise (16) + image latents (16) + a ones channel.
    _, call_fn = _BUILDERS["Kandinsky5T2IPipeline"]()
    transformer = _seeded(Kandinsky5Transformer3DModel, in_visual_dim=16, in_text_dim=16, in_text_dim2=8,
                          time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2), model_dim=16, ff_dim=32,
                          num_text_blocks=1, num_visual_blocks=2, axes_dims=(2, 2, 4), visual_cond=True)
    # The pipeline assumes an 8x VAE and snaps (height, width) to its buckets (pipe.resolutions, 1024 x 1024 and
    # the like: 4096 latent tokens); one small bucket instead.
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae_deep(16, 4), text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, scheduler=_flow_scheduler()))
    pipe.resolutions = [(64, 64)]
    call = call_fn(1)
    for k in ("num_inference_steps", "output_type", "generator"):
        call.pop(k)
    call.update(image=_image(64, 64), height=64, width=64)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ LongCat-Image Edit
class _VLProcessor:
    """The part of a Qwen2-VL processor LongCat-Image Edit reads (its image processor)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor


def _qwen25_vl(tokenizer, hidden: int = 16):
    """A tiny Qwen2.5-VL (text and vision towers) whose vision token ids are those of ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))}
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": hidden, "intermediate_size": 16, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 128,
                     "rope_theta": 1000000.0, "bos_token_id": 0, "eos_token_id": 1,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=128, vision_token_id=ids["image_token_id"], **ids)
    return _seeded(Qwen2_5_VLForConditionalGeneration, config)


@_builder("LongCatImageEditPipeline", family="LongCat-Image")
def _longcat_edit(name):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .testing import _qwen_tokenizer

    # The pipeline encodes the prompt together with the image (it reads the prompt even when given prompt_embeds):
    # a tiny Qwen2.5-VL, its image processor capped at 4 x 4 patches (2 x 2 image tokens).
    tokenizer = _qwen_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
        "<|video_pad|>"]})
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    transformer = _flux_like("LongCatImageTransformer2DModel", in_channels=64, joint_attention_dim=16,
                             pooled_projection_dim=16)  # 16 latent channels, packed 2 x 2
    # The pipeline resizes the image to about 1024 x 1024: a 64x VAE keeps that to 16 x 16 latents (8 x 8 tokens).
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae_deep(16, 7), text_encoder=_qwen25_vl(tokenizer),
                            tokenizer=tokenizer, text_processor=_VLProcessor(processor),
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(image=_image(32, 32), prompt="make it red", negative_prompt="blurry",
                              guidance_scale=4.5))
