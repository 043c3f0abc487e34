"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): video, audio and editing pipelines
built later (Wan-Animate, Sana-WM, ACE-Step, Kandinsky 5 I2I, LongCat-Image Edit).
"""

from __future__ import annotations

import torch

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


# ------------------------------------------------------------------------------ Wan-Animate
@_builder("WanAnimatePipeline", family="Wan")
def _wan_animate(name):
    from .zoo import _WAN_EMBED_CALL, _clip_vision, _video, _wan_components, _wan_transformer

    comps = _wan_components()
    # noise (16) + reference latents (16) + mask (4); a 16 x 16 face crop through a 2-level motion encoder.
    comps["transformer"] = _wan_transformer(
        "WanAnimateTransformer3DModel", in_channels=36, latent_channels=16, image_dim=16,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}, motion_encoder_size=16, motion_style_dim=8,
        motion_dim=4, motion_encoder_dim=8, face_encoder_hidden_dim=8, face_encoder_num_heads=2,
        inject_face_latents_blocks=1, motion_encoder_batch_size=4)
    # The character image goes through the VAE as well as the CLIP image encoder (image and image_embeds are
    # exclusive): a tiny CLIP vision model.
    encoder, processor = _clip_vision()
    pipe = _make(name, comps, image_encoder=encoder, image_processor=processor)
    # One segment: 5 frames of pose and face video, 5 frames a segment (4 new, 1 from the previous segment).
    call = dict(_WAN_EMBED_CALL, image=_image(16, 16), pose_video=_video(5, 16, 16), face_video=_video(5, 16, 16),
                segment_frame_length=5, prev_segment_conditioning_frames=1)
    call.pop("num_frames")
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Sana-WM
def _ltx2_video_vae():
    """A tiny LTX-2 video VAE (one level: 2x in space and time, 4 latent channels)."""
    from diffusers import AutoencoderKLLTX2Video

    vae = _seeded(AutoencoderKLLTX2Video, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                  decoder_block_out_channels=(8,), layers_per_block=(1,), decoder_layers_per_block=(1, 1),
                  spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
                  decoder_inject_noise=(False, False), downsample_type=("spatial",), upsample_residual=(False,),
                  upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
                  encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return vae


@_builder("SanaWMPipeline", family="Sana")
def _sana_wm(name):
    from diffusers import SanaWMTransformer3DModel

    vae = _ltx2_video_vae()
    # One GDN (linear attention) block and one softmax block; the chunk Plucker rays are 6 values per frame of a
    # latent frame's temporal stride.
    transformer = _seeded(SanaWMTransformer3DModel, in_channels=4, num_layers=2, hidden_size=32,
                          num_attention_heads=2, softmax_every_n=2, linear_head_dim=16,
                          chunk_plucker_channels=6 * vae.temporal_compression_ratio, chunk_plucker_post_attn_blocks=2,
                          caption_channels=16, mlp_ratio=2.0, image_size=32)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    # Gemma-2 hidden states (B, 1, L, D) and their masks in place of the text encoder (the pipeline still takes a
    # prompt argument; both of one length: it concatenates them); a camera path from the action DSL (8 steps
    # forward: 9 frames, 5 latent frames).
    g = torch.Generator().manual_seed(1)
    call = dict(image=_image(32, 32), prompt="a red cube", action="w-8", intrinsics=[32.0, 32.0, 16.0, 16.0],
                height=16, width=16, num_frames=9, guidance_scale=5.0,
                prompt_embeds=torch.randn(1, 1, 7, 16, generator=g),
                prompt_attention_mask=torch.ones(1, 7, dtype=torch.long),
                negative_prompt_embeds=torch.randn(1, 1, 7, 16, generator=g),
                negative_prompt_attention_mask=torch.ones(1, 7, dtype=torch.long))
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ ACE-Step
@_builder("AceStepPipeline", family="ACE-Step")
def _ace_step(name):
    from diffusers import AutoencoderOobleck
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    from .testing import _qwen_tokenizer

    # The pipeline takes no prompt embeddings (it encodes the formatted caption with the text encoder and looks the
    # lyrics up in its embedding table): a tiny Qwen3 over the file-less tokenizer.
    text_encoder = _seeded(Qwen3Model, Qwen3Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                   vocab_size=128, max_position_embeddings=512))
    # The DiT sees the noise (8) and the context latents: source latents (8) + chunk mask (8).
    transformer = _seeded(AceStepTransformer1DModel, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, in_channels=24,
                          audio_acoustic_hidden_dim=8, patch_size=2, rope_theta=10000.0, sliding_window=16)
    condition_encoder = _seeded(AceStepConditionEncoder, hidden_size=32, intermediate_size=64, text_hidden_dim=16,
                                timbre_hidden_dim=8, num_lyric_encoder_hidden_layers=1,
                                num_timbre_encoder_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=8, rope_theta=10000.0, sliding_window=16)
    # 4 Hz stereo, 2x down: 2 latent frames a second.
    vae = _seeded(AutoencoderOobleck, encoder_hidden_size=6, downsampling_ratios=[1, 2], decoder_channels=3,
                  decoder_input_channels=8, audio_channels=2, channel_multiples=[2, 4], sampling_rate=4)
    # The pipeline passes its own sigmas in [0, 1] to set_timesteps: num_train_timesteps=1, shift=1.
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=_qwen_tokenizer(),
                            condition_encoder=condition_encoder,
                            scheduler=_flow_scheduler(num_train_timesteps=1, shift=1.0)))
    # guidance_scale > 1: the conditional and null-condition branches in one batched transformer call (and APG).
    call = dict(prompt="a piano piece", lyrics="[verse]\nsoft notes", audio_duration=4.0, guidance_scale=7.0,
                max_text_length=64, max_lyric_length=64)
    return pipe, _kwargs(call)
