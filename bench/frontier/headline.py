"""The headline tables of bench/RESULTS.md from the frontier's JSON files: each family's best variant per budget (the
MeanCache lines of the plot apart), both models side by side, mean PSNR and worst prompt.

    python -m bench.frontier.headline            # prints the markdown tables for RESULTS.md
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import Row
from .report import _series_selectors

RESULTS = Path(__file__).resolve().parents[1] / "results"
PAIRS = {50: ("frontier.json", "frontier_tiny_flux_seed1.json"), 28: ("frontier_n28.json",
                                                                      "frontier_tiny_flux_seed1_n28.json")}


def _rows(name: str) -> list[Row]:
    data = json.loads((RESULTS / name).read_text())
    return [Row(**r) for r in data["pipelines"][0]["rows"]]


def _cell(rows: list[Row], want, budget: int, key: str) -> tuple[str, Row | None]:
    rs = [r for r in rows if want(r) and r.budget == budget and r.status == "ok"]
    rs = [r for r in rs if not r.marked] or rs
    if not rs:
        return "", None
    r = max(rs, key=lambda r: r.metrics["psnr_mean"])  # the variant with the best mean; its worst prompt beside it
    return f"{r.metrics[key]:.2f}" + ("*" if r.marked else ""), r


def table(num_steps: int) -> str:
    models = [_rows(n) for n in PAIRS[num_steps]]
    budgets = sorted({r.budget for r in models[0]}, reverse=True)
    head = [f"{m} B={b}" for m in ("shipped", "second") for b in budgets]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for label, want in _series_selectors().items():
        cells = []
        for rows in models:
            for b in budgets:
                mean, row = _cell(rows, want, b, "psnr_mean")
                cells.append(f"{mean} / {row.metrics['psnr_min']:.2f}" if row is not None else "")
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    for n in PAIRS:
        print(f"N = {n}, mean / worst prompt PSNR [dB] against the uncached N-step output:\n")
        print(table(n) + "\n")


if __name__ == "__main__":
    main()
