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


# ------------------------------------------------------------------------------ Qwen3-VL encoders
def _qwen3_vl_tokenizer():
    """The file-less Qwen tokenizer of :mod:`.testing` with Qwen3-VL's vision tokens."""
    from .testing import _CHAT_TEMPLATE, _qwen_tokenizer

    tokenizer = _qwen_tokenizer(_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                                                                "<|video_pad|>"]})
    return tokenizer


def _qwen3_vl_processor(tokenizer, pixels: int = 32 * 32):
    """A Qwen3-VL processor over ``tokenizer`` without files: the PIL image processor (16-pixel patches merged 2 x 2,
    every image resized to about ``pixels``) and no video processor (the video one needs torchvision)."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class NoVideoQwen3VLProcessor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    image_processor = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=pixels,
                                               max_pixels=pixels)
    return NoVideoQwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)


def _qwen3_vl(tokenizer, hidden: int = 16, layers: int = 2):
    """A tiny random Qwen3VLForConditionalGeneration whose vocabulary and vision token ids are ``tokenizer``'s."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    start, image, end, video = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                                                                "<|video_pad|>"])
    head_dim = 8
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2, head_dim=head_dim,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           out_hidden_size=hidden, num_position_embeddings=16, deepstack_visual_indexes=[1]),
        image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)
    return _seeded(Qwen3VLForConditionalGeneration, config)


# ------------------------------------------------------------------------------ JoyImage Edit Plus
@_builder("JoyImageEditPlusPipeline", family="JoyImage")
def _joyimage_edit_plus(name):
    from diffusers import JoyImageEditPlusTransformer3DModel

    from .zoo import _image, _wan_components

    # Its __call__ formats the prompt text into the Qwen3-VL chat (with an <image> tag per reference) before it looks
    # at prompt_embeds (len(prompt) of None): the prompt goes through the tiny Qwen3-VL encoder.
    tokenizer = _qwen3_vl_tokenizer()
    transformer = _seeded(JoyImageEditPlusTransformer3DModel, patch_size=[1, 4, 4], in_channels=16, hidden_size=24,
                          num_attention_heads=2, text_dim=16, mlp_width_ratio=2.0, num_layers=2,
                          rope_dim_list=[4, 4, 4])
    pipe = _make(name, dict(transformer=transformer, vae=_wan_components()["vae"], text_encoder=_qwen3_vl(tokenizer),
                            tokenizer=tokenizer, processor=_qwen3_vl_processor(tokenizer),
                            scheduler=_flow_scheduler()))
    # The reference image is resized to a 1024 x 1024 bucket (1024 patches of 4 x 4 latents) and rides along in the
    # latents the loop steps: the pipeline restores it before each step, not after the last one, and the latent
    # output holds it (the decoded output restores it). Cached, the last computed step's correction after skipped
    # steps moves those restored patches too, by far more than the last step's tiny sigma (0.001 -> 0) does uncached.
    # A 128 x 128 target (16 patches, 36.9 of movement) keeps that from dominating the check's error scale
    # (measured: 1.08 at 32 x 32, one target patch; 0.26 at 128 x 128, of which the target patches alone: 0.015).
    call = dict(prompt="make it red", negative_prompt="blurry", images=[_image(32, 32)], height=128, width=128,
                guidance_scale=4.0, max_sequence_length=64)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Bria FIBO 2
@_builder("BriaFibo2Pipeline", family="Bria")
def _bria_fibo2(name):
    from diffusers import BriaFibo2Transformer2DModel

    # prompt_embeds in the layout encode_prompt gives: (batch, 6 bundles, tokens, 3 Qwen3-VL layers side by side).
    transformer = _seeded(BriaFibo2Transformer2DModel, in_channels=4, patch_size=2, dim=32, n_layers=2,
                          n_refiner_layers=1, n_heads=2, cap_feat_dim=48, injection_layer_ids=(1,),
                          perceiver_num_layers=1, min_num_gist_tokens=4, max_num_gist_tokens=8, gist_step=4,
                          gist_min_text_len=4, gist_max_text_len=16, axes_dims=(4, 6, 6), axes_lens=(16, 16, 16))
    # Its shift of the sigmas is the image size's (mu from calculate_shift), as in Fibo 2.0's scheduler config.
    pipe = _make(name, dict(transformer=transformer, vae=None, scheduler=_flow_scheduler(use_dynamic_shifting=True)))
    g = torch.Generator().manual_seed(1)
    embeds = {key: torch.randn(1, 6, 7, 48, generator=g) for key in ("prompt_embeds", "negative_prompt_embeds")}
    return pipe, _kwargs(dict(embeds, height=64, width=64, guidance_scale=5.0))


# ------------------------------------------------------------------------------ Cosmos 3 Omni
@_builder("Cosmos3OmniPipeline", family="Cosmos")
def _cosmos3_omni(name):
    from diffusers import Cosmos3OmniTransformer, UniPCMultistepScheduler

    from .testing import _CHAT_TEMPLATE, _qwen_tokenizer
    from .zoo import _wan_components

    # No text encoder: the joint transformer (a small LLM) embeds the prompt's token ids itself; the tokenizer needs
    # a chat template and <|vision_start|>, the token that starts the generated vision sequence.
    tokenizer = _qwen_tokenizer(_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|vision_start|>"]})
    transformer = _seeded(Cosmos3OmniTransformer, head_dim=8, hidden_act="relu2", hidden_size=16, intermediate_size=32,
                          latent_channel=16, latent_patch_size=1, num_attention_heads=2, num_hidden_layers=2,
                          num_key_value_heads=2, patch_latent_dim=16, qk_norm_for_text=False, rms_norm_eps=1e-5,
                          rope_axes_dim=[2, 1, 1], vocab_size=len(tokenizer))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = _make(name, dict(transformer=transformer, text_tokenizer=tokenizer, vae=_wan_components()["vae"],
                            scheduler=scheduler), enable_safety_checker=False)
    call = dict(prompt="a red cube", negative_prompt="blurry", height=32, width=32, num_frames=5, guidance_scale=6.0)
    return pipe, _kwargs(call)
