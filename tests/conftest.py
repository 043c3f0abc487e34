import os

# Triton kernels run on CPU through the interpreter in CI. This must happen before anything imports triton;
# export TRITON_INTERPRET=0 to run the kernels on a real GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
