"""Every flow-matching pipeline class of the installed diffusers, built tiny and offline, and the checks of the
compatibility matrix (``docs/pipelines.md``, written by ``python/tools/write_pipelines_md.py``; the same checks in
``tests/diffusers/test_matrix.py``).

:data:`FLOW_PIPELINES` is the list of pipeline classes whose ``scheduler`` argument is typed as a FlowMatch scheduler
or UniPC (Wan and its derivatives), as :func:`flow_pipeline_classes` finds it in the installed diffusers; it is kept
in code so that a diffusers upgrade that adds or drops one shows up as a test failure. :func:`build` makes one
class tiny (random weights, no files, no hub; text encoders replaced by ``prompt_embeds`` wherever the pipeline
accepts them) together with the call arguments that fit it; :func:`check` runs the matrix's checks on it.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
import traceback
import warnings
from dataclasses import dataclass, field

import torch

__all__ = ["FLOW_PIPELINES", "NOT_BUILT", "NOTES", "Result", "build", "check", "flow_pipeline_classes", "family"]

_FLOW_SCHEDULER = re.compile(r"FlowMatch|UniPC")
# flow_pipeline_classes() of diffusers 0.42.1 (tests/diffusers/test_matrix.py checks that it still is).
FLOW_PIPELINES = (
    "AceStepPipeline", "AuraFlowPipeline", "BriaFibo2Pipeline", "BriaFiboEditPipeline", "BriaFiboPipeline",
    "BriaPipeline", "ChromaImg2ImgPipeline", "ChromaInpaintPipeline", "ChromaPipeline", "ChronoEditPipeline",
    "CogView4ControlPipeline", "CogView4Pipeline", "Cosmos2TextToImagePipeline", "Cosmos2VideoToWorldPipeline",
    "Cosmos2_5_PredictBasePipeline", "Cosmos2_5_TransferPipeline", "Cosmos3OmniPipeline", "DreamLiteMobilePipeline",
    "DreamLitePipeline", "EasyAnimateControlPipeline", "EasyAnimateInpaintPipeline", "EasyAnimatePipeline",
    "ErnieImagePipeline", "Flux2KleinInpaintPipeline", "Flux2KleinKVPipeline", "Flux2KleinPipeline", "Flux2Pipeline",
    "FluxControlImg2ImgPipeline", "FluxControlInpaintPipeline", "FluxControlNetImg2ImgPipeline",
    "FluxControlNetInpaintPipeline", "FluxControlNetPipeline", "FluxControlPipeline", "FluxFillPipeline",
    "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxKontextInpaintPipeline", "FluxKontextPipeline", "FluxPipeline",
    "GlmImagePipeline", "HiDreamImagePipeline", "HunyuanImagePipeline", "HunyuanImageRefinerPipeline",
    "HunyuanSkyreelsImageToVideoPipeline", "HunyuanVideo15ImageToVideoPipeline", "HunyuanVideo15Pipeline",
    "HunyuanVideoFramepackPipeline", "HunyuanVideoImageToVideoPipeline", "HunyuanVideoPipeline", "Ideogram4Pipeline",
    "JoyImageEditPipeline", "JoyImageEditPlusPipeline", "Kandinsky5I2IPipeline", "Kandinsky5I2VPipeline",
    "Kandinsky5T2IPipeline", "Kandinsky5T2VPipeline", "Kandinsky6SRPipeline", "Kandinsky6TI2VAPipeline",
    "Krea2Pipeline", "LTX2ConditionPipeline", "LTX2DFRPipeline", "LTX2HDRPipeline", "LTX2ImageToVideoPipeline",
    "LTX2InContextPipeline", "LTX2Pipeline", "LTXConditionPipeline", "LTXI2VLongMultiPromptPipeline",
    "LTXImageToVideoPipeline", "LTXPipeline", "LongCatAudioDiTPipeline", "LongCatImageEditPipeline",
    "LongCatImagePipeline", "LucyEditPipeline", "Lumina2Pipeline", "LuminaPipeline", "MochiPipeline",
    "NucleusMoEImagePipeline", "OmniGenPipeline", "OvisImagePipeline", "PRXPipeline", "PRXPixelPipeline",
    "QwenImage21Pipeline", "QwenImageControlNetInpaintPipeline", "QwenImageControlNetPipeline",
    "QwenImageEditInpaintPipeline", "QwenImageEditPipeline", "QwenImageEditPlusPipeline", "QwenImageImg2ImgPipeline",
    "QwenImageInpaintPipeline", "QwenImageLayeredPipeline", "QwenImagePipeline", "SanaImageToVideoPipeline",
    "SanaPAGPipeline", "SanaWMPipeline", "SkyReelsV2DiffusionForcingImageToVideoPipeline",
    "SkyReelsV2DiffusionForcingPipeline", "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
    "SkyReelsV2ImageToVideoPipeline", "SkyReelsV2Pipeline", "StableAudio3AudioToAudioPipeline",
    "StableAudio3InpaintPipeline", "StableAudio3Pipeline", "StableDiffusion3ControlNetInpaintingPipeline",
    "StableDiffusion3ControlNetPipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
    "StableDiffusion3PAGImg2ImgPipeline", "StableDiffusion3PAGPipeline", "StableDiffusion3Pipeline",
    "VisualClozeGenerationPipeline", "VisualClozePipeline", "WanAnimatePipeline", "WanImageToVideoPipeline",
    "WanPipeline", "WanVACEPipeline", "WanVideoToVideoPipeline", "ZImageControlNetInpaintPipeline",
    "ZImageControlNetPipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline", "ZImageOmniPipeline",
    "ZImagePipeline",
)


def flow_pipeline_classes() -> tuple[str, ...]:
    """Names of the pipeline classes exported by the installed diffusers whose ``__init__`` types ``scheduler`` as a
    FlowMatch scheduler or ``UniPCMultistepScheduler`` (sorted)."""
    import diffusers
    from diffusers import DiffusionPipeline

    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in dir(diffusers):
            if "Pipeline" not in name:
                continue
            try:
                cls = getattr(diffusers, name)
            except Exception:  # optional dependency missing: not a class this install can run
                continue
            if not inspect.isclass(cls) or not issubclass(cls, DiffusionPipeline) or cls is DiffusionPipeline:
                continue
            param = inspect.signature(cls.__init__).parameters.get("scheduler")
            if param is not None and _FLOW_SCHEDULER.search(str(param.annotation)):
                names.append(name)
    return tuple(sorted(names))


# ---------------------------------------------------------------------------------------------------- the matrix
@dataclass
class Result:
    """What :func:`check` found for one pipeline class.

    ``status``: ``"ok"`` (every check passed), ``"refused"`` (``apply_mean_cache`` raises TypeError before any
    transformer call: ``error`` is its message), ``"not built"`` (no tiny offline build: ``reason``) or ``"failed"``
    (``reason`` names the check, ``error`` what the user sees).
    """

    name: str
    status: str
    reason: str = ""
    error: str = ""
    calls_per_step: int = 0
    calls: dict = field(default_factory=dict)
    rel_err: float = float("nan")


def _first_tensor(out):
    """The generated latents of a pipeline output (``return_dict=False``: a tuple)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, (tuple, list)):
        out = torch.stack([torch.as_tensor(o) for o in out]) if len(out) else torch.zeros(0)
    if hasattr(out, "images"):
        out = out.images
    return torch.as_tensor(out).detach().float().clone()


def _install_counter(pipe) -> dict:
    """Count the real forwards of the models MeanCache hooks (pipe.transformer, transformer_2,
    unconditional_transformer, unet): an instance-level wrapper installed before MeanCache, so MeanCache's hook wraps
    it and a skipped call never reaches it. ``counts["transformer"]`` counts every one of them but transformer_2
    (Ideogram 4's unconditional model: the second CFG branch; DreamLite's unet), ``counts["transformer_2"]`` Wan 2.2's
    second expert: the two keys :func:`_run` adds up."""
    from .hooks import _transformers as _denoisers

    counts = {}
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is not None:
        counts["steps"] = 0
        step = scheduler.step

        def counted_step(*args, _step=step, **kwargs):
            counts["steps"] += 1
            if "z0" not in counts:  # the latents the loop starts from
                sample = kwargs.get("sample", args[2] if len(args) > 2 else None)
                counts["z0"] = sample.detach().float().clone() if isinstance(sample, torch.Tensor) else None
            return _step(*args, **kwargs)

        scheduler.step = functools.wraps(step)(counted_step)
    for name, module in _denoisers(pipe):
        key = "transformer_2" if name == "transformer_2" else "transformer"
        counts[key] = 0
        original = module.forward

        def counted(*args, _key=key, _original=original, **kwargs):
            counts[_key] += 1
            return _original(*args, **kwargs)

        module.forward = functools.wraps(original)(counted)
    return counts


def _remove_counter(pipe) -> None:
    if getattr(pipe, "scheduler", None) is not None:
        pipe.scheduler.__dict__.pop("step", None)
    from .hooks import _transformers as _denoisers

    for _, module in _denoisers(pipe):
        module.__dict__.pop("forward", None)


def _run(pipe, kwargs_fn, n: int, counts: dict):
    for k in counts:
        counts[k] = 0
    counts.pop("z0", None)
    torch.manual_seed(0)  # some pipelines draw from the global generator (VAE sampling, conditioning noise)
    with torch.no_grad():
        out = _first_tensor(pipe(**kwargs_fn(n), return_dict=False))
    return out, sum(v for k, v in counts.items() if k in ("transformer", "transformer_2")), counts.get("steps", 0)


def _error_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:400]


# L2 distance of the cached output (N = 6, B = 3) to the uncached one, relative to how far the uncached loop moved
# the latents from where it started, that a pipeline must stay within. The tiny random models' velocities change
# fast, so the bound is loose; it still fails on a wrong estimate (measured: docs/pipelines.md, column "error").
REL_ERR_BOUND = 0.5


