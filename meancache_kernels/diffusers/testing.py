"""Tiny, seeded, offline diffusers pipelines for tests, demos and benchmarks (random weights, no hub access).

``tiny_pipeline(kind)`` builds a complete pipeline (text encoders, file-less tokenizers, transformer, VAE,
FlowMatchEulerDiscreteScheduler) from small configs, in eval mode; ``tiny_call_kwargs(kind)`` gives call arguments
that fit it. Kinds: ``"flux"`` (FluxPipeline, guidance-distilled, one call per step), ``"qwen-image"``
(QwenImagePipeline, true CFG: two calls per step, norm rescale), ``"z-image"`` (ZImagePipeline, batched CFG over a
list of latents), ``"sd3"`` (StableDiffusion3Pipeline, batched CFG: one call with 2x batch), ``"wan"`` (WanPipeline,
two calls per step; ``two_stage=True`` adds a ``transformer_2``), ``"hunyuan-video"`` (HunyuanVideoPipeline,
guidance-distilled). The component sizes follow the dummy components of diffusers' own pipeline tests.

``tiny_image_pipeline(kind, task)`` builds the image-to-image or inpainting pipeline of ``"flux"``, ``"sd3"``,
``"qwen-image"`` or ``"z-image"`` from the same components (SD3 inpainting: a 16-channel latent), and
``tiny_image_call_kwargs`` adds a seeded input image (and mask) and ``strength`` to the call arguments.
"""

from __future__ import annotations

import inspect
import string

import torch

__all__ = ["KINDS", "CALLS_PER_STEP", "IMAGE_PIPELINES", "tiny_pipeline", "tiny_call_kwargs", "tiny_image_pipeline",
           "tiny_image_call_kwargs"]

KINDS = ("flux", "qwen-image", "z-image", "sd3", "wan", "hunyuan-video")
# Transformer calls per step with the arguments of tiny_call_kwargs (CFG on where the pipeline has it).
CALLS_PER_STEP = {"flux": 1, "qwen-image": 2, "z-image": 1, "sd3": 1, "wan": 2, "hunyuan-video": 1}

# (kind, task) -> the diffusers pipeline class tiny_image_pipeline builds.
IMAGE_PIPELINES = {
    ("flux", "img2img"): "FluxImg2ImgPipeline",
    ("flux", "inpaint"): "FluxInpaintPipeline",
    ("sd3", "img2img"): "StableDiffusion3Img2ImgPipeline",
    ("sd3", "inpaint"): "StableDiffusion3InpaintPipeline",
    ("qwen-image", "img2img"): "QwenImageImg2ImgPipeline",
    ("qwen-image", "inpaint"): "QwenImageInpaintPipeline",
    ("z-image", "img2img"): "ZImageImg2ImgPipeline",
    ("z-image", "inpaint"): "ZImageInpaintPipeline",
}

_CHARS = string.ascii_lowercase + string.digits + ".,:!?'-"


# ---------------------------------------------------------------------------------------------------- tokenizers
def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in _CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -1.0) for c in _CHARS] + [(c, -2.0) for c in _CHARS] + [("\u2581", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _qwen_tokenizer(chat_template: str | None = None):
    from transformers import Qwen2Tokenizer

    vocab = {}
    for c in string.ascii_letters + string.digits + ".,:;!?'-_<>|/()":
        vocab.setdefault(c, len(vocab))
    vocab["\u0120"] = len(vocab)  # byte-level space
    vocab["\u010a"] = len(vocab)  # byte-level newline
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _llama_tokenizer():
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in string.printable[:94] + "\u2581":
        vocab.setdefault(c, len(vocab))
    tok = LlamaTokenizer(vocab=vocab, merges=[])
    tok.pad_token = "<unk>"
    return tok


def _t5_encoder(d_model: int = 32, vocab_size: int = 128):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0)
    return T5EncoderModel(cfg)


def _clip_config(hidden: int, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=128, projection_dim=projection,
                          hidden_act="gelu", layer_norm_eps=1e-5)


# ---------------------------------------------------------------------------------------------------- builders
def _flux():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(32))
    torch.manual_seed(0)
    text_encoder_2 = _t5_encoder(32)
    torch.manual_seed(0)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
                        text_encoder_2=text_encoder_2, tokenizer=_clip_tokenizer(), tokenizer_2=_t5_tokenizer(),
                        transformer=transformer, vae=vae)


def _qwen_image():
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": 128, "rope_theta": 1000000.0,
                     "bos_token_id": 0, "eos_token_id": 1,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16},
        hidden_size=16, vocab_size=128, vision_start_token_id=120, vision_end_token_id=121, vision_token_id=122,
        image_token_id=123, video_token_id=124,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                             tokenizer=_qwen_tokenizer(), transformer=transformer)


_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _z_image():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                           n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                           qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():  # created with torch.empty
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                        latent_channels=16, norm_num_groups=32, sample_size=32, scaling_factor=0.3611,
                        shift_factor=0.1159)
    torch.manual_seed(0)
    text_encoder = Qwen3Model(Qwen3Config(hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=2, vocab_size=128,
                                          max_position_embeddings=512))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                          tokenizer=_qwen_tokenizer(_CHAT_TEMPLATE), transformer=transformer)


def _sd3(latent_channels: int = 4):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
    if latent_channels != 4:  # SD3 inpainting takes a 16-channel latent (or 33 with mask and masked image)
        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=latent_channels, num_layers=1,
                                            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                            joint_attention_dim=32, pooled_projection_dim=64,
                                            out_channels=latent_channels)
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(_clip_config(32))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(32))
    torch.manual_seed(0)
    text_encoder_3 = _t5_encoder(32)
    torch.manual_seed(0)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
                                    text_encoder_2=text_encoder_2, text_encoder_3=text_encoder_3,
                                    tokenizer=_clip_tokenizer(), tokenizer_2=_clip_tokenizer(),
                                    tokenizer_3=_t5_tokenizer(), transformer=transformer, vae=vae)


