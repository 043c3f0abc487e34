"""The README's code without diffusers runs as written (so the documented API cannot drift from the library)."""

import contextlib
import io
import re
from pathlib import Path


def test_readme_velocity_function_example_runs():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "GaussianMixtureFlow.random(dim=64)" in b]
    assert len(blocks) == 1
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(blocks[0], "README.md", "exec"), scope)
    assert scope["x_fast"].shape == scope["x_full"].shape == (8, 64)
    assert scope["solved"].budget == scope["paper"].budget == scope["tuned"].budget == 10
    assert scope["paper"].is_official and len(scope["steps"]) == 10
    assert scope["tuned"].meta["tune"]["candidates"]