def _exact_config(budget: int):
    """``MeanCacheConfig(budget=B)`` that makes B calls per branch from the first generation (no learning call)."""
    from . import MeanCacheConfig

    if "learn" in MeanCacheConfig.__dataclass_fields__:
        return MeanCacheConfig(budget=budget, learn=False)
    return MeanCacheConfig(budget=budget)


# The matrix's generation: N steps, B computed, then a call at another N.
CHECK_N, CHECK_BUDGET, CHECK_N2 = 6, 3, 8


def check(name: str, *, n: int = CHECK_N, budget: int = CHECK_BUDGET, n2: int = CHECK_N2) -> Result:
    """Run the matrix's checks on the tiny ``name`` (a class of :data:`FLOW_PIPELINES`).

    Uncached, N = ``n``: the transformer calls per step (c). With ``MeanCacheConfig(budget=budget)``: calls =
    budget * c, the output within :data:`REL_ERR_BOUND` of uncached, a second call identical (state reset), a call at
    N = ``n2`` makes budget * c calls again; after ``remove_mean_cache`` the output is bit-identical to uncached.
    """
    from . import MeanCacheConfig, apply_mean_cache, get_mean_cache_stats, remove_mean_cache
    from .compat import check_pipeline, refusal_reason

    cls = _cls(name)
    if refusal_reason(cls) is not None:
        if name in _BUILDERS:  # refused by apply_mean_cache itself, before any transformer call
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe, _ = build(name)
            counts = _install_counter(pipe)
            try:
                apply_mean_cache(pipe, MeanCacheConfig(budget=budget))
            except TypeError as e:
                if counts.get("transformer", 0) == 0 and getattr(pipe, "_meancache_context", None) is None:
                    return Result(name, "refused", reason=refusal_reason(cls), error=_error_line(e))
            return Result(name, "failed", reason="apply_mean_cache did not refuse it cleanly")
        try:
            check_pipeline(cls.__new__(cls))
        except TypeError as e:
            return Result(name, "refused", reason=refusal_reason(cls), error=_error_line(e))
    if name in NOT_BUILT:
        return Result(name, "not built", reason=NOT_BUILT[name])
    if name not in _BUILDERS:
        return Result(name, "not built", reason="no tiny builder yet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pipe, kwargs_fn = build(name)
        except Exception as e:  # pragma: no cover - reported in the matrix
            return Result(name, "not built", reason="tiny build failed", error=_error_line(e))
        counts = _install_counter(pipe)
        res = Result(name, "failed")
        stage = "uncached call"
        try:
            ref, calls, steps = _run(pipe, kwargs_fn, n, counts)
            if calls == 0 or steps == 0 or calls % steps:
                res.reason = (f"uncached, N = {n}: {calls} transformer calls over {steps} scheduler.step() calls "
                              "(not a whole number per step)")
                return res
            if not torch.isfinite(ref).all():
                return Result(name, "not built", reason="the tiny random build gives non-finite latents uncached")
            cps = res.calls_per_step = calls // steps
            # What the denoising moved the latents (the scale of the error bound); the output's norm when the
            # output is not the loop's latents (unpacked, decoded).
            z0 = counts.get("z0")
            scale = (ref - z0).norm() if z0 is not None and z0.shape == ref.shape else ref.norm()
            stage = "apply_mean_cache"
            try:
                apply_mean_cache(pipe, _exact_config(budget))
            except TypeError as e:
                return Result(name, "refused", reason="apply_mean_cache refuses it (scheduler or components)",
                              error=_error_line(e), calls_per_step=cps)
            try:
                stage = "cached call"
                out1, c1, _ = _run(pipe, kwargs_fn, n, counts)
                stats = get_mean_cache_stats(pipe)
                res.calls = {"cached": c1, "stats": stats.transformer_calls}
                if (c1 != budget * cps or stats.transformer_calls != c1 or not stats.finished
                        or stats.num_steps != steps or stats.steps_skipped != steps - budget):
                    res.reason = (f"cached N = {n}, B = {budget}: {c1} transformer calls (stats say "
                                  f"{stats.transformer_calls} over {stats.num_steps} steps, "
                                  f"finished={stats.finished}), expected {budget * cps} over {steps}")
                    return res
                res.rel_err = float((out1 - ref).norm() / scale.clamp_min(1e-12))
                if not res.rel_err <= REL_ERR_BOUND:
                    res.reason = f"cached output {res.rel_err:.3f} away from uncached (bound {REL_ERR_BOUND})"
                    return res
                stage = "second cached call"
                out2, c2, _ = _run(pipe, kwargs_fn, n, counts)
                if c2 != c1 or not torch.equal(out2, out1):
                    res.reason = "a second cached call differs from the first (state not reset)"
                    return res
                stage = f"cached call at N = {n2}"
                _, c3, _ = _run(pipe, kwargs_fn, n2, counts)
                stats = get_mean_cache_stats(pipe)
                # img2img / inpaint run fewer steps than N: only more than at N = n.
                if c3 != budget * cps or not stats.finished or not stats.num_steps > steps:
                    res.reason = (f"cached N = {n2}, B = {budget}: {c3} transformer calls over "
                                  f"{stats.num_steps} steps (finished={stats.finished}), expected {budget * cps} "
                                  f"over more than {steps}")
                    return res
            finally:
                remove_mean_cache(pipe)
            stage = "call after remove_mean_cache"
            out4, _, _ = _run(pipe, kwargs_fn, n, counts)
            if not torch.equal(out4, ref):
                res.reason = "output after remove_mean_cache is not bit-identical to uncached"
                return res
            # The default configuration (which may learn its schedule from a first generation that computes
            # every step): by the second call, B calls per branch.
            stage = "default MeanCacheConfig(budget=B)"
            apply_mean_cache(pipe, MeanCacheConfig(budget=budget))
            try:
                _run(pipe, kwargs_fn, n, counts)
                _, c5, _ = _run(pipe, kwargs_fn, n, counts)
                if c5 != budget * cps:
                    res.reason = f"{stage}: {c5} transformer calls on the second call, expected {budget * cps}"
                    return res
            finally:
                remove_mean_cache(pipe)
        except Exception as e:
            res.reason = f"{stage} raised"
            res.error = _error_line(e)
            res.trace = traceback.format_exc()
            return res
        finally:
            _remove_counter(pipe)
    res.status = "ok"
    return res


# ---------------------------------------------------------------------------------------------------- builders
_BUILDERS: dict = {}
_FAMILY: dict = {}
# Classes with no tiny offline build, and why.
NOT_BUILT: dict = {} if importlib.util.find_spec("torchvision") else {
    "OmniGenPipeline": "its prompt processor (OmniGenMultiModalProcessor) needs torchvision, not installed here",
}
NOT_BUILT |= {
    "EasyAnimateControlPipeline": "fails without MeanCache in diffusers 0.42.1: __call__ always passes "
                                  "encode_prompt() text_encoder_index=0, an argument it does not take (TypeError "
                                  "before any step, whatever the call arguments)",
    "Kandinsky6SRPipeline": "tiled super-resolution with a pi-Flow transformer (its output is a policy, "
                            "out_visual_dim = 10 x the latent width, stepped by PiflowScheduler, which "
                            "apply_mean_cache's scheduler check refuses): no tiny build written yet",
    "Cosmos2_5_TransferPipeline": "its ControlNet (CosmosControlNetModel) resizes the padding mask with torchvision, "
                                  "not installed here",
}


# Caveats, shown in docs/pipelines.md.
NOTES: dict = {
    "MochiPipeline": "its linear-quadratic sigma schedule spends half the steps between sigma 1 and 0.975; measured "
                     "0.62 at N = 12, B = 6 and 0.18 (within the bound) at N = 20, B = 10",
    "PRXPixelPipeline": "pixel space; measured 0.086 (within the bound) at N = 12, B = 6 and 0.052 at N = 20, B = 10",
    "Kandinsky6TI2VAPipeline": "checked with sample_audio=False (no tiny audio VAE and vocoder built); with audio "
                               "the loop also steps a deepcopy of the scheduler for the audio latents, which MeanCache "
                               "makes a companion scheduler (its own estimates on skipped steps), as for LTX-2",
    "StableAudio3AudioToAudioPipeline": "checked at init_noise_level=1.0; below 1 the pipeline's own sigma schedule "
                                        "is not monotonic (its first two values, by design) and MeanCache refuses "
                                        "it when the call starts (ValueError from set_timesteps, before any "
                                        "transformer call)",
}


def _builder(*names: str, family: str):
    def register(fn):
        for name in names:
            _BUILDERS[name] = functools.partial(fn, name)
            _FAMILY[name] = family
        return fn

    return register


def family(name: str) -> str:
    """The model family of a pipeline class of :data:`FLOW_PIPELINES` (the diffusers subpackage when unbuilt)."""
    if name in _FAMILY:
        return _FAMILY[name]
    module = _cls(name).__module__.split(".")[2]
    for built, fam in _FAMILY.items():  # a built class of the same diffusers subpackage names the family
        if _cls(built).__module__.split(".")[2] == module:
            return fam
    return module


def build(name: str):
    """``(pipe, kwargs)``: the tiny ``name`` pipeline (seeded, eval mode, CPU) and ``kwargs(n)``, its call arguments
    for ``num_inference_steps=n`` (output_type="latent", seeded generator). KeyError when there is no builder."""
    if name not in _BUILDERS:
        raise KeyError(f"no tiny builder for {name!r}" + (f": {NOT_BUILT[name]}" if name in NOT_BUILT else ""))
    pipe, kwargs = _BUILDERS[name]()
    _memoize_encode(pipe)
    _unzero(pipe)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


def _memoize_encode(pipe) -> None:
    """The matrix calls each pipeline five times with the same image: encode it with the VAE once (an instance-level
    memo of ``vae.encode`` on an equal input; the VAE is not what is tested)."""
    vae = getattr(pipe, "vae", None)
    if not isinstance(vae, torch.nn.Module) or not hasattr(vae, "encode"):
        return
    encode = vae.encode
    memo = []

    def memo_encode(x, *args, **kwargs):
        for key, a, k, out in memo:
            if key.shape == x.shape and key.dtype == x.dtype and torch.equal(key, x) and (a, k) == (args, kwargs):
                return out
        out = encode(x, *args, **kwargs)
        memo.append((x.detach().clone(), args, kwargs, out))
        return out

    vae.encode = functools.wraps(encode)(memo_encode)


def _unzero(pipe) -> None:
    """Give the denoisers' zero-initialised parameters (output projections, gates) small seeded random values:
    a random model whose velocity is zero would not exercise anything."""
    from .hooks import _transformers as _denoisers

    g = torch.Generator().manual_seed(0)
    for _, module in _denoisers(pipe):
        with torch.no_grad():
            for p in module.parameters():
                if p.is_floating_point() and p.numel() > 1 and not p.any():
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))


