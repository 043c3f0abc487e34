"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): LTX-2 (audio and video latents; the
audio scheduler is a deep copy of the adapted one, a companion scheduler: :mod:`.scheduler`).

The six LTX-2 pipelines share one set of components: a 2-layer audio-video transformer, the 1-level video VAE and
the small audio VAE and vocoder of diffusers' own LTX-2 tests, and text connectors fed with random packed Gemma
hidden states (``prompt_embeds``: 2 layers of 32 features) in place of the Gemma text encoder. The calls keep the
pipelines' guidance defaults that make extra transformer calls per step (spatio-temporal guidance on block 0 and
modality-isolation guidance): three call slots per step, the first one batched for CFG.
"""

from __future__ import annotations

import copy
import types

import torch

from .zoo import _builder, _flow_scheduler, _image, _kwargs, _make, _seeded, _video

_HIDDEN, _LAYERS = 32, 1  # the stand-in Gemma: hidden size and layers (prompt_embeds pack _LAYERS + 1 states)


def _copy_without_instance_functions(self, memo):
    """``__deepcopy__`` of the tiny builds' scheduler: a deep copy leaving out the instance-level *functions* (the
    matrix's call counter wraps ``scheduler.step`` with one). A plain deep copy shares a function with the copy,
    still bound to the original scheduler, so the pipeline's audio copy would step the video scheduler; the
    scheduler's own methods (and bound methods, which deepcopy rebinds) are copied as usual."""
    cls = type(self)
    clone = cls.__new__(cls)
    memo[id(self)] = clone
    for key, value in self.__dict__.items():
        if isinstance(value, types.FunctionType) or key == "__deepcopy__":
            continue
        clone.__dict__[key] = copy.deepcopy(value, memo)
    return clone


def _components(dfr: bool = False) -> dict:
    from diffusers import AutoencoderKLLTX2Audio, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from .zoo_media import _ltx2_video_vae

    extra = dict(vae_scale_factors=(2, 2, 2), use_keyframes_abs_pos_embedding=True) if dfr else {}
    transformer = _seeded(LTX2VideoTransformer3DModel, in_channels=4, out_channels=4, patch_size=1, patch_size_t=1,
                          num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4,
                          audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
                          audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
                          caption_channels=_HIDDEN, rope_double_precision=False, rope_type="split", **extra)
    connectors = _seeded(LTX2TextConnectors, caption_channels=_HIDDEN, text_proj_in_factor=_LAYERS + 1,
                         video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
                         video_connector_num_layers=1, video_connector_num_learnable_registers=None,
                         audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8,
                         audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
                         connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
                         causal_temporal_positioning=False, rope_type="split")
    vae = _ltx2_video_vae()
    audio_vae = _seeded(AutoencoderKLLTX2Audio, base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
                        attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2, norm_type="pixel",
                        causality_axis="height", dropout=0.0, mid_block_add_attention=False, sample_rate=16000,
                        mel_hop_length=160, is_causal=True, mel_bins=8)
    vocoder = _seeded(LTX2Vocoder, in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                      upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                      leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    scheduler = _flow_scheduler()
    scheduler.__deepcopy__ = types.MethodType(_copy_without_instance_functions, scheduler)
    return dict(transformer=transformer, vae=vae, audio_vae=audio_vae, connectors=connectors, vocoder=vocoder,
                scheduler=scheduler, text_encoder=None, tokenizer=None)


def _prompt() -> dict:
    """Packed Gemma hidden states (batch 1, 8 tokens, (_LAYERS + 1) * _HIDDEN) and their masks, both prompts."""
    g = torch.Generator().manual_seed(1)
    width = (_LAYERS + 1) * _HIDDEN
    mask = torch.ones(1, 8, dtype=torch.long)
    return dict(prompt_embeds=torch.randn(1, 8, width, generator=g), prompt_attention_mask=mask,
                negative_prompt_embeds=torch.randn(1, 8, width, generator=g),
                negative_prompt_attention_mask=mask.clone())


# The guidance of the calls: CFG (batched), spatio-temporal guidance (block 0 of 2) and modality isolation.
_GUIDANCE = dict(guidance_scale=3.0, stg_scale=1.0, spatio_temporal_guidance_blocks=[0], modality_scale=3.0,
                 audio_guidance_scale=7.0, audio_stg_scale=1.0, audio_modality_scale=3.0, use_cross_timestep=False)


@_builder("LTX2Pipeline", "LTX2ImageToVideoPipeline", "LTX2ConditionPipeline", "LTX2InContextPipeline",
          "LTX2HDRPipeline", family="LTX-2")
def _ltx2(name):
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    pipe = _make(name, _components())
    call = dict(_prompt(), **_GUIDANCE, height=32, width=32, num_frames=9, frame_rate=25.0, max_sequence_length=16)
    if name == "LTX2ImageToVideoPipeline":  # image_crf=0: no H.264 re-compression of the image (needs PyAV)
        call.update(image=_image(32, 32), image_crf=0)
    elif name == "LTX2ConditionPipeline":  # the first frame as a condition
        call["conditions"] = LTX2VideoCondition(frames=_image(32, 32), index=0, strength=1.0, crf=0)
    elif name == "LTX2InContextPipeline":  # a reference video (IC-LoRA conditioning, here without a LoRA)
        from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

        call["reference_conditions"] = LTX2ReferenceCondition(frames=_video(9, 32, 32), strength=1.0)
    elif name == "LTX2HDRPipeline":  # video only (its audio scheduler steps zeros): no audio guidance arguments
        from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition

        for key in [k for k in call if k.startswith("audio_") or k == "use_cross_timestep"]:
            call.pop(key)
        call["reference_conditions"] = LTX2HDRReferenceCondition(frames=_video(9, 32, 32), strength=1.0)
    return pipe, _kwargs(call)


@_builder("LTX2DFRPipeline", family="LTX-2")
def _ltx2_dfr(name):
    pipe = _make(name, _components(dfr=True))
    call = dict(_prompt(), height=32, width=32, num_frames=9, frame_rate=25.0, max_sequence_length=16,
                use_cross_timestep=False)
    for key in ("negative_prompt_embeds", "negative_prompt_attention_mask"):
        call.pop(key)
    kwargs = _kwargs(call)

    def with_sigmas(n: int) -> dict:  # the pipeline takes sigmas (its distilled schedule), not a number of steps
        out = kwargs(n)
        out.pop("num_inference_steps")
        out["sigmas"] = [1.0 - k / n for k in range(n)]
        return out

    return pipe, with_sigmas
