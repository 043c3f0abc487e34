"""python -m bench.zero_config: selection, held-out evaluation, report (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from meancache_kernels.default_rule import DEFAULT_RULE

from .measure import evaluate, select
from .report import json_safe, report
from .settings import (
    ALPHAS,
    EVAL_BUDGETS,
    EVAL_FLOWS,
    EVAL_PIPE_BUDGETS,
    FULL_MIXED,
    FULL_SINGLE,
    LASTS,
    RESULTS,
    ROOT,
    SEL_FLOW_BUDGETS,
    SEL_FLOWS,
    SEL_PIPE_BUDGETS,
    SMOKE,
    TAYLOR_MIXED,
    TAYLOR_SINGLE,
    WARMUPS,
    WARPS,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run of every stage (< 1 min), not written to bench/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench/results; smoke: a temp one)")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite zero_config.md from the zero_config.json in the output folder")
    args = ap.parse_args(argv)
    if args.render_only:
        out = args.out or RESULTS
        data = json.loads((out / "zero_config.json").read_text())
        data["meta"]["rendered"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (out / "zero_config.md").write_text(report(data))
        print(f"wrote {out / 'zero_config.md'} from {out / 'zero_config.json'}")
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.smoke:
        cfg = dict(SMOKE, smoke=True)
    else:
        cfg = dict(sel_flows=SEL_FLOWS, sel_flow_budgets=SEL_FLOW_BUDGETS, sel_pipe_budgets=SEL_PIPE_BUDGETS,
                   eval_flows=EVAL_FLOWS, eval_budgets=EVAL_BUDGETS, eval_pipe_budgets=EVAL_PIPE_BUDGETS,
                   alphas=ALPHAS, warps=WARPS, warmups=WARMUPS, lasts=LASTS, prompts=8, full_single=FULL_SINGLE,
                   full_mixed=FULL_MIXED, taylor_single=TAYLOR_SINGLE, taylor_mixed=TAYLOR_MIXED)
    out = args.out or (Path(tempfile.mkdtemp(prefix="zero_config_smoke_")) if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    sel = select(cfg, log)
    ev = evaluate(cfg, sel["selected"], log)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    meta = dict(machine=f"{platform.machine()}-{torch.get_num_threads()}t", torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git=git,
                command="python -m bench.zero_config" + (" --smoke" if args.smoke else ""),
                seconds=time.perf_counter() - t0, default_rule_at_run=DEFAULT_RULE.name,
                default_equals_selected=DEFAULT_RULE == sel["selected"])
    data = dict(meta=meta, default_rule=DEFAULT_RULE, selected_rule=sel["selected"],
                selected_equals_default=sel["selected"] == DEFAULT_RULE,
                selection=dict(flows=sel["flows"], pipes=sel["pipes"], prompts=sel["prompts"],
                               flow_budgets=sel["flow_budgets"], pipe_budgets=sel["pipe_budgets"],
                               stage1=sel["stage1"], stage1b=sel["stage1b"], stage2=sel["stage2"],
                               best_full=sel["best_full"], best_taylor=sel["best_taylor"]),
                evaluation=ev)
    data = json_safe(data)
    (out / "zero_config.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    (out / "zero_config.md").write_text(report(json.loads(json.dumps(data))))
    log(f"wrote {out / 'zero_config.md'} and zero_config.json; selected {sel['selected']}; DEFAULT_RULE at run "
        f"time {DEFAULT_RULE.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