def _cls(name: str):
    import diffusers

    return getattr(diffusers, name)


def _make(name: str, components: dict, **extra):
    """``name(**components)`` keeping only the arguments its ``__init__`` takes; the components not given (text
    encoders and tokenizers replaced by embeddings) are None."""
    cls = _cls(name)
    params = inspect.signature(cls.__init__).parameters
    kw = {k: v for k, v in {**components, **extra}.items() if k in params}
    for k, p in params.items():
        if k != "self" and k not in kw and p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD:
            kw[k] = None
    return cls(**kw)


def _kwargs(base: dict, seed: int = 0, latent: bool = True):
    """``kwargs(n)``: ``base`` plus num_inference_steps, output_type="latent" (unless ``latent=False``: pipelines
    without the argument) and a fresh seeded generator (pipelines without one are seeded globally by the check)."""

    def kwargs(n: int) -> dict:
        out = {"output_type": "latent"} if latent else {}
        out.update(base, num_inference_steps=n)
        if latent:
            out["generator"] = torch.Generator().manual_seed(seed)
        return out

    return kwargs


def _image(height: int, width: int, seed: int = 0):
    """A seeded RGB PIL image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _mask(height: int, width: int):
    """A PIL mask: the right half to repaint."""
    import numpy as np
    from PIL import Image

    m = np.zeros((height, width), dtype=np.uint8)
    m[:, width // 2:] = 255
    return Image.fromarray(m)


# Strength of the image-to-image and inpaint calls (a generation that starts mid-schedule).
STRENGTH = 0.6


# ------------------------------------------------------------------------------ Flux.1 and its variants
def _flux_components(in_channels: int = 4, out_channels: int | None = None):
    from diffusers import FluxTransformer2DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("flux").components)
    if in_channels != 4 or out_channels is not None:
        torch.manual_seed(0)
        comps["transformer"] = FluxTransformer2DModel(
            patch_size=1, in_channels=in_channels, out_channels=out_channels or 4, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8])
    return comps


def _flux_controlnet():
    from diffusers import FluxControlNetModel

    torch.manual_seed(0)
    return FluxControlNetModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                               axes_dims_rope=[4, 4, 8])


_FLUX_CALL = dict(prompt="a red cube", height=16, width=16, guidance_scale=3.5, max_sequence_length=16)


@_builder("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxKontextPipeline",
          "FluxKontextInpaintPipeline", family="Flux.1")
def _flux(name):
    pipe = _make(name, _flux_components())
    call = dict(_FLUX_CALL)
    if name != "FluxPipeline":
        call["image"] = _image(16, 16)
    if "Inpaint" in name:
        call["mask_image"] = _mask(16, 16)
    if name in ("FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxKontextInpaintPipeline"):
        call["strength"] = STRENGTH
    if name.startswith("FluxKontext"):
        call["_auto_resize"] = False
        call["max_area"] = 16 * 16
    return pipe, _kwargs(call)


@_builder("FluxFillPipeline", family="Flux.1")
def _flux_fill(name):
    # Fill concatenates the packed latents (4), the masked image's latents (4) and the packed mask (vae scale 1: 4).
    pipe = _make(name, _flux_components(in_channels=12, out_channels=4))
    return pipe, _kwargs(dict(_FLUX_CALL, image=_image(16, 16), mask_image=_mask(16, 16)))


@_builder("FluxControlPipeline", "FluxControlImg2ImgPipeline", "FluxControlInpaintPipeline", family="Flux.1")
def _flux_control(name):
    pipe = _make(name, _flux_components(in_channels=8, out_channels=4))
    call = dict(_FLUX_CALL, control_image=_image(16, 16, seed=1))
    if name != "FluxControlPipeline":
        call.update(image=_image(16, 16), strength=STRENGTH)
    if "Inpaint" in name:
        call["mask_image"] = _mask(16, 16)
    return pipe, _kwargs(call)


@_builder("FluxControlNetPipeline", "FluxControlNetImg2ImgPipeline", "FluxControlNetInpaintPipeline",
          family="Flux.1")
def _flux_controlnet_pipe(name):
    pipe = _make(name, _flux_components(), controlnet=_flux_controlnet())
    call = dict(_FLUX_CALL, control_image=_image(16, 16, seed=1), controlnet_conditioning_scale=0.5)
    if name != "FluxControlNetPipeline":
        call.update(image=_image(16, 16), strength=STRENGTH)
    if "Inpaint" in name:
        call["mask_image"] = _mask(16, 16)
    return pipe, _kwargs(call)


@_builder("VisualClozePipeline", "VisualClozeGenerationPipeline", family="Flux.1")
def _visualcloze(name):
    pipe = _make(name, _flux_components(in_channels=12, out_channels=4), resolution=16)
    # One in-context example (two images) and the query (an image, then the one to generate: None).
    images = [[_image(16, 16, 1), _image(16, 16, 2)], [_image(16, 16, 3), None]]
    call = dict(task_prompt="edges to image", content_prompt="a red cube", image=images, guidance_scale=3.5,
                max_sequence_length=16)
    if name == "VisualClozePipeline":
        call.update(upsampling_strength=0.0)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Stable Diffusion 3
_SD3_CALL = dict(prompt="a red cube", negative_prompt="blurry", height=16, width=16, guidance_scale=5.0,
                 max_sequence_length=16)


def _sd3_components():
    from .testing import tiny_pipeline

    return dict(tiny_pipeline("sd3").components)


@_builder("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
          "StableDiffusion3PAGPipeline", "StableDiffusion3PAGImg2ImgPipeline", family="Stable Diffusion 3")
def _sd3(name):
    comps = _sd3_components()
    if "Inpaint" in name:  # the inpaint pipeline insists on 16 (or 33) latent channels
        from diffusers import AutoencoderKL, SD3Transformer2DModel

        torch.manual_seed(0)
        comps["transformer"] = SD3Transformer2DModel(
            sample_size=32, patch_size=1, in_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=4,
            caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=16)
        torch.manual_seed(0)
        comps["vae"] = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                                     layers_per_block=1, latent_channels=16, norm_num_groups=1, use_quant_conv=False,
                                     use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = _make(name, comps, pag_applied_layers=["blocks.0"])
    call = dict(_SD3_CALL)
    if "Img2Img" in name or "Inpaint" in name:
        call.update(image=_image(16, 16), strength=STRENGTH)
    if "Inpaint" in name:
        call["mask_image"] = _mask(16, 16)
    if "PAG" in name:
        call["pag_scale"] = 2.0
    return pipe, _kwargs(call)


@_builder("StableDiffusion3ControlNetPipeline", "StableDiffusion3ControlNetInpaintingPipeline",
          family="Stable Diffusion 3")
def _sd3_controlnet(name):
    from diffusers import SD3ControlNetModel

    inpaint = "Inpaint" in name
    torch.manual_seed(0)
    # The inpainting controlnet takes the control image's latents (4) and the mask (1) as extra channels.
    controlnet = SD3ControlNetModel(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                                    num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
                                    pooled_projection_dim=64, out_channels=4,
                                    extra_conditioning_channels=1 if inpaint else 0)
    pipe = _make(name, _sd3_components(), controlnet=controlnet)
    call = dict(_SD3_CALL, control_image=_image(16, 16, seed=1), controlnet_conditioning_scale=0.5)
    if inpaint:
        call["control_mask"] = _mask(16, 16)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Qwen-Image
_QWEN_CALL = dict(height=32, width=32, true_cfg_scale=4.0)


def _qwen_embeds(seed: int, length: int = 7, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, dim, generator=g), torch.ones(1, length, dtype=torch.long)


def _qwen_prompt(dim: int = 16) -> dict:
    """prompt_embeds (and the negative ones) instead of the Qwen2.5-VL text encoder."""
    pe, pm = _qwen_embeds(1, dim=dim)
    ne, nm = _qwen_embeds(2, length=5, dim=dim)
    return dict(prompt_embeds=pe, prompt_embeds_mask=pm, negative_prompt_embeds=ne, negative_prompt_embeds_mask=nm)


def _qwen_components(**transformer_overrides):
    from diffusers import QwenImageTransformer2DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("qwen-image").components)
    if transformer_overrides:
        cfg = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                   num_attention_heads=3, joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
        cfg.update(transformer_overrides)
        torch.manual_seed(0)
        comps["transformer"] = QwenImageTransformer2DModel(**cfg)
    return comps


def _qwen_vae_16x():
    """A Qwen-Image VAE that downsamples 16x: the edit pipelines resize their condition image to a fixed area
    (about 1024 x 1024), which this keeps to a small latent grid."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(base_dim=2, z_dim=4, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=1,
                                  temperal_downsample=[False, True, True, True], latents_mean=[0.0] * 4,
                                  latents_std=[1.0] * 4)


