import re

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


def test_compare_rejects_bad_args():
    with pytest.raises(SystemExit):
        main(["compare", "--dim", "0"])
    with pytest.raises(ValueError, match="unknown preset model"):
        main(["compare", "--preset", "nope"])
