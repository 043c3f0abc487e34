"""Where the Triton tests run: CUDA when present (and not interpreting), else the CPU interpreter."""

import os

import pytest
import torch

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the environment
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"
triton_ok = pytest.mark.skipif(
    not HAS_TRITON or (DEVICE == "cpu" and not INTERPRET), reason="needs triton (and CUDA or TRITON_INTERPRET=1)"
)