@_builder("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline", "QwenImageEditPipeline",
          "QwenImageEditPlusPipeline", "QwenImageEditInpaintPipeline", family="Qwen-Image")
def _qwen(name):
    comps = _qwen_components()
    if "Edit" in name:
        comps["vae"] = _qwen_vae_16x()
    pipe = _make(name, comps, processor=None)
    call = dict(_QWEN_CALL, **_qwen_prompt())
    if name != "QwenImagePipeline":
        call["image"] = _image(32, 32)
    if "Edit" in name:  # multiples of 32 with the 16x VAE
        call.update(height=64, width=64)
    if "Img2Img" in name or "Inpaint" in name:
        call["strength"] = STRENGTH
    if "Inpaint" in name:
        call["mask_image"] = _mask(32, 32)
    return pipe, _kwargs(call)


@_builder("QwenImageLayeredPipeline", family="Qwen-Image")
def _qwen_layered(name):
    comps = _qwen_components(use_layer3d_rope=True, use_additional_t_cond=True)
    comps["vae"] = _qwen_vae_16x()  # the pipeline works at a fixed 640 x 640 area
    pipe = _make(name, comps, processor=None)
    # A prompt (the tiny text encoder) rather than embeddings: without one the pipeline captions the image first.
    call = dict(_QWEN_CALL, prompt="a red cube", negative_prompt="blurry", image=_image(32, 32), layers=2,
                resolution=640, output_type="pt")  # "latent" is not handled by this pipeline
    for k in ("height", "width"):
        call.pop(k)
    return pipe, _kwargs(call)


@_builder("QwenImageControlNetPipeline", "QwenImageControlNetInpaintPipeline", family="Qwen-Image")
def _qwen_controlnet(name):
    from diffusers import QwenImageControlNetModel

    inpaint = "Inpaint" in name
    torch.manual_seed(0)
    controlnet = QwenImageControlNetModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                          attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                          axes_dims_rope=(8, 4, 4), extra_condition_channels=4 if inpaint else 0)
    pipe = _make(name, _qwen_components(), controlnet=controlnet)
    call = dict(_QWEN_CALL, **_qwen_prompt(), control_image=_image(32, 32, seed=1), controlnet_conditioning_scale=0.5)
    if inpaint:
        call["control_mask"] = _mask(32, 32)
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Z-Image
_ZIMAGE_CALL = dict(height=32, width=32, guidance_scale=3.0, cfg_normalization=False, cfg_truncation=1.0)


def _zimage_prompt(dim: int = 16) -> dict:
    """Per-sample lists of caption features instead of the Qwen3 text encoder."""
    g = torch.Generator().manual_seed(1)
    return dict(prompt_embeds=[torch.randn(7, dim, generator=g)],
                negative_prompt_embeds=[torch.randn(5, dim, generator=g)])


def _zimage_components():
    from .testing import tiny_pipeline

    return dict(tiny_pipeline("z-image").components)


@_builder("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline", family="Z-Image")
def _zimage(name):
    pipe = _make(name, _zimage_components())
    call = dict(_ZIMAGE_CALL, **_zimage_prompt())
    if name != "ZImagePipeline":
        call.update(image=_image(32, 32), strength=STRENGTH)
    if "Inpaint" in name:
        call["mask_image"] = _mask(32, 32)
    return pipe, _kwargs(call)


@_builder("ZImageControlNetPipeline", "ZImageControlNetInpaintPipeline", family="Z-Image")
def _zimage_controlnet(name):
    from diffusers import ZImageControlNetModel

    torch.manual_seed(0)
    controlnet = ZImageControlNetModel(control_layers_places=[0], control_refiner_layers_places=[0],
                                       control_in_dim=16 + (17 if "Inpaint" in name else 0),
                                       all_patch_size=(2,), all_f_patch_size=(1,), dim=32, n_refiner_layers=1,
                                       n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True)
    pipe = _make(name, _zimage_components(), controlnet=controlnet)
    call = dict(_ZIMAGE_CALL, **_zimage_prompt(), control_image=_image(32, 32, seed=1))
    if "Inpaint" in name:
        call.update(image=_image(32, 32), mask_image=_mask(32, 32))
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Wan and its derivatives
_WAN_CALL = dict(prompt="a red cube", negative_prompt="blurry", height=16, width=16, num_frames=5, guidance_scale=5.0,
                 max_sequence_length=16)


def _embeds(dim: int, length: int = 7, negative: bool = True, seed: int = 1, prefix: str = "") -> dict:
    """Random ``prompt_embeds`` (and ``negative_prompt_embeds``) of width ``dim``, batch 1, in place of a text
    encoder."""
    g = torch.Generator().manual_seed(seed)
    out = {f"{prefix}prompt_embeds": torch.randn(1, length, dim, generator=g)}
    if negative:
        out[f"negative_{prefix}prompt_embeds"] = torch.randn(1, length, dim, generator=g)
    return out


# The variants' prompt cleaning needs ftfy (not installed): embeddings in place of the T5 encoder.
_WAN_EMBED_CALL = dict(_embeds(32), height=16, width=16, num_frames=5, guidance_scale=5.0)


def _wan_transformer(cls_name: str = "WanTransformer3DModel", **overrides):
    import diffusers

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
               text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    cfg.update(overrides)
    torch.manual_seed(0)
    return getattr(diffusers, cls_name)(**cfg)


def _wan_components(**transformer_overrides):
    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("wan").components)
    if transformer_overrides:
        comps["transformer"] = _wan_transformer(**transformer_overrides)
    return comps


def _video(frames: int, height: int, width: int):
    return [_image(height, width, seed=i) for i in range(frames)]


@_builder("WanPipeline", family="Wan")
def _wan(name):
    return _make(name, _wan_components()), _kwargs(dict(_WAN_CALL))


@_builder("WanImageToVideoPipeline", family="Wan")
def _wan_i2v(name):
    # Wan 2.2-style image-to-video without an image encoder: noise (16) + image latents (16) + frame mask (4).
    pipe = _make(name, _wan_components(in_channels=36), image_encoder=None, image_processor=None)
    return pipe, _kwargs(dict(_WAN_EMBED_CALL, image=_image(16, 16)))


@_builder("WanVideoToVideoPipeline", family="Wan")
def _wan_v2v(name):
    pipe = _make(name, _wan_components())
    call = dict(_WAN_EMBED_CALL, video=_video(5, 16, 16), strength=0.8)  # 0.6: 3 steps of 6 run, = B
    call.pop("num_frames")
    return pipe, _kwargs(call)


@_builder("WanVACEPipeline", family="Wan")
def _wan_vace(name):
    comps = _wan_components()
    comps["transformer"] = _wan_transformer("WanVACETransformer3DModel", vace_layers=[0], vace_in_channels=96)
    pipe = _make(name, comps)
    return pipe, _kwargs(dict(_WAN_EMBED_CALL, video=_video(5, 16, 16), mask=[_mask(16, 16)] * 5))


@_builder("LucyEditPipeline", family="Wan")
def _lucy(name):
    pipe = _make(name, _wan_components(in_channels=32))
    return pipe, _kwargs(dict(_WAN_EMBED_CALL, video=_video(5, 16, 16)))


@_builder("ChronoEditPipeline", family="Wan")
def _chronoedit(name):
    comps = _wan_components()
    comps["transformer"] = _wan_transformer("ChronoEditTransformer3DModel", in_channels=36, image_dim=16)
    encoder, processor = _clip_vision()
    pipe = _make(name, comps, image_encoder=encoder, image_processor=processor)
    return pipe, _kwargs(dict(_WAN_EMBED_CALL, image=_image(16, 16)))


def _clip_vision(hidden: int = 16, cls_name: str = "CLIPVisionModel"):
    """A tiny CLIP vision encoder (hidden size ``hidden``) and its image processor, without files."""
    import transformers
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=hidden)
    encoder = getattr(transformers, cls_name)(config)
    processor = CLIPImageProcessor(crop_size=32, size={"shortest_edge": 32})
    return encoder, processor


# ------------------------------------------------------------------------------ text-to-image/video DiTs fed with
# embeddings: no text encoder, and no VAE where the pipeline only needs one to decode (output_type="latent")
def _seeded(factory, *args, **kwargs):
    torch.manual_seed(0)
    return factory(*args, **kwargs)


def _mask_of(embeds: torch.Tensor) -> torch.Tensor:
    return torch.ones(embeds.shape[:2], dtype=torch.long)


def _with_masks(call: dict) -> dict:
    """``prompt_attention_mask`` (and the negative one) of all ones next to the embeddings."""
    out = dict(call)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        if key in call:
            out[key.replace("embeds", "attention_mask")] = _mask_of(call[key])
    return out


@_builder("ChromaPipeline", "ChromaImg2ImgPipeline", "ChromaInpaintPipeline", family="Chroma")
def _chroma(name):
    from diffusers import ChromaTransformer2DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("flux").components)  # its 1-channel VAE; Chroma packs 2x2 like Flux
    comps["transformer"] = _seeded(ChromaTransformer2DModel, patch_size=1, in_channels=4, num_layers=1,
                                   num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                   joint_attention_dim=32, axes_dims_rope=(4, 4, 8), approximator_num_channels=8,
                                   approximator_hidden_dim=16, approximator_layers=1)
    # ChromaInpaintPipeline reads transformer.config.guidance_embeds, which Chroma's transformer does not register.
    comps["transformer"].register_to_config(guidance_embeds=False)
    pipe = _make(name, comps, text_encoder=None, tokenizer=None)
    call = dict(_embeds(32), height=16, width=16, guidance_scale=5.0)
    call.update({k.replace("embeds", "attention_mask"): _mask_of(call[k]).bool()
                 for k in ("prompt_embeds", "negative_prompt_embeds")})
    if name != "ChromaPipeline":
        call.update(image=_image(16, 16), strength=STRENGTH)
    if "Inpaint" in name:
        call["mask_image"] = _mask(16, 16)
    return pipe, _kwargs(call)