def _wan(two_stage: bool = False):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    text_encoder = _t5_encoder(32)

    def transformer():
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                     in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                     num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                     rope_max_seq_len=32)

    torch.manual_seed(0)
    t1 = transformer()
    t2 = None
    if two_stage:
        torch.manual_seed(1)
        t2 = transformer()
    return WanPipeline(tokenizer=_t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=t1, transformer_2=t2,
                       boundary_ratio=0.5 if two_stage else None)


def _hunyuan_video():
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2,
                                                 attention_head_dim=10, num_layers=1, num_single_layers=1,
                                                 num_refiner_layers=1, patch_size=1, patch_size_t=1,
                                                 guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
                                                 rope_axes_dim=(2, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(in_channels=3, out_channels=3, latent_channels=4,
                                    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
                                    up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                    layers_per_block=1, act_fn="silu", norm_num_groups=4, scaling_factor=0.476986,
                                    spatial_compression_ratio=8, temporal_compression_ratio=4,
                                    mid_block_add_attention=True)
    torch.manual_seed(0)
    text_encoder = LlamaModel(LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_size=16,
                                          intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                          vocab_size=128, hidden_act="gelu"))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModel(_clip_config(8))
    return HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=_llama_tokenizer(), transformer=transformer,
                                vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=text_encoder_2, tokenizer_2=_clip_tokenizer())


_BUILDERS = {"flux": _flux, "qwen-image": _qwen_image, "z-image": _z_image, "sd3": _sd3, "wan": _wan,
             "hunyuan-video": _hunyuan_video}


def tiny_pipeline(kind: str, *, two_stage: bool = False):
    """A complete tiny pipeline of ``kind`` (see :data:`KINDS`), seeded, in eval mode, on the CPU.

    ``two_stage=True`` (``"wan"`` only) adds a second transformer used below the boundary timestep (Wan 2.2).
    """
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if two_stage and kind != "wan":
        raise ValueError(f"two_stage=True needs kind='wan', got kind={kind!r}")
    pipe = _BUILDERS[kind](two_stage=True) if two_stage else _BUILDERS[kind]()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_call_kwargs(kind: str, *, prompt="a red cube", num_inference_steps: int = 8, seed: int = 0, **overrides):
    """Call arguments for ``tiny_pipeline(kind)``: small image/video size, CFG on where the pipeline has it,
    ``output_type="latent"``, a seeded CPU generator. ``overrides`` replace or add arguments."""
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    kw = {"prompt": prompt, "num_inference_steps": num_inference_steps, "output_type": "latent",
          "generator": torch.Generator().manual_seed(seed)}
    if kind == "flux":
        kw.update(height=16, width=16, guidance_scale=3.5, max_sequence_length=16)
    elif kind == "qwen-image":
        kw.update(height=32, width=32, negative_prompt="blurry", true_cfg_scale=4.0, max_sequence_length=16)
    elif kind == "z-image":
        kw.update(height=32, width=32, negative_prompt="blurry", guidance_scale=3.0, cfg_normalization=False,
                  cfg_truncation=1.0, max_sequence_length=16)
    elif kind == "sd3":
        kw.update(height=16, width=16, negative_prompt="blurry", guidance_scale=5.0, max_sequence_length=16)
    elif kind == "wan":
        kw.update(height=16, width=16, num_frames=5, negative_prompt="blurry", guidance_scale=5.0,
                  max_sequence_length=16)
    elif kind == "hunyuan-video":
        kw.update(height=16, width=16, num_frames=5, guidance_scale=4.5, max_sequence_length=16,
                  prompt_template={"template": "{}", "crop_start": 0})
    kw.update(overrides)
    return kw


def tiny_image_pipeline(kind: str, task: str):
    """The tiny image-to-image (``task="img2img"``) or inpainting (``task="inpaint"``) pipeline of ``kind`` (a key of
    :data:`IMAGE_PIPELINES`), built from the components of ``tiny_pipeline(kind)``, in eval mode, on the CPU."""
    if (kind, task) not in IMAGE_PIPELINES:
        raise ValueError(f"(kind, task) must be one of {sorted(IMAGE_PIPELINES)}, got {(kind, task)!r}")
    import diffusers

    base = _sd3(latent_channels=16) if (kind, task) == ("sd3", "inpaint") else _BUILDERS[kind]()
    cls = getattr(diffusers, IMAGE_PIPELINES[kind, task])
    accepted = inspect.signature(cls.__init__).parameters
    pipe = cls(**{name: c for name, c in base.components.items() if name in accepted})
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_image_call_kwargs(kind: str, task: str, *, strength: float = 0.6, image_seed: int = 1, **overrides):
    """Call arguments for ``tiny_image_pipeline(kind, task)``: those of :func:`tiny_call_kwargs` (``overrides`` go
    there), ``strength``, a seeded random image of the output size in [0, 1] and, for inpainting, a mask over the
    central square."""
    if (kind, task) not in IMAGE_PIPELINES:
        raise ValueError(f"(kind, task) must be one of {sorted(IMAGE_PIPELINES)}, got {(kind, task)!r}")
    kw = tiny_call_kwargs(kind, strength=strength, **overrides)
    h, w = kw["height"], kw["width"]
    kw.setdefault("image", torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(image_seed)))
    if task == "inpaint" and "mask_image" not in kw:
        mask = torch.zeros(1, 1, h, w)
        mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        kw["mask_image"] = mask
    return kw
