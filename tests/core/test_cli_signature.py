"""``meancache signature``: a pipeline's dynamics signature beside FLUX.1's published one."""

import json

import pytest

from meancache_kernels import cli
from meancache_kernels.dynamics import FLUX1


def test_signature_of_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "sig.json"
    assert cli.main(["signature", "--steps", "28", "--prompt", "a blue square", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FLUX.1-dev" in text and f"{FLUX1.early5:.3f}" in text and "regime:" in text
    sig = json.loads(out.read_text())
    assert sig["steps"] == 28 and len(sig["ratios"]) == len(sig["changes"]) == 28
    assert sig["ratios"][0] == 1.0 and sig["changes"][0] == 0.0 and all(r > 0 for r in sig["ratios"])
    # the shipped tiny model has no early phase (measured early5 0.03 at N = 28)
    assert sig["regime"] == "smooth" and sig["early5"] < 0.2


def test_signature_bad_steps():
    with pytest.raises(SystemExit, match="--steps must be >= 2, got 1"):
        cli.main(["signature", "--steps", "1"])