@_builder("CogView4Pipeline", "CogView4ControlPipeline", family="CogView4")
def _cogview4(name):
    from diffusers import AutoencoderKL, CogView4Transformer2DModel

    control = "Control" in name
    transformer = _seeded(CogView4Transformer2DModel, patch_size=2, in_channels=8 if control else 4, out_channels=4,
                          num_layers=2, attention_head_dim=4, num_attention_heads=4, text_embed_dim=32,
                          time_embed_dim=8, condition_dim=4, sample_size=16, rope_axes_dim=(2, 2))
    vae = _seeded(AutoencoderKL, block_out_channels=[32, 64], in_channels=3, out_channels=3,
                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                  latent_channels=4, sample_size=128)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=256,
                                                      use_dynamic_shifting=True, time_shift_type="linear")))
    call = dict(_embeds(32), height=16, width=16, guidance_scale=5.0)
    if control:
        call["control_image"] = _image(16, 16, seed=1)
    return pipe, _kwargs(call)


def _flow_scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


@_builder("Lumina2Pipeline", family="Lumina2")
def _lumina2(name):
    from diffusers import Lumina2Transformer2DModel

    transformer = _seeded(Lumina2Transformer2DModel, sample_size=4, patch_size=2, in_channels=4, hidden_size=8,
                          num_layers=2, num_attention_heads=1, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None,
                          norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=[4, 2, 2], cap_feat_dim=8)
    pipe = _make(name, dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    call = _with_masks(dict(_embeds(8), height=32, width=32, guidance_scale=4.0, cfg_normalization=False))
    return pipe, _kwargs(call)


@_builder("AuraFlowPipeline", family="AuraFlow")
def _auraflow(name):
    from diffusers import AuraFlowTransformer2DModel

    transformer = _seeded(AuraFlowTransformer2DModel, sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1,
                          num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=4,
                          caption_projection_dim=32, joint_attention_dim=32, out_channels=4, pos_embed_max_size=256)
    pipe = _make(name, dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    call = _with_masks(dict(_embeds(32), height=32, width=32, guidance_scale=3.5))
    return pipe, _kwargs(call)


@_builder("MochiPipeline", family="Mochi")
def _mochi(name):
    from diffusers import MochiTransformer3DModel

    transformer = _seeded(MochiTransformer3DModel, patch_size=2, num_attention_heads=2, attention_head_dim=8,
                          num_layers=2, pooled_projection_dim=16, in_channels=12, out_channels=None, qk_norm="rms_norm",
                          text_embed_dim=32, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16)
    pipe = _make(name, dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    call = _with_masks(dict(_embeds(32), height=16, width=16, num_frames=7, guidance_scale=4.5))
    return pipe, _kwargs(call)


@_builder("LTXPipeline", "LTXImageToVideoPipeline", "LTXConditionPipeline", "LTXI2VLongMultiPromptPipeline",
          family="LTX-Video")
def _ltx(name):
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    transformer = _seeded(LTXVideoTransformer3DModel, in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                          num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32, num_layers=1,
                          caption_channels=32)
    vae = _seeded(AutoencoderKLLTXVideo, in_channels=3, out_channels=3, latent_channels=8,
                  block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                  layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                  spatio_temporal_scaling=(True, True, False, False),
                  decoder_spatio_temporal_scaling=(True, True, False, False),
                  decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                  upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
                  encoder_causal=True, decoder_causal=False)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    if name == "LTXI2VLongMultiPromptPipeline":  # no prompt_embeds: the tiny T5 text encoder
        from .testing import _t5_encoder, _t5_tokenizer

        pipe.text_encoder, pipe.tokenizer = _seeded(_t5_encoder, 32), _t5_tokenizer()
        call = dict(prompt="a red cube", negative_prompt="blurry", height=32, width=32, num_frames=9,
                    guidance_scale=3.0, temporal_tile_size=16, temporal_overlap=8, cond_image=_image(32, 32),
                    max_sequence_length=16)
        return pipe, _kwargs(call)
    call = _with_masks(dict(_embeds(32), height=32, width=32, num_frames=9, guidance_scale=3.0))
    if name in ("LTXImageToVideoPipeline", "LTXConditionPipeline"):
        call["image"] = _image(32, 32)
    return pipe, _kwargs(call)


@_builder("Cosmos2TextToImagePipeline", "Cosmos2VideoToWorldPipeline", family="Cosmos")
def _cosmos2(name):
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

    # video-to-world adds the conditioning mask as a channel
    transformer = _seeded(CosmosTransformer3DModel, in_channels=17 if "Video" in name else 16, out_channels=16,
                          num_attention_heads=2,
                          attention_head_dim=16, num_layers=2, mlp_ratio=2, text_embed_dim=32, adaln_lora_dim=4,
                          max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
                          concat_padding_mask=False, extra_pos_embed_type="learnable")  # True needs torchvision
    vae = _seeded(AutoencoderKLWan, base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True])
    scheduler = _flow_scheduler(use_karras_sigmas=True)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None, scheduler=scheduler,
                            safety_checker=_NoSafety()))
    call = dict(_embeds(32), height=32, width=32, guidance_scale=7.0)
    if "Video" in name:
        call.update(image=_image(32, 32), num_frames=5)
    return pipe, _kwargs(call)


class _NoSafety(torch.nn.Module):
    """Stands in for the Cosmos guardrail model (not available offline): lets every prompt and output through."""

    device = torch.device("cpu")
    dtype = torch.float32

    def check_text_safety(self, prompt):
        return True

    def check_video_safety(self, video):
        return video


@_builder("SanaPAGPipeline", family="Sana")
def _sana_pag(name):
    from diffusers import SanaTransformer2DModel

    transformer = _seeded(SanaTransformer2DModel, patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                          num_attention_heads=2, attention_head_dim=4, num_cross_attention_heads=2,
                          cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8, sample_size=32)
    pipe = _make(name, dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()), pag_applied_layers=["transformer_blocks.0"])
    call = _with_masks(dict(_embeds(8), negative_prompt=None, height=32, width=32, guidance_scale=4.5,
                            pag_scale=2.0, use_resolution_binning=False))
    return pipe, _kwargs(call)


# ------------------------------------------------------------------------------ Flux.2 and other Flux-like DiTs
def _flux2_vae():
    from diffusers import AutoencoderKLFlux2

    return _seeded(AutoencoderKLFlux2, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                   latent_channels=4, norm_num_groups=4, sample_size=32, use_quant_conv=False,
                   use_post_quant_conv=False)


@_builder("Flux2Pipeline", "Flux2KleinPipeline", "Flux2KleinInpaintPipeline", "Flux2KleinKVPipeline",
          family="Flux.2")
def _flux2(name):
    from diffusers import Flux2Transformer2DModel

    klein = "Klein" in name
    transformer = _seeded(Flux2Transformer2DModel, patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                          timestep_guidance_channels=32, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4),
                          guidance_embeds=not klein)
    pipe = _make(name, dict(transformer=transformer, vae=_flux2_vae(), text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()), is_distilled=name == "Flux2KleinKVPipeline")
    call = dict(_embeds(16, negative=klein and name != "Flux2KleinKVPipeline"), height=32, width=32)
    if name != "Flux2KleinKVPipeline":
        call["guidance_scale"] = 4.0
    if name == "Flux2KleinInpaintPipeline":
        call.update(image=_image(32, 32), mask_image=_mask(32, 32), strength=STRENGTH)
    if name == "Flux2KleinKVPipeline":
        call["image"] = _image(64, 64)  # the pipeline's minimum size
    return pipe, _kwargs(call)


def _flux_like(cls_name: str, **overrides):
    import diffusers

    cfg = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
               num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8])
    cfg.update(overrides)
    return _seeded(getattr(diffusers, cls_name), **cfg)


def _kl_vae(latent_channels: int = 4):
    from diffusers import AutoencoderKL

    return _seeded(AutoencoderKL, sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 4),
                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                   layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                   use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


@_builder("OvisImagePipeline", family="Ovis-Image")
def _ovis(name):
    transformer = _flux_like("OvisImageTransformer2DModel", out_channels=16)
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(), text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_embeds(32), negative_prompt=None, height=32, width=32, guidance_scale=5.0))


@_builder("LongCatImagePipeline", family="LongCat-Image")
def _longcat(name):
    from .testing import tiny_pipeline

    qwen = tiny_pipeline("qwen-image")  # its tiny Qwen2.5-VL text encoder (encode_prompt needs the prompt)
    transformer = _flux_like("LongCatImageTransformer2DModel", in_channels=64, joint_attention_dim=16,
                             pooled_projection_dim=16)  # 16 latent channels, packed 2 x 2
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(16), text_encoder=qwen.text_encoder,
                            tokenizer=qwen.tokenizer, text_processor=None, scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(prompt="a red cube", negative_prompt="blurry", height=32, width=32, guidance_scale=4.5,
                              enable_prompt_rewrite=False))


@_builder("BriaPipeline", family="Bria")
def _bria(name):
    transformer = _flux_like("BriaTransformer2DModel")
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(), text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_embeds(32), height=32, width=32, guidance_scale=5.0))


# ------------------------------------------------------------------------------ HunyuanVideo, SkyReels-V2
_HUNYUAN_CALL = dict(prompt="a red cube", height=16, width=16, num_frames=5, guidance_scale=4.5, max_sequence_length=16,
                     prompt_template={"template": "{}", "crop_start": 0})


