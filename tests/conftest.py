import os

import torch

# Triton kernels compile for the GPU where there is one; only where there is no CUDA device do they run on the CPU
# through the interpreter (CI). This must happen before anything imports triton (importing torch does not).
# torch.cuda.is_available() asks the driver for a device count without creating a CUDA context. An exported
# TRITON_INTERPRET is left as it is.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
