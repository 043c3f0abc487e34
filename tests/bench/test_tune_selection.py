"""bench.studies.tune_selection: its selection rules pick what they say on hand-made errors, its report measures
regret against the evaluation-data oracle, and --flow specs given to ``python -m bench.frontier`` are checked."""

import importlib
import json
import math

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

MODULES = {"tune_selection": "bench.studies.tune_selection", "frontier": "bench.frontier.cli"}


def load(name):
    return importlib.import_module(MODULES[name])  # the repository root is on sys.path (pyproject: pythonpath)


def test_rules_pick_what_they_say():
    ts = load("tune_selection")
    c = {
        # geometric mean 1e-2 with one bad sample; arithmetic mean high
        "spiky": dict(tune=[1e-3, 1e-3, 1e-3, 1.0], eval=[1e-3] * 4),
        # flat 2e-2: worse geometric mean, far better arithmetic mean and worst sample
        "flat": dict(tune=[2e-2] * 4, eval=[2e-2] * 4),
    }
    assert math.isclose(math.exp(ts._logs(c["spiky"]["tune"]).mean()), 10 ** -2.25)
    assert ts.rule_geo(c) == "spiky"
    assert ts.rule_mean(c) == "flat" and ts.rule_rms(c) == "flat"
    assert ts.rule_risk(1.0)(c) == "flat"  # std of the logs penalises the spike
    assert ts.rule_risk(0.0)(c) == "spiky"
    # within one standard error of the geo pick (the paired log-ratios vary a lot): the lower worst sample wins
    assert ts.rule_1se_worst(c) == "flat"
    c["flat"]["tune"] = [0.5] * 4  # now clearly worse than the geo pick: not tied
    assert ts.rule_1se_worst(c) == "spiky"


def test_report_regret_is_against_the_evaluation_oracle():
    ts = load("tune_selection")
    settings = [dict(kind="pipeline", setting="toy", candidates={
        "a": dict(tune=[1e-3] * 8, eval=[1e-2] * 8),  # best on the tuning data, 20 dB worse on the evaluation data
        "b": dict(tune=[1e-2] * 8, eval=[1e-3] * 8),
    }), dict(kind="flow", setting="toy flow", candidates={
        "a": dict(tune=[1e-3] * 32, eval=[1e-3] * 4),
        "b": dict(tune=[1e-2] * 32, eval=[1e-2] * 4),
    })]
    text = ts.report(dict(command="c", machine="m", date="d", seconds=1.0, settings=settings))
    row = next(line for line in text.splitlines() if line.startswith("| geo |"))
    cells = [x.strip() for x in row.split("|")[1:-1]]
    assert cells[1] == "20.00" and cells[2] == "20.00"  # pipelines: mean and max regret, dB
    assert cells[3] == "0.00" and cells[4] == "0.00"  # flows: the tuning pick is the oracle
    assert "| toy | 2 | 20.00 / +0.00 |" in text
    json.dumps(settings)  # what collect() writes is JSON


def test_frontier_flow_spec_is_checked():
    fr = load("frontier")
    assert fr._flow_spec("32,8,1.5,7") == dict(dim=32, components=8, shift=1.5, seed=7)
    import argparse

    for bad in ("32,8,1.5", "a,8,1.5,7", "0,8,1.5,7", "32,8,-1,7", "32,8,1.5,-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="DIM,COMPONENTS,SHIFT,SEED"):
            fr._flow_spec(bad)


def test_keep_default_rule_is_the_librarys_choice():
    ts = load("tune_selection")
    c = {"default": dict(tune=[1.0, 1.0, 1.0, 1.0], eval=[1e-3] * 4),
         "noisy": dict(tune=[0.5, 2.0, 0.5, 1.5], eval=[1e-2] * 4)}
    assert ts.rule_geo(c) == "noisy"
    assert ts.RULES["keep default 1 s.e. (library)"](c, "default") == "default"
    assert ts.RULES["keep default 1 s.e. (library)"](c, None) == "noisy"  # no default recorded: the geo pick
    assert ts.RULES["untuned default"](c, "default") == "default"