@_builder("HunyuanVideoPipeline", "HunyuanSkyreelsImageToVideoPipeline", family="HunyuanVideo")
def _hunyuan_video(name):
    from diffusers import HunyuanVideoTransformer3DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("hunyuan-video").components)
    call = dict(_HUNYUAN_CALL)
    if name == "HunyuanSkyreelsImageToVideoPipeline":  # image latents concatenated; true CFG, no guidance embedding
        comps["transformer"] = _seeded(
            HunyuanVideoTransformer3DModel, in_channels=8, out_channels=4, num_attention_heads=2, attention_head_dim=10,
            num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
            guidance_embeds=False, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
        call.update(image=_image(16, 16), negative_prompt="blurry", true_cfg_scale=2.0, guidance_scale=1.0)
    return _make(name, comps), _kwargs(call)


@_builder("SkyReelsV2Pipeline", "SkyReelsV2DiffusionForcingPipeline", family="SkyReels-V2")
def _skyreels(name):
    from diffusers import UniPCMultistepScheduler

    comps = _wan_components()
    comps["transformer"] = _wan_transformer("SkyReelsV2Transformer3DModel")
    comps["scheduler"] = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=5.0)
    call = dict(_WAN_EMBED_CALL, guidance_scale=6.0)
    if "DiffusionForcing" in name:
        call.update(prompt=None, base_num_frames=5)
    return _make(name, comps), _kwargs(call)


# ------------------------------------------------------------------------------ more DiTs fed with embeddings
@_builder("LuminaPipeline", family="Lumina")
def _lumina(name):
    from diffusers import LuminaNextDiT2DModel

    transformer = _seeded(LuminaNextDiT2DModel, sample_size=16, patch_size=2, in_channels=4, hidden_size=16,
                          num_layers=2, num_attention_heads=2, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None,
                          norm_eps=1e-5, learn_sigma=True, qk_norm=True, cross_attention_dim=8, scaling_factor=1.0)
    pipe = _make(name, dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(_with_masks(dict(_embeds(8), height=32, width=32, guidance_scale=4.0, clean_caption=False)))


@_builder("Kandinsky5T2IPipeline", "Kandinsky5T2VPipeline", "Kandinsky5I2VPipeline", family="Kandinsky 5")
def _kandinsky5(name):
    from diffusers import Kandinsky5Transformer3DModel

    from .testing import tiny_pipeline

    video, cond = "2V" in name, name.startswith("Kandinsky5I2")
    channels = 4 if video else 16
    transformer = _seeded(Kandinsky5Transformer3DModel, in_visual_dim=channels, in_text_dim=16, in_text_dim2=8,
                          time_dim=16, out_visual_dim=channels, patch_size=(1, 2, 2), model_dim=16, ff_dim=32,
                          num_text_blocks=1, num_visual_blocks=2, axes_dims=(2, 2, 4), visual_cond=cond)
    vae = tiny_pipeline("hunyuan-video").vae if video else _kl_vae(16)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, scheduler=_flow_scheduler()))
    g = torch.Generator().manual_seed(1)
    call = dict(prompt_embeds_qwen=torch.randn(1, 7, 16, generator=g),
                prompt_embeds_clip=torch.randn(1, 8, generator=g),
                negative_prompt_embeds_qwen=torch.randn(1, 7, 16, generator=g),
                negative_prompt_embeds_clip=torch.randn(1, 8, generator=g),
                prompt_cu_seqlens=torch.tensor([0, 7], dtype=torch.int32),
                negative_prompt_cu_seqlens=torch.tensor([0, 7], dtype=torch.int32), height=32, width=32,
                guidance_scale=3.5)
    if video:  # image-to-video normalises its first 4 latent frames by the next ones: 6 latent frames
        call["num_frames"] = 21 if cond else 9
    if cond:
        call["image"] = _image(32, 32)
    return pipe, _kwargs(call)


@_builder("PRXPipeline", family="PRX")
def _prx(name):
    from diffusers import PRXTransformer2DModel

    transformer = _seeded(PRXTransformer2DModel, in_channels=4, patch_size=2, context_in_dim=16, hidden_size=16,
                          mlp_ratio=2.0, num_heads=2, depth=2, axes_dim=[4, 4])
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(4), text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()), default_sample_size=32)
    call = _with_masks(dict(_embeds(16), negative_prompt=None, height=32, width=32, guidance_scale=4.0,
                            use_resolution_binning=False))
    return pipe, _kwargs(call)


@_builder("SkyReelsV2ImageToVideoPipeline", family="SkyReels-V2")
def _skyreels_i2v(name):
    from diffusers import UniPCMultistepScheduler

    comps = _wan_components()
    comps["transformer"] = _wan_transformer("SkyReelsV2Transformer3DModel", in_channels=36, image_dim=16,
                                            added_kv_proj_dim=24)
    comps["scheduler"] = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=5.0)
    encoder, processor = _clip_vision(cls_name="CLIPVisionModelWithProjection")
    pipe = _make(name, comps, image_encoder=encoder, image_processor=processor)
    return pipe, _kwargs(dict(_WAN_EMBED_CALL, image=_image(16, 16), guidance_scale=6.0))


@_builder("HiDreamImagePipeline", family="HiDream")
def _hidream(name):
    from diffusers import HiDreamImageTransformer2DModel

    transformer = _seeded(HiDreamImageTransformer2DModel, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                          num_single_layers=1, attention_head_dim=8, num_attention_heads=4, caption_channels=[32, 16],
                          text_emb_dim=64, num_routed_experts=4, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
                          max_resolution=(16, 16), llama_layers=(0, 1))
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(4), scheduler=_flow_scheduler()))
    pipe.default_sample_size = 16  # the pipeline rescales every request to this area (128: 1024 x 1024)
    g = torch.Generator().manual_seed(1)
    call = dict(prompt_embeds_t5=torch.randn(1, 7, 32, generator=g),
                prompt_embeds_llama3=torch.randn(2, 1, 7, 16, generator=g),
                pooled_prompt_embeds=torch.randn(1, 64, generator=g),
                negative_prompt_embeds_t5=torch.randn(1, 7, 32, generator=g),
                negative_prompt_embeds_llama3=torch.randn(2, 1, 7, 16, generator=g),
                negative_pooled_prompt_embeds=torch.randn(1, 64, generator=g), height=32, width=32,
                guidance_scale=5.0)
    return pipe, _kwargs(call)


@_builder("Krea2Pipeline", family="Krea 2")
def _krea2(name):
    from diffusers import Krea2Transformer2DModel

    from .testing import tiny_pipeline

    transformer = _seeded(Krea2Transformer2DModel, in_channels=16, num_layers=1, attention_head_dim=16,
                          num_attention_heads=2, num_key_value_heads=1, intermediate_size=32, timestep_embed_dim=16,
                          text_hidden_dim=16, num_text_layers=2, text_num_attention_heads=2,
                          text_num_key_value_heads=2, text_intermediate_size=32, num_layerwise_text_blocks=1,
                          num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6))
    pipe = _make(name, dict(transformer=transformer, vae=tiny_pipeline("qwen-image").vae, text_encoder=None,
                            tokenizer=None, scheduler=_flow_scheduler()), text_encoder_select_layers=[0, 1])
    g = torch.Generator().manual_seed(1)
    pe, ne = torch.randn(1, 7, 2, 16, generator=g), torch.randn(1, 7, 2, 16, generator=g)
    call = dict(prompt_embeds=pe, negative_prompt_embeds=ne, prompt_embeds_mask=torch.ones(1, 7, dtype=torch.bool),
                negative_prompt_embeds_mask=torch.ones(1, 7, dtype=torch.bool), height=32, width=32,
                guidance_scale=4.5)
    return pipe, _kwargs(call)


@_builder("ErnieImagePipeline", family="ERNIE-Image")
def _ernie(name):
    from diffusers import ErnieImageTransformer2DModel

    transformer = _seeded(ErnieImageTransformer2DModel, hidden_size=32, num_attention_heads=2, num_layers=2,
                          ffn_hidden_size=64, in_channels=16, out_channels=16, patch_size=1, text_in_dim=16,
                          rope_axes_dim=(4, 6, 6))
    pipe = _make(name, dict(transformer=transformer, vae=_flux2_vae(), text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_embeds(16), negative_prompt=None, height=32, width=32, guidance_scale=4.0, use_pe=False))


@_builder("NucleusMoEImagePipeline", family="Nucleus-Image")
def _nucleus(name):
    from diffusers import NucleusMoEImageTransformer2DModel

    from .testing import tiny_pipeline

    transformer = _seeded(NucleusMoEImageTransformer2DModel, patch_size=2, in_channels=16, out_channels=4,
                          num_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                          axes_dims_rope=(4, 6, 6), num_experts=4, moe_intermediate_dim=16)
    pipe = _make(name, dict(transformer=transformer, vae=tiny_pipeline("qwen-image").vae, text_encoder=None,
                            processor=None, scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_qwen_prompt(), height=32, width=32, guidance_scale=4.0))


@_builder("PRXPixelPipeline", family="PRX")
def _prx_pixel(name):
    from diffusers import PRXTransformer2DModel

    transformer = _seeded(PRXTransformer2DModel, in_channels=3, patch_size=4, context_in_dim=16, hidden_size=16,
                          mlp_ratio=2.0, num_heads=2, depth=2, axes_dim=[4, 4])
    pipe = _make(name, dict(transformer=transformer, text_encoder=None, tokenizer=None, scheduler=_flow_scheduler()),
                 default_sample_size=32)
    call = _with_masks(dict(_embeds(16), negative_prompt=None, height=32, width=32, guidance_scale=4.0,
                            use_resolution_binning=False))
    return pipe, _kwargs(call)


