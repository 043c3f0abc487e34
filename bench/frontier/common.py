"""What every part of the frontier shares: its constants, the three disjoint prompt sets and the Row record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import _tools

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"  # where the full runs write NAME.md / .json / .png

N = 50
BUDGETS = (25, 17, 10)
SMOKE_N = 8
SMOKE_BUDGETS = (5, 3)
FAMILIES = ("Euler", "UniPC", "DPM", "Heun", "Adams", "FirstBlockCache", "MagCache", "TaylorSeer", "MeanCache")
FLOWS = (  # the two analytic flows of the default run
    dict(dim=64, components=6, shift=3.0, seed=0),
    dict(dim=128, components=4, shift=2.0, seed=1),
)
SMOKE_FLOWS = (dict(dim=8, components=3, shift=3.0, seed=0),)
TOLERANCE = 0.10  # a row whose counted cost misses the budget by more than this fraction is marked
CAL_SEED, TUNE_SEED = 100, 200  # noise seeds of the calibration and tuning prompts (evaluation: 0..)


# ---------------------------------------------------------------------------------------------------- prompts
def eval_prompts(n: int) -> list[str]:
    """The evaluation prompts: the same since the first quality table (issue 6, bench/results/HISTORY.md), so earlier
    tables stay comparable."""
    data = _tools.tiny_flux_data()

    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    return [data.prompt_for(colours[(k + 2) % 6], data.SHAPES[(k + 1) % 3], positions[k % 5],
                            (None, "large", "small")[k % 3]) for k in range(n)]


def tuning_prompts(n: int) -> list[str]:
    """Prompts for threshold bisection and MeanCache tuning: disjoint from the evaluation and calibration prompts."""
    data = _tools.tiny_flux_data()

    colours, positions = list(data.COLOURS), list(data.POSITIONS)
    taken = set(eval_prompts(64)) | set(_tools.calibration_prompts())
    out = []
    specs = data.all_prompt_specs()
    for k in range(len(specs)):
        p = data.prompt_for(*specs[k * 37 % len(specs)])  # 37 is coprime with the 270 specs: every one, mixed
        if p not in taken:
            out.append(p)
        if len(out) == n:
            return out
    raise RuntimeError(f"fewer than {n} tuning prompts disjoint from the others ({colours}, {positions})")


def calibration_prompts(n: int | None = None) -> list[str]:
    prompts = _tools.calibration_prompts()
    return list(prompts[:n] if n else prompts)


# ---------------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    """One method at one budget. Pipeline rows carry image metrics, flow rows relative RMSE."""

    family: str
    method: str
    budget: int
    setting: str = ""
    status: str = "ok"  # "ok" or "n/a: <reason>"
    equiv: float | None = None
    forwards: int | None = None
    wall: float | None = None
    marked: bool = False
    metrics: dict = field(default_factory=dict)
