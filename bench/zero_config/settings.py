"""The settings of the zero-config study: the selection and evaluation data, the candidate grid."""

from __future__ import annotations

import math
from pathlib import Path

from meancache_kernels.default_rule import Rule

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SECOND_MODEL = ROOT / "bench" / "tiny_flux_seed1"
# alpha 0, no warp, no warm-up, last step computed, taylorc2: exactly Schedule.uniform(N, B, "taylorc2")
BASELINE = Rule()

# ---------------------------------------------------------------------------------------------------- settings
SEL_FLOWS = [dict(dim=d, components=c, shift=sh, seed=s)
             for (d, c, s) in ((16, 4, 100), (64, 6, 101), (32, 3, 102)) for sh in (1.0, 3.0, 6.0)]
SEL_FLOW_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7, 5)}
SEL_PIPE_BUDGETS = {50: (17, 10, 6), 28: (14, 7)}
EVAL_FLOWS = [  # bench/results/frontier.md's two flows and frontier_flows_heldout.md's six
    dict(dim=64, components=6, shift=3.0, seed=0, file="frontier.md"),
    dict(dim=128, components=4, shift=2.0, seed=1, file="frontier.md"),
    dict(dim=16, components=3, shift=1.0, seed=11, file="frontier_flows_heldout.md"),
    dict(dim=32, components=8, shift=1.5, seed=12, file="frontier_flows_heldout.md"),
    dict(dim=256, components=10, shift=3.0, seed=13, file="frontier_flows_heldout.md"),
    dict(dim=64, components=2, shift=6.0, seed=14, file="frontier_flows_heldout.md"),
    dict(dim=8, components=12, shift=2.0, seed=15, file="frontier_flows_heldout.md"),
    dict(dim=128, components=6, shift=4.5, seed=16, file="frontier_flows_heldout.md"),
]
EVAL_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7, 5), 20: (10, 7, 4)}
EVAL_PIPE_BUDGETS = {50: (25, 17, 10, 6), 28: (14, 10, 7), 20: (10, 7, 4)}
FRONTIER_PIPE_FILES = {("shipped", 50): "frontier.md", ("shipped", 28): "frontier_n28.md",
                       ("seed1", 50): "frontier_tiny_flux_seed1.md", ("seed1", 28): "frontier_tiny_flux_seed1_n28.md"}

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WARPS = (0.8, 1.0, 1.25)
WARMUPS = (1, 2, 3)
LASTS = (True, False)
FULL_SINGLE = ("taylorc2", "taylorc1", "taylor1", "taylor2", "mean2")
FULL_MIXED = (("taylorc2", "taylorc1"), ("taylorc1", "taylorc2"), ("taylorc2", "taylor1"))
TAYLOR_SINGLE = ("taylor1", "taylor2")
TAYLOR_MIXED = (("taylor2", "taylor1"),)
GAPS = (1, 3)

SMOKE = dict(sel_flows=[dict(dim=8, components=3, shift=3.0, seed=100)], sel_flow_budgets={12: (6, 3)},
             sel_pipe_budgets={8: (3,)}, eval_flows=[dict(dim=8, components=12, shift=2.0, seed=15, file=None)],
             eval_budgets={12: (6, 3)}, eval_pipe_budgets={8: (3,)}, alphas=(0.0, 1.0), warps=(1.0,),
             warmups=(1,), lasts=(True,), prompts=2, full_single=("taylorc2", "taylor1"), full_mixed=(),
             taylor_single=("taylor1", "taylor2"), taylor_mixed=())


def spacing(rule: Rule) -> tuple:
    return (rule.alpha, rule.warp, rule.warmup, rule.last)


def with_spacing(sp: tuple, **est) -> Rule:
    return Rule(alpha=sp[0], warp=sp[1], warmup=sp[2], last=sp[3], **est)


def db(rel: float) -> float:
    return -20.0 * math.log10(max(rel, 1e-300))