@_builder("OmniGenPipeline", family="OmniGen")
def _omnigen(name):
    from diffusers import OmniGenTransformer2DModel

    from .testing import _llama_tokenizer

    tokenizer = _llama_tokenizer()
    transformer = _seeded(OmniGenTransformer2DModel, hidden_size=16, num_layers=1, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=32, in_channels=4, patch_size=2,
                          pad_token_id=0, vocab_size=len(tokenizer) + 8,
                          rope_scaling={"short_factor": [1.0] * 2, "long_factor": [1.0] * 2},
                          max_position_embeddings=512, original_max_position_embeddings=512, time_step_dim=16,
                          pos_embed_max_size=32)
    pipe = _make(name, dict(transformer=transformer, vae=_kl_vae(4), tokenizer=tokenizer,
                            scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(prompt="a red cube", height=32, width=32, guidance_scale=2.5))


@_builder("Cosmos2_5_PredictBasePipeline", family="Cosmos")
def _cosmos25(name):
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, UniPCMultistepScheduler

    transformer = _seeded(CosmosTransformer3DModel, in_channels=17, out_channels=16, num_attention_heads=2,
                          attention_head_dim=16, num_layers=2, mlp_ratio=2, text_embed_dim=32, adaln_lora_dim=4,
                          max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
                          concat_padding_mask=False, extra_pos_embed_type=None)
    vae = _seeded(AutoencoderKLWan, base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                        use_karras_sigmas=True)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None, scheduler=scheduler,
                            safety_checker=_NoSafety()))
    return pipe, _kwargs(dict(_embeds(32), height=32, width=32, num_frames=5, guidance_scale=7.0))


@_builder("HunyuanImagePipeline", family="HunyuanImage")
def _hunyuan_image(name):
    from diffusers import AutoencoderKLHunyuanImage, HunyuanImageTransformer2DModel

    transformer = _seeded(HunyuanImageTransformer2DModel, in_channels=4, out_channels=4, num_attention_heads=2,
                          attention_head_dim=8, num_layers=1, num_single_layers=1, num_refiner_layers=1,
                          patch_size=(1, 1), guidance_embeds=False, text_embed_dim=16, text_embed_2_dim=8,
                          rope_axes_dim=(4, 4))
    vae = _seeded(AutoencoderKLHunyuanImage, in_channels=3, out_channels=3, latent_channels=4,
                  block_out_channels=(32, 32), layers_per_block=1, spatial_compression_ratio=4, sample_size=32)
    pipe = _make(name, dict(transformer=transformer, vae=vae, scheduler=_flow_scheduler()))
    g = torch.Generator().manual_seed(1)
    call = {}
    for neg in ("", "negative_"):
        for suffix, dim in (("", 16), ("_2", 8)):
            call[f"{neg}prompt_embeds{suffix}"] = torch.randn(1, 7, dim, generator=g)
            call[f"{neg}prompt_embeds_mask{suffix}"] = torch.ones(1, 7, dtype=torch.long)
    call.update(height=32, width=32)
    return pipe, _kwargs(call)


@_builder("HunyuanVideo15Pipeline", family="HunyuanVideo 1.5")
def _hunyuan_video15(name):
    from diffusers import AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, HunyuanVideo15Transformer3DModel

    transformer = _seeded(HunyuanVideo15Transformer3DModel, in_channels=9, out_channels=4, num_attention_heads=2,
                          attention_head_dim=8, num_layers=1, num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=16,
                          text_embed_2_dim=8, image_embed_dim=8, rope_axes_dim=(2, 2, 4), target_size=32,
                          task_type="t2v")
    vae = _seeded(AutoencoderKLHunyuanVideo15, in_channels=3, out_channels=3, latent_channels=4,
                  block_out_channels=(32, 32, 32, 32, 32), layers_per_block=1, spatial_compression_ratio=16,
                  temporal_compression_ratio=4)
    pipe = _make(name, dict(transformer=transformer, vae=vae, scheduler=_flow_scheduler(shift=5.0),
                            guider=ClassifierFreeGuidance(guidance_scale=6.0)))
    g = torch.Generator().manual_seed(1)
    call = {}
    for neg in ("", "negative_"):
        for suffix, dim in (("", 16), ("_2", 8)):
            call[f"{neg}prompt_embeds{suffix}"] = torch.randn(1, 7, dim, generator=g)
            call[f"{neg}prompt_embeds_mask{suffix}"] = torch.ones(1, 7, dtype=torch.long)
    call.update(height=32, width=32, num_frames=5)
    return pipe, _kwargs(call)


@_builder("ZImageOmniPipeline", family="Z-Image")
def _zimage_omni(name):
    pipe = _make(name, _zimage_components())
    # one list of caption segments per sample
    prompt = {k: [v] for k, v in _zimage_prompt().items()}
    return pipe, _kwargs(dict(_ZIMAGE_CALL, **prompt))


@_builder("HunyuanVideoImageToVideoPipeline", family="HunyuanVideo")
def _hunyuan_video_i2v(name):
    from diffusers import HunyuanVideoTransformer3DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("hunyuan-video").components)
    # latent_concat: noise (4) + image latents (4) + mask (1)
    comps["transformer"] = _seeded(
        HunyuanVideoTransformer3DModel, in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=False,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type="latent_concat")
    pipe = _make(name, comps, text_encoder=None, image_processor=None)
    g = torch.Generator().manual_seed(1)
    call = dict(prompt_embeds=torch.randn(1, 7, 16, generator=g), pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                prompt_attention_mask=torch.ones(1, 7, dtype=torch.long), image=_image(16, 16), height=16, width=16,
                num_frames=5, guidance_scale=1.0)
    return pipe, _kwargs(call)


@_builder("HunyuanVideo15ImageToVideoPipeline", family="HunyuanVideo 1.5")
def _hunyuan_video15_i2v(name):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    pipe15, call_fn = _BUILDERS["HunyuanVideo15Pipeline"]()
    comps = dict(pipe15.components)
    from diffusers import HunyuanVideo15Transformer3DModel

    comps["transformer"] = _seeded(
        HunyuanVideo15Transformer3DModel, in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8,
        rope_axes_dim=(2, 2, 4), target_size=32, task_type="i2v")
    encoder = _seeded(SiglipVisionModel, SiglipVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                                            num_attention_heads=2, image_size=32, patch_size=8))
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    pipe = _make(name, comps, image_encoder=encoder, feature_extractor=processor)
    call = call_fn(1)
    for k in ("num_inference_steps", "output_type", "generator", "height", "width"):
        call.pop(k)
    return pipe, _kwargs(dict(call, image=_image(32, 32)))


def _siglip_vision(hidden: int = 8):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    encoder = _seeded(SiglipVisionModel, SiglipVisionConfig(hidden_size=hidden, intermediate_size=16,
                                                            num_hidden_layers=1, num_attention_heads=2,
                                                            image_size=32, patch_size=8))
    return encoder, SiglipImageProcessor(size={"height": 32, "width": 32})


@_builder("HunyuanVideoFramepackPipeline", family="HunyuanVideo")
def _hunyuan_framepack(name):
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from .testing import tiny_pipeline

    comps = dict(tiny_pipeline("hunyuan-video").components)
    comps["transformer"] = _seeded(
        HunyuanVideoFramepackTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2,
        attention_head_dim=10, num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        has_image_proj=True, image_proj_dim=8, has_clean_x_embedder=True)
    encoder, processor = _siglip_vision()
    pipe = _make(name, comps, image_encoder=encoder, feature_extractor=processor)
    call = dict(_HUNYUAN_CALL, image=_image(32, 32), height=32, width=32, num_frames=5, latent_window_size=2)
    return pipe, _kwargs(call)


@_builder("SanaImageToVideoPipeline", family="Sana")
def _sana_i2v(name):
    from diffusers import SanaVideoTransformer3DModel

    transformer = _seeded(SanaVideoTransformer3DModel, in_channels=16, out_channels=16, num_attention_heads=2,
                          attention_head_dim=12, num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12,
                          cross_attention_dim=24, caption_channels=8, sample_size=8, patch_size=(1, 2, 2),
                          rope_max_seq_len=32)
    vae = _wan_components()["vae"]
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    call = _with_masks(dict(_embeds(8), negative_prompt=None, image=_image(32, 32), height=32, width=32, frames=5,
                            guidance_scale=6.0, use_resolution_binning=False))
    return pipe, _kwargs(call)


@_builder("JoyImageEditPipeline", family="JoyImage")
def _joyimage(name):
    import diffusers

    cls = getattr(diffusers, name.replace("Pipeline", "Transformer3DModel"))
    # The pipeline resizes to its 1024 x 1024 buckets: 4 x 4 patches keep the token count small.
    transformer = _seeded(cls, patch_size=[1, 4, 4], in_channels=16, hidden_size=24,
                          num_attention_heads=2, text_dim=16, mlp_width_ratio=2.0, num_layers=2,
                          rope_dim_list=[4, 4, 4])
    pipe = _make(name, dict(transformer=transformer, vae=_wan_components()["vae"], text_encoder=None,
                            tokenizer=None, processor=None, scheduler=_flow_scheduler()))
    image = {"image": _image(32, 32)} if name == "JoyImageEditPipeline" else {"images": [_image(32, 32)]}
    return pipe, _kwargs(dict(_qwen_prompt(), **image, height=32, width=32, guidance_scale=4.0))


