import re
from pathlib import Path

import pytest

from meancache_kernels.cli import main


def test_compare_runs_and_counts_calls(capsys):
    assert main(["compare", "--dim", "8", "--samples", "4"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1).strip(): (int(m.group(2)), int(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^(\w[\w ]*?=?\d*|full)\s+(\d+)\s+(\d+)\s+([0-9.e+-]+)\s", out, re.M)}
    assert rows["full"] == (50, 50, 0.0)
    for b in (10, 17, 25):
        assert rows[f"meancache B={b}"][1] == b  # model calls == budget
        assert rows[f"plain reuse B={b}"][1] == b
        assert rows[f"meancache B={b}"][2] > 0


def _exit_message(argv) -> str:
    """The message main(argv) exits with (a SystemExit whose code is a string: printed, exit status 1)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert isinstance(info.value.code, str), info.value.code
    return info.value.code


def test_compare_rejects_bad_args():
    for flag in ("--dim", "--samples"):
        assert _exit_message(["compare", flag, "0"]) == "meancache compare: --dim and --samples must be >= 1"
    msg = _exit_message(["compare", "--preset", "nope"])
    assert msg.startswith("meancache compare: unknown preset model 'nope'; available: [") and "'qwen-image'" in msg
    assert _exit_message(["compare", "--shift", "0"]) == "meancache compare: shift must be > 0, got 0.0"


def test_cli_reports_unusable_paths_and_devices(tmp_path):
    with pytest.raises(SystemExit, match="meancache solve: profile file .* does not exist"):
        main(["solve", str(tmp_path / "missing.npz"), "--budget", "3"])
    with pytest.raises(SystemExit, match="meancache calibrate: --out .* does not exist"):
        main(["calibrate", "--pipeline", "x", "--prompts", "p.txt", "--steps", "4", "--out",
              str(tmp_path / "no" / "p.npz")])
    with pytest.raises(SystemExit, match="meancache demo: --device 'nonsense' is not a torch device"):
        main(["demo", "--device", "nonsense"])
    from meancache_kernels import Profile

    prof = tmp_path / "p.npz"
    Profile.load(Path(__file__).resolve().parents[2] / "meancache_kernels/assets/tiny_flux_profile.npz").save(prof)
    with pytest.raises(SystemExit, match="meancache solve: .*No such file or directory"):
        main(["solve", str(prof), "--budget", "10", "--json", str(tmp_path / "no" / "s.json")])
