"""Loading pipelines for the CLI and the demo: the shipped tiny FluxPipeline (offline) or any local dir / hub id."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch

from .._assets import SHIPPED_META, SHIPPED_MODEL_DIR

__all__ = ["load_pipeline"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def _quiet_loading():
    """Silence diffusers' and transformers' load-time notices (no accelerate, no torchvision, progress bars)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = (dlog.get_verbosity(), tlog.get_verbosity())
    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level in zip((dlog, tlog), saved):
            lib.set_verbosity(level)
            lib.enable_progress_bar()


def load_pipeline(model: str | os.PathLike | None = None, *, device: str = "cpu", dtype=None):
    """Load a flow-matching diffusers pipeline; returns ``(pipe, call_kwargs)``.

    Args:
        model: None for the tiny FluxPipeline shipped in the package (loaded offline); else a local directory or a
            hub id of any ``DiffusionPipeline`` (FluxPipeline, QwenImagePipeline, ...).
        device: torch device the pipeline is moved to.
        dtype: None (float32 on CPU, bfloat16 on CUDA; the shipped model is always float32), a torch dtype, or one
            of "float32", "bfloat16", "float16".

    ``call_kwargs`` holds the call arguments a model written by ``python/tools/train_tiny_flux.py`` was trained for
    (height, width, max_sequence_length); it is empty for other pipelines.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
        dtype = _DTYPES[dtype]
    elif dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be None, a string or a torch.dtype, got {type(dtype).__name__}")
    if model is None and not (SHIPPED_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the shipped pipeline is missing from {SHIPPED_MODEL_DIR} (a broken install?); reinstall "
            "meancache_kernels or pass a model"
        )
    local = SHIPPED_MODEL_DIR if model is None else Path(model)
    with _quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from diffusers import DiffusionPipeline, FluxPipeline  # inside: importing the pipelines logs notices

        if (local / SHIPPED_META).is_file():  # the shipped model, or another output of train_tiny_flux.py
            pipe = FluxPipeline.from_pretrained(local, local_files_only=True)
            meta = json.loads((local / SHIPPED_META).read_text())
            call_kwargs = {k: meta[k] for k in ("height", "width", "max_sequence_length")}
        else:
            if dtype is None:
                dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
            pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
            call_kwargs = {}
    return pipe.to(device), call_kwargs