@_builder("EasyAnimatePipeline", "EasyAnimateControlPipeline", "EasyAnimateInpaintPipeline", family="EasyAnimate")
def _easyanimate(name):
    from diffusers import AutoencoderKLMagvit, EasyAnimateTransformer3DModel

    # control: noise (4) + control video latents (4); inpaint: noise (4) + mask (1) + masked video latents (4)
    in_channels = {"EasyAnimatePipeline": 4, "EasyAnimateControlPipeline": 8, "EasyAnimateInpaintPipeline": 9}[name]
    transformer = _seeded(EasyAnimateTransformer3DModel, num_attention_heads=2, attention_head_dim=16,
                          in_channels=in_channels, out_channels=4, patch_size=2, sample_width=16, sample_height=16,
                          num_layers=1, mmdit_layers=1, time_embed_dim=8, text_embed_dim=16)
    vae = _seeded(AutoencoderKLMagvit, in_channels=3, latent_channels=4, out_channels=3, block_out_channels=[8, 8],
                  down_block_types=["SpatialDownBlock3D", "SpatialTemporalDownBlock3D"],
                  up_block_types=["SpatialUpBlock3D", "SpatialTemporalUpBlock3D"], layers_per_block=1,
                  norm_num_groups=4, spatial_group_norm=False)
    vae.register_to_config(cache_mag_vae=False)  # read by the inpaint pipeline, not registered by the VAE
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None, tokenizer=None,
                            scheduler=_flow_scheduler()))
    call = _with_masks(dict(_embeds(16), height=32, width=32, num_frames=5, guidance_scale=5.0))
    if name == "EasyAnimateControlPipeline":
        call["control_video"] = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2))
    if name == "EasyAnimateInpaintPipeline":
        g = torch.Generator().manual_seed(2)
        mask = torch.zeros(1, 1, 5, 32, 32)
        mask[..., 16:] = 1.0
        call.update(video=torch.rand(1, 3, 5, 32, 32, generator=g), mask_video=mask, strength=1.0)
    return pipe, _kwargs(call)


@_builder("StableAudio3Pipeline", "StableAudio3AudioToAudioPipeline", "StableAudio3InpaintPipeline",
          family="Stable Audio 3")
def _stable_audio3(name):
    from diffusers import AutoencoderSAME, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3 import StableAudio3DurationEmbedder

    transformer = _seeded(StableAudio3DiTModel, io_channels=8, patch_size=1, embed_dim=16, depth=2, num_heads=2,
                          cond_token_dim=16, global_cond_dim=16, local_add_cond_dim=9, timestep_features_dim=16,
                          ff_mult=2.0, num_memory_tokens=2, use_differential_attention=False)
    vae = _seeded(AutoencoderSAME, audio_channels=2, patch_size=16, encoder_channels=8, encoder_c_mults=(2,),
                  encoder_strides=(2,), encoder_transformer_depths=(1,), latent_dim=8, use_differential_attention=False,
                  dim_heads=8, ff_mult=2, sampling_rate=1024)
    duration = _seeded(StableAudio3DurationEmbedder, output_dim=16, fourier_dim=16)
    pipe = _make(name, dict(transformer=transformer, vae=vae, duration_embedder=duration, text_encoder=None,
                            tokenizer=None, scheduler=_flow_scheduler()))
    call = dict(_embeds(16, negative=name == "StableAudio3Pipeline"),
                encoder_attention_mask=torch.ones(1, 7, dtype=torch.long), duration=1.0)
    if name == "StableAudio3Pipeline":
        call.update(negative_encoder_attention_mask=torch.ones(1, 7, dtype=torch.long), guidance_scale=3.0)
    else:  # one second of seeded stereo audio at the VAE's 1024 Hz
        call["audio"] = torch.rand(1, 2, 1024, generator=torch.Generator().manual_seed(2)) * 2 - 1
    if name == "StableAudio3AudioToAudioPipeline":
        call["init_noise_level"] = 1.0  # below 1 the pipeline's sigmas are not monotonic (see NOTES)
    if name == "StableAudio3InpaintPipeline":
        call.update(mask_start_seconds=0.5, mask_end_seconds=1.0)
    return pipe, _kwargs(call)


@_builder("LongCatAudioDiTPipeline", family="LongCat-Audio")
def _longcat_audio(name):
    from diffusers import LongCatAudioDiTTransformer, LongCatAudioDiTVae

    from .testing import _t5_encoder, _t5_tokenizer

    transformer = _seeded(LongCatAudioDiTTransformer, dit_dim=16, dit_depth=2, dit_heads=2, dit_text_dim=32,
                          latent_dim=4, ff_mult=2.0)
    vae = _seeded(LongCatAudioDiTVae, in_channels=1, channels=4, c_mults=[1, 2], strides=[2, 2], latent_dim=4,
                  encoder_latent_dim=8, downsampling_ratio=4, sample_rate=64)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=_seeded(_t5_encoder, 32),
                            tokenizer=_t5_tokenizer(), scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(prompt="a red cube", negative_prompt="blurry", audio_duration_s=0.5, guidance_scale=4.0),
                         latent=False)


@_builder("BriaFiboPipeline", "BriaFiboEditPipeline", family="Bria")
def _bria_fibo(name):
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    from .testing import _qwen_tokenizer

    # The pipeline feeds the last two hidden states (2 x 16) and every layer's (16) to the transformer; its empty
    # negative prompt is token 128000, hence the vocabulary.
    text_encoder = _seeded(SmolLM3ForCausalLM, SmolLM3Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                             num_attention_heads=2, num_key_value_heads=2,
                                                             vocab_size=128256))
    # Fibo packs 2 x 2 patches of the 16 latent channels; the edit pipeline packs none.
    transformer = _flux_like("BriaFiboTransformer2DModel", in_channels=16 if "Edit" in name else 64,
                             joint_attention_dim=32,
                             text_encoder_dim=16)
    pipe = _make(name, dict(transformer=transformer, vae=_wan_components()["vae"], text_encoder=text_encoder,
                            tokenizer=_qwen_tokenizer(), scheduler=_flow_scheduler()))
    call = dict(prompt="a red cube", negative_prompt="", height=32, width=32, guidance_scale=5.0,
                max_sequence_length=16)
    if name == "BriaFiboEditPipeline":
        call.update(prompt='{"edit_instruction": "make it red"}', image=_image(32, 32), _auto_resize=False)
    return pipe, _kwargs(call)


@_builder("Kandinsky6TI2VAPipeline", family="Kandinsky 6")
def _kandinsky6(name):
    from diffusers import Kandinsky6Transformer3DModel

    from .testing import tiny_pipeline

    transformer = _seeded(Kandinsky6Transformer3DModel, in_visual_dim=4, out_visual_dim=4, in_text_dim=16,
                          in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2), model_dim=16, ff_dim=32,
                          num_text_blocks=1, num_visual_blocks=2, axes_dims=(2, 2, 4), visual_cond=True,
                          in_audio_dim=4, out_audio_dim=4)
    pipe = _make(name, dict(transformer=transformer, vae=tiny_pipeline("hunyuan-video").vae, text_encoder=None,
                            tokenizer=None, text_encoder_2=None, tokenizer_2=None, scheduler=_flow_scheduler()))
    g = torch.Generator().manual_seed(1)
    call = dict(prompt_embeds=torch.randn(1, 7, 16, generator=g), pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                negative_prompt_embeds=torch.randn(1, 7, 16, generator=g),
                negative_pooled_prompt_embeds=torch.randn(1, 8, generator=g), height=32, width=32, num_frames=9,
                guidance_scale=5.0, sample_audio=False)
    return pipe, _kwargs(call)


@_builder("HunyuanImageRefinerPipeline", family="HunyuanImage")
def _hunyuan_image_refiner(name):
    from diffusers import AutoencoderKLHunyuanImageRefiner, HunyuanImageTransformer2DModel

    # With latent_channels=4 the image latents the pipeline gets from this VAE are 8 wide (measured): the noise
    # latents are in_channels // 2 = 8 wide too, and the transformer sees both (16).
    transformer = _seeded(HunyuanImageTransformer2DModel, in_channels=16, out_channels=8, num_attention_heads=2,
                          attention_head_dim=8, num_layers=1, num_single_layers=1, num_refiner_layers=1,
                          patch_size=(1, 1, 1), guidance_embeds=True, text_embed_dim=16, rope_axes_dim=(2, 2, 4))
    vae = _seeded(AutoencoderKLHunyuanImageRefiner, in_channels=3, out_channels=3, latent_channels=4,
                  block_out_channels=(32, 32, 32), layers_per_block=1, spatial_compression_ratio=4,
                  temporal_compression_ratio=1)
    pipe = _make(name, dict(transformer=transformer, vae=vae, scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_qwen_prompt(), image=_image(32, 32), height=32, width=32))


class _ChatTemplateProcessor:
    """The part of a Qwen3-VL processor Qwen-Image 2.1 reads at construction (its system prompt's token count and
    the image-pad token), over a file-less tiny tokenizer; prompts go in as embeddings."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def apply_chat_template(self, messages, **kwargs):
        return [self.tokenizer.apply_chat_template(messages, **kwargs)]


@_builder("QwenImage21Pipeline", family="Qwen-Image")
def _qwen_image21(name):
    from diffusers import AutoencoderKLQwenImage21, QwenImage21Transformer2DModel

    from .testing import _CHAT_TEMPLATE, _qwen_tokenizer

    tokenizer = _qwen_tokenizer(_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|image_pad|>"]})
    transformer = _seeded(QwenImage21Transformer2DModel, patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                          attention_head_dim=16, num_attention_heads=2, context_in_dim=16, mlp_ratio=2,
                          axes_dims_rope=(4, 6, 6))
    # The pipeline assumes a 16x VAE.
    vae = _seeded(AutoencoderKLQwenImage21, base_dim=4, decoder_base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1, 1],
                  num_res_blocks=1, temperal_downsample=[False, True, True, True], latents_mean=[0.0] * 4,
                  latents_std=[1.0] * 4)
    pipe = _make(name, dict(transformer=transformer, vae=vae, text_encoder=None,
                            processor=_ChatTemplateProcessor(tokenizer), scheduler=_flow_scheduler()))
    return pipe, _kwargs(dict(_qwen_prompt(), height=64, width=64, true_cfg_scale=4.0))


# Builders kept in their own modules (they register themselves with _builder on import).
from . import zoo_denoisers, zoo_ltx2, zoo_media, zoo_vlm  # noqa: E402,F401
