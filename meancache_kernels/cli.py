"""The ``meancache`` command (bare ``meancache`` runs ``meancache demo``).

Subcommands:
    demo      MeanCache on the shipped tiny FluxPipeline (or --model) against the uncached output
    run       your own pipeline (local directory or hub id) with MeanCacheConfig(budget=B): stats and images
    preview   the steps MeanCacheConfig(budget=B) runs for N steps on a pipeline's scheduler, without the model
    signature a pipeline's dynamics signature (per-step output ratio and change) beside FLUX.1's published one
    compare   MeanCache vs plain reuse vs full steps on the analytic Gaussian-mixture flow (no model needed)
    calibrate record full-step generations of a diffusers pipeline into a calibration profile
    tune      pick the best schedule for a budget end to end on a few tuning prompts (after calibrate)
    solve     PSSP schedule for a calibration profile and a budget
    show      plot a profile's cost heatmap, a solved path and the frontier
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main"]


# ---------------------------------------------------------------------------------------------------- compare
def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare MeanCache (the one line and the paper's presets), plain reuse and fewer Euler steps on the "
        "analytic Gaussian-mixture flow",
        description="Integrates the exact rectified flow of a random Gaussian mixture with every step computed, with "
        "MeanCache's calibration-free rule (what MeanCacheConfig(budget=B, learn=False) runs), with MeanCache on "
        "the paper's published preset schedules, with plain reuse (K=1) on the preset's computed steps and with B "
        "Euler steps; prints the final error against the full-step result and the number of model calls, at the "
        "budgets the preset has.",
    )
    p.add_argument("--preset", default="qwen-image",
                   help="preset model whose published schedules and budgets are used (default qwen-image)")
    p.add_argument("--dim", type=int, default=64, help="data dimension (default 64)")
    p.add_argument("--samples", type=int, default=64, help="number of trajectories (default 64)")
    p.add_argument("--shift", type=float, default=3.0, help="sigma shift of the flow-matching schedule (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import torch

    from . import presets
    from .cache import sample
    from .default_rule import default_schedule
    from .schedule import Schedule
    from .testing import GaussianMixtureFlow, flow_sigmas

    if args.dim < 1 or args.samples < 1:
        raise SystemExit("meancache compare: --dim and --samples must be >= 1")
    budgets = presets.available().get(presets._canonical(args.preset))
    n = presets.NUM_STEPS
    flow = GaussianMixtureFlow.random(args.dim, components=6, seed=args.seed)
    sigmas = flow_sigmas(n, shift=args.shift)
    z = torch.randn(args.samples, args.dim, generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64)

    calls = [0]

    def model(x, s):
        calls[0] += 1
        return flow(x, s)

    t0 = time.perf_counter()
    ref = sample(model, z, sigmas, Schedule.full(n))
    rows = [("full", n, calls[0], 0.0, time.perf_counter() - t0)]
    for b in sorted(budgets, reverse=True):
        sched = presets.get(args.preset, b)
        for name, s in (
            (f"one line B={b}", default_schedule(sigmas, b)),
            (f"meancache B={b}", sched),
            (f"plain reuse B={b}", Schedule.from_compute_steps(sched.compute_steps, n, span=1)),
            (f"euler {b} steps", None),
        ):
            calls[0] = 0
            t0 = time.perf_counter()
            if s is None:  # plain Euler with B steps on the same shifted sigmas
                out = sample(model, z, flow_sigmas(b, shift=args.shift), Schedule.full(b))
            else:
                out = sample(model, z, sigmas, s)
            err = (out - ref).pow(2).mean().sqrt().item()
            rows.append((name, b, calls[0], err, time.perf_counter() - t0))
    print(f"analytic Gaussian-mixture flow: dim={args.dim}, samples={args.samples}, N={n}, shift={args.shift}; "
          f"one line: the calibration-free rule; meancache: the {args.preset} presets (the paper's method)")
    print(f"{'method':<22}{'B':>4}{'model calls':>13}{'RMSE vs full':>15}{'time [s]':>10}")
    for name, b, c, err, dt in rows:
        print(f"{name:<22}{b:>4}{c:>13}{err:>15.3e}{dt:>10.3f}")
    return 0


# ---------------------------------------------------------------------------------------------------- solve
def _add_solve(sub) -> None:
    p = sub.add_parser(
        "solve",
        help="solve the PSSP schedule for a calibration profile and a budget",
        description="Exact budget-constrained, peak-suppressed shortest path over a calibration profile: prints the "
        "computed steps and the JVP span K of every interval (also in the public MeanCache release's format).",
    )
    p.add_argument("profile", help="profile file written by Profile.save / meancache calibrate")
    p.add_argument("--budget", "-b", type=int, required=True, help="number of computed steps B")
    p.add_argument("--gamma", type=float, default=2.0, help="exponent of the edge costs (default 2)")
    p.add_argument("--max-skip", type=int, default=None, help="longest run of skipped steps (default: as calibrated)")
    p.add_argument("--k-range", type=int, nargs=2, default=None, metavar=("K_LO", "K_HI"), help="allowed spans K")
    p.add_argument("--estimators", nargs="+", default=None, metavar="NAME",
                   help="estimators allowed on skipped steps (default: every one the profile has; 'jvp' alone: the "
                   "paper's PSSP, printed in the public release's format)")
    p.add_argument("--always-compute", type=int, nargs="*", default=[0], metavar="STEP", help="forced steps")
    p.add_argument("--edge-cost", choices=["velocity", "state"], default=None,
                   help="PSSP edge cost (default: 'velocity' for jvp alone, else 'state')")
    p.add_argument("--backend", choices=["auto", "cpp", "python"], default="auto")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the schedule as JSON to OUT")
    p.set_defaults(func=_cmd_solve)


def _official_edge_names(ks: list[int], steps: list[int], n: int) -> list[str]:
    """Edge types as the public release names them: chain (no skipped step), v_diff_mean (K = 1),
    v_diff_mean_jvp1_sK (K >= 2)."""
    ends = steps[1:] + [n]
    names = []
    for a, b, k in zip(steps, ends, ks):
        names.append("chain" if b - a == 1 or k == 0 else "v_diff_mean" if k == 1 else f"v_diff_mean_jvp1_s{k}")
    return names


def _feasible_text(budgets: list[int]) -> str:
    """The feasible budgets, named the same way by `solve` and `show`: a range when contiguous."""
    if not budgets:
        return "no budget is feasible"
    lo, hi = budgets[0], budgets[-1]
    if budgets == list(range(lo, hi + 1)):
        return f"feasible budgets: {lo}..{hi}"
    return f"feasible budgets: {', '.join(map(str, budgets))}"


def _limits_text(prof, max_skip) -> str:
    return f"N={prof.num_steps}, max_skip={prof.max_skip if max_skip is None else max_skip}"


def _cmd_solve(args) -> int:
    from .profile import Profile
    from .solver import solve, solve_frontier

    try:
        prof = Profile.load(args.profile)
        constraints = dict(gamma=args.gamma, always_compute=args.always_compute, max_skip=args.max_skip,
                           k_range=tuple(args.k_range) if args.k_range else None, backend=args.backend,
                           estimators=args.estimators, edge_cost=args.edge_cost)
        feasible = list(solve_frontier(prof, **constraints))  # the same DP as `show`: both name the same range
        if args.budget not in feasible:
            raise SystemExit(f"meancache solve: budget={args.budget} is infeasible for this profile "
                             f"({_limits_text(prof, args.max_skip)}); {_feasible_text(feasible)}")
        sched = solve(prof, args.budget, **constraints)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        raise SystemExit(f"meancache solve: {e}") from None
    if not sched.is_official:
        names = sched.estimator_names()
        steps = sched.compute_steps
        ends = steps[1:] + [sched.num_steps]
        m = sched.meta
        print(f"profile: {args.profile} (N={sched.num_steps}, estimators={list(prof.estimators)}, "
              f"model={prof.meta.get('model', '?')})")
        print(f"budget B={sched.budget}  nominal speedup {sched.speedup:.2f}x  objective {m['objective']:.6g}  "
              f"(gamma={m['gamma']}, solver={m['solver']})")
        print(f"compute steps: {steps}")
        print(f"estimator per interval: {[names[a + 1] + ('' if names[a + 1] != 'jvp' else f'(K={sched.spans[a + 1]})') if b - a > 1 else '-' for a, b in zip(steps, ends)]}")  # noqa: E501
        print("(not expressible in the public release's format: it holds jvp spans only; --estimators jvp for that)")
        if args.json:
            sched.to_json(args.json)
            print(f"schedule written to {args.json}")
        return 0
    steps, ks = sched.to_official()
    n = sched.num_steps
    full_ks = ks + ([0] if len(ks) < len(steps) else [])  # one K per edge, the last one to N included
    m = sched.meta
    print(f"profile: {args.profile} (N={n}, K_max={prof.k_max}, model={prof.meta.get('model', '?')})")
    print(f"budget B={sched.budget}  nominal speedup {sched.speedup:.2f}x  objective {m['objective']:.6g}  "
          f"(gamma={m['gamma']}, solver={m['solver']})")
    print(f"compute steps: {steps}")
    print(f"K per interval: {ks}")
    print(f"public release format: calc_dict = {steps}")
    print(f"                       edge_source = {_official_edge_names(full_ks, steps, n)[: len(ks)]}")
    if args.json:
        sched.to_json(args.json)
        print(f"schedule written to {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------------- show
def _add_show(sub) -> None:
    p = sub.add_parser(
        "show",
        help="plot a profile's cost heatmap, a solved path and the budget frontier",
        description="Draws the edge cost L(i, j) (minimum over the selected estimators, their parameters and the "
        "solver states) as a heatmap with the path solved for --budget, and the frontier (optimal objective and "
        "nominal speedup N/B against B) to a PNG (needs matplotlib).",
    )
    p.add_argument("profile", help="profile file")
    p.add_argument("--budget", "-b", type=int, default=None, help="budget whose solved path is drawn")
    p.add_argument("--gamma", type=float, default=2.0)
    p.add_argument("--max-skip", type=int, default=None)
    p.add_argument("--estimators", nargs="+", default=None, metavar="NAME",
                   help="estimators allowed (default: as meancache solve; 'jvp' alone: the paper's PSSP)")
    p.add_argument("-o", "--output", default="profile.png", help="output image (default profile.png)")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args) -> int:
    import numpy as np

    from .profile import Profile
    from .solver import solve_frontier
    from .solver.pssp import _estimator_names

    try:
        import matplotlib
    except ImportError:
        raise SystemExit("meancache show needs matplotlib: pip install 'meancache_kernels[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        prof = Profile.load(args.profile)
        front = solve_frontier(prof, gamma=args.gamma, max_skip=args.max_skip, estimators=args.estimators)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(f"meancache show: {e}") from None
    n = prof.num_steps
    if args.budget is not None and args.budget not in front:
        raise SystemExit(f"meancache show: budget={args.budget} is infeasible for this profile "
                         f"({_limits_text(prof, args.max_skip)}); {_feasible_text(list(front))}")
    if not front:
        raise SystemExit(f"meancache show: {_feasible_text([])} ({_limits_text(prof, args.max_skip)})")
    names = _estimator_names(prof, args.estimators)
    cost = _edge_cost_map(prof, names)
    with np.errstate(divide="ignore"):
        img = np.where(np.isfinite(cost) & (cost > 0), np.log10(np.where(cost > 0, cost, 1.0)), np.nan)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 5))
    im = ax0.imshow(img, origin="upper", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax0, label="log10 min_K L_K(i, j)" if names == ("jvp",) else
                 "log10 min over estimators and states of L(i, j)")
    ax0.set_xlabel("next computed step j")
    ax0.set_ylabel("computed step i")
    title = f"edge costs (N={n}, {'K_max=' + str(prof.k_max) if names == ('jvp',) else f'{len(names)} estimators'})"
    if args.budget is not None:
        s = front[args.budget]
        nodes = s.compute_steps + [n]
        ax0.plot(nodes[1:], nodes[:-1], "o-", color="red", ms=3, lw=1, label=f"path B={args.budget}")
        ax0.legend(loc="lower left")
        title += f", objective {s.meta['objective']:.3g}"
    ax0.set_title(title)
    bs = sorted(front)
    obj = [front[b].meta["objective"] for b in bs]
    ax1.plot(bs, obj, "o-", ms=3, color="C0")
    ax1.set_yscale("symlog", linthresh=max(min([o for o in obj if o > 0], default=1e-12), 1e-12))
    ax1.set_xlabel("budget B (computed steps)")
    ax1.set_ylabel(f"optimal objective (gamma={args.gamma})", color="C0")
    ax2 = ax1.twinx()
    ax2.plot(bs, [n / b for b in bs], "--", color="C1")
    ax2.set_ylabel("nominal speedup N / B", color="C1")
    if args.budget is not None:
        ax1.axvline(args.budget, color="red", lw=0.8)
    ax1.set_title("frontier")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    plt.close(fig)
    st = prof.meta.get("stability", {})
    print(f"profile: {args.profile} (N={n}, K_max={prof.k_max}, samples={prof.meta.get('num_samples', '?')}, "
          f"rank correlation={st.get('rank_correlation', float('nan')):.3f}, "
          f"median CV={st.get('cv_median', float('nan')):.3f})")
    print(f"{_feasible_text(bs)}; plot written to {args.output}")
    return 0


def _edge_cost_map(prof, names):
    """[N+1, N+1]: the smallest calibrated cost L(i, j) of each edge over the estimators ``names`` (jvp: over K;
    polynomial ones: over every solver state (a, b) too); 0 on chain edges, +inf where none is allowed."""
    import numpy as np

    n = prof.num_steps
    cost = prof.min_cost() if "jvp" in names else np.full((n + 1, n + 1), np.inf)
    poly = [prof.poly_estimators.index(e) for e in names if e != "jvp"]
    if poly:
        best = prof.poly_costs[poly].min(axis=(0, 2, 3))  # [N, D+1]: over estimators and states
        for d in range(2, best.shape[1]):
            i = np.arange(max(n - d + 1, 0))
            cost[i, i + d] = np.minimum(cost[i, i + d], best[i, d])
        cost[np.arange(n), np.arange(1, n + 1)] = 0.0
    return cost


# ---------------------------------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="MeanCache on the shipped tiny FluxPipeline (or your own pipeline) against the uncached output",
        description="Generates a few prompts at N steps without caching and with MeanCache at budgets B (the one "
        "line MeanCacheConfig(budget=B); --schedule pssp: the paper's solver on a calibration profile), prints "
        "transformer calls, wall time, speedup (median of interleaved "
        "full/cached pairs, with its spread and the CPU-time ratio), PSNR, SSIM and max abs difference against the "
        "uncached output, and writes table.txt, results.json, grid.png and psnr_vs_calls.png. --compare adds UniPC "
        "with B steps and TaylorSeer at about B calls. Without --model it runs offline on the small "
        "text-conditioned FluxPipeline shipped with the package.",
    )
    p.add_argument("--model", default=None, help="local directory or hub id of a FluxPipeline / QwenImagePipeline "
                   "(default: the shipped tiny FluxPipeline, offline)")
    p.add_argument("--schedule", choices=("default", "pssp"), default=None,
                   help="MeanCache rows: 'default' (MeanCacheConfig(budget=B), no calibration) or 'pssp' (solve on a "
                   "calibration profile); default: pssp with --profile, else default")
    p.add_argument("--profile", default=None, help="calibration profile file for --schedule pssp (default: the "
                   "shipped one for the shipped model; otherwise the pipeline is calibrated first)")
    p.add_argument("--steps", type=int, default=50, help="number of inference steps N (default 50)")
    p.add_argument("--budget", "-b", action="append", default=None, metavar="B",
                   help="computed steps B; repeat or give a comma list (default 25,17,10)")
    p.add_argument("--prompt", "-p", action="append", default=None, help="prompt; repeat for several")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--gamma", type=float, default=2.0, help="PSSP exponent of --schedule pssp (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="meancache_out", help="output folder (default ./meancache_out)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved timed pairs (full run, then the configuration) per row; the table reports the "
                   "median ratio and its spread (default 3)")
    p.add_argument("--compare", action="store_true",
                   help="also run UniPC with B steps and diffusers' TaylorSeer (lite) at about B transformer calls")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _check_device(command: str, device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise SystemExit(f"meancache {command}: --device {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"meancache {command}: --device {device!r} but CUDA is not available on this machine")


def _cmd_demo(args) -> int:
    from . import demo

    _check_device("demo", args.device)
    budgets = None  # the defaults, named as such when they do not fit --steps
    if args.budget:
        try:
            budgets = [int(b) for item in args.budget for b in item.split(",") if b.strip()]
        except ValueError:
            raise SystemExit(f"meancache demo: --budget must be integers (repeat or comma list), got {args.budget}")
    try:
        demo.run_demo(
            args.model, prompts=args.prompt or demo.DEFAULT_PROMPTS, budgets=budgets, steps=args.steps,
            device=args.device, out=args.out, seed=args.seed, gamma=args.gamma, profile_path=args.profile,
            progress=not args.no_progress, repeats=args.repeats, compare=args.compare, schedule=args.schedule,
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        raise SystemExit(f"meancache demo: {e}") from None
    return 0


# ---------------------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate a diffusers pipeline: full-step generations recorded at scheduler.step -> a Profile",
        description="Loads a diffusers flow-matching pipeline (local directory or hub id), generates every prompt "
        "of --prompts with all --steps steps computed, records the state and the guided velocity at every "
        "scheduler step, and writes the MeanCache edge-cost profile (solve it with `meancache solve`, or tune with "
        "`meancache tune`). Optional: the one line MeanCacheConfig(budget=B) (`meancache run`) needs no profile.",
    )
    _pipeline_args(p)
    p.add_argument("--out", required=True, metavar="PROFILE", help="output profile file")
    p.add_argument("--max-span", type=int, default=6, help="largest JVP span K calibrated (default 6)")
    p.add_argument("--max-skip", type=int, default=None, help="longest run of skipped steps calibrated (default all)")
    p.add_argument("--estimators", nargs="+", default=None, metavar="NAME",
                   help="estimators calibrated (default: every one; 'jvp' alone: the paper's costs only)")
    p.add_argument("--batch-size", type=int, default=1, help="prompts generated per pipeline call (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_calibrate)


def _pipeline_args(p) -> None:
    """Arguments shared by the commands that run a diffusers pipeline (calibrate, tune)."""
    p.add_argument("--pipeline", required=True, metavar="DIR_OR_ID", help="local pipeline directory or hub id")
    p.add_argument("--prompts", required=True, metavar="FILE", help="text file, one prompt per line ('#' comments)")
    p.add_argument("--steps", type=int, required=True, metavar="N", help="number of inference steps N")
    p.add_argument("--height", type=int, default=None, help="image height (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the pipeline's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance_scale passed to the pipeline")
    p.add_argument("--true-cfg-scale", type=float, default=None, help="true_cfg_scale (Qwen-Image, FLUX.1 true CFG)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (for CFG pipelines)")
    _device_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


DTYPES = ("float32", "bfloat16", "float16")


def _device_args(p) -> None:
    """--device / --dtype of the commands that load a pipeline: by default what load_pipeline chooses."""
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda when a GPU is available, else cpu)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="torch dtype (default: bfloat16 on CUDA, float32 on the CPU, as load_pipeline)")


def _resolve_device(args) -> str:
    """``args.device``, or cuda when a GPU is available, else cpu."""
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def _dtype_name(pipe) -> str:
    return str(getattr(pipe, "dtype", "?")).removeprefix("torch.")


def _load_for(cmd: str, args):
    """(pipeline, call kwargs, prompts) for ``meancache CMD``: messages instead of tracebacks."""
    try:
        from .diffusers.loading import load_pipeline
    except ImportError as e:
        raise SystemExit(f"meancache {cmd} needs diffusers: pip install 'meancache_kernels[diffusers]' ({e})")
    _check_device(cmd, _resolve_device(args))
    if args.steps < 2:
        raise SystemExit(f"meancache {cmd}: --steps must be >= 2, got {args.steps}")
    try:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as e:
        raise SystemExit(f"meancache {cmd}: cannot read --prompts: {e}")
    if not prompts:
        raise SystemExit(f"meancache {cmd}: --prompts {args.prompts} holds no prompt")
    try:
        pipe, call = load_pipeline(args.pipeline, dtype=args.dtype, device=args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"meancache {cmd}: cannot load the pipeline {args.pipeline!r}: {e}")
    call.update({k: v for k, v in (("height", args.height), ("width", args.width),
                                   ("guidance_scale", args.guidance_scale), ("true_cfg_scale", args.true_cfg_scale))
                 if v is not None})
    if args.negative_prompt is not None:
        call["negative_prompt"] = args.negative_prompt
    return pipe, call, prompts


def _check_out_dir(cmd: str, path: str) -> None:
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):  # checked before the (long) run, not after it
        raise SystemExit(f"meancache {cmd}: --out {path!r}: the folder {out_dir} does not exist")


def _cmd_calibrate(args) -> int:
    _check_out_dir("calibrate", args.out)
    pipe, call, prompts = _load_for("calibrate", args)
    from .diffusers.calibration import calibrate_pipeline

    t0 = time.perf_counter()
    try:
        profile = calibrate_pipeline(
            pipe, prompts, args.steps, max_span=args.max_span, max_skip=args.max_skip, batch_size=args.batch_size,
            seed=args.seed, progress=not args.no_progress,
            meta={"model": args.pipeline, "pipeline_dtype": _dtype_name(pipe)}, estimators=args.estimators, **call,
        )
    except (ValueError, TypeError) as e:
        raise SystemExit(f"meancache calibrate: {e}")
    profile.save(args.out)
    print(f"calibrated {type(pipe).__name__} on {len(prompts)} prompts x {args.steps} steps in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out} ({profile!r})")
    return 0


# ---------------------------------------------------------------------------------------------------- tune
def _add_tune(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="pick the best schedule for a budget end to end on a few tuning prompts (after calibrate)",
        description="Evaluates candidate schedules (PSSP at several gamma and estimator sets, evenly spaced computed "
        "steps with each estimator) on the --prompts against the pipeline's own full-step outputs and writes the "
        "best one (the untuned default unless a candidate beats it by more than --default-margin-se standard errors) "
        "as JSON (use it with MeanCacheConfig(schedule=Schedule.from_json(...))). Costs N model calls per "
        "prompt for the references plus B per candidate per prompt; the count is printed first. Use tuning prompts "
        "that differ from the ones you evaluate on. Measured (bench/RESULTS.md): never below the one line in the 12 "
        "Euler settings of two small models, 2.8-4.4 dB above it in 4; 4,320-10,000 model calls per budget at N = 50 "
        "with 8 tuning prompts.",
    )
    _pipeline_args(p)
    p.add_argument("--profile", required=True, help="the pipeline's profile (meancache calibrate) at --steps")
    p.add_argument("--budget", "-b", type=int, required=True, help="number of computed steps B")
    p.add_argument("--out", required=True, metavar="SCHEDULE", help="output schedule file (JSON)")
    p.add_argument("--gammas", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="PSSP gammas tried")
    p.add_argument("--seed", type=int, default=10_000, help="noise seed of the first tuning prompt")
    p.add_argument("--reference-steps", type=int, default=None, metavar="M",
                   help="judge candidates against M-step generations (default N, the uncached output; e.g. 4N to "
                   "prefer the schedule closest to the converged solution)")
    p.add_argument("--halving", action="store_true",
                   help="successive halving over the prompts: about a third of the calls, may pick a worse schedule")
    p.add_argument("--metric", choices=["image", "latent"], default="image",
                   help="judge candidates on the decoded images (default) or on the final latents (no decoding)")
    p.add_argument("--default-margin-se", type=float, default=1.0, metavar="T",
                   help="keep the untuned default schedule unless a candidate beats it by more than T standard "
                   "errors of the per-prompt log-error differences (default 1; 0: always the lowest error)")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args) -> int:
    _check_out_dir("tune", args.out)
    from .profile import Profile

    try:
        prof = Profile.load(args.profile)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(f"meancache tune: {e}")
    pipe, call, prompts = _load_for("tune", args)
    from .diffusers.tuning import tune_pipeline

    t0 = time.perf_counter()
    try:
        best = tune_pipeline(pipe, prompts, profile=prof, budget=args.budget, num_inference_steps=args.steps,
                             seed=args.seed, gammas=tuple(args.gammas), reference_steps=args.reference_steps,
                             halving=args.halving, default_margin_se=args.default_margin_se, metric=args.metric,
                             progress=not args.no_progress, **call)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"meancache tune: {e}")
    best.to_json(args.out)
    t = best.meta["tune"]
    err = {c["name"]: c["error"] for c in t["candidates"]}
    print(f"tuned B={args.budget} on {len(prompts)} prompts in {time.perf_counter() - t0:.1f} s "
          f"({t['model_calls']} model calls): chose {t['best']} (relative latent RMSE {err[t['best']]:.3g})")
    d = t.get("default")
    if d and d["kept"] and t["best"] != t["lowest"]:
        print(f"  kept the untuned default: {t['lowest']} was lower by {d['advantage_db']:.2f} dB, within "
              f"{d['margin_se']:g} standard error(s) ({d['se_db']:.2f} dB) over the prompts")
    for c in t["candidates"]:
        print(f"  {c['name']:<32} {c['error'] if c['error'] is not None else float('nan'):.4g}")
    print(f"schedule written to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------------- run
def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run your own pipeline (local directory or hub id) with MeanCacheConfig(budget=B): stats and images",
        description="Loads a diffusers flow-matching pipeline, applies MeanCacheConfig(budget=B) (the one line: the "
        "first generation at given settings computes every step and learns the schedule, later ones make B calls; "
        "--no-learn: the calibration-free rule from the first image; no calibration step either way), generates "
        "each prompt with N steps, prints per prompt the transformer calls made "
        "and saved, the steps computed and the wall time, and saves the images (video pipelines: one PNG per frame) "
        "and results.json into --out. --compare also generates without MeanCache and prints the PSNR against it. "
        "Any other call argument goes through --set KEY=VALUE (VALUE parsed as JSON when it parses, else a "
        "string), e.g. --set num_frames=9 --set guidance_scale=4.5 --set negative_prompt=blurry.",
    )
    p.add_argument("model", metavar="MODEL", help="local pipeline directory or hub id")
    p.add_argument("--budget", "-b", type=int, required=True, metavar="B", help="computed steps per generation")
    p.add_argument("--steps", type=int, default=50, metavar="N", help="num_inference_steps N (default 50)")
    p.add_argument("--prompt", "-p", action="append", default=None, help="prompt; repeat for several")
    p.add_argument("--prompts", default=None, metavar="FILE", help="text file, one prompt per line ('#' comments)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="call_args",
                   help="a pipeline call argument (repeat): num_frames=9, height=1024, guidance_scale=3.5, ...")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first prompt (the k-th: seed + k)")
    p.add_argument("--compare", action="store_true", help="also generate without MeanCache: PSNR against it")
    p.add_argument("--no-learn", action="store_true",
                   help="MeanCacheConfig(budget=B, learn=False): the calibration-free rule from the first image (no "
                   "first generation that computes every step to learn the schedule)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="keep the learnt schedules in DIR: a later run at the same settings reads them back and makes "
                   "B calls from its first image")
    p.add_argument("--out", default="meancache_run", help="output folder (default ./meancache_run)")
    _device_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def parse_set(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> call arguments; a VALUE that parses as JSON is that value (9, 3.5, true, [1, 2],
    null), else the string itself."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--set takes KEY=VALUE with KEY a Python identifier, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _read_prompts(cmd: str, path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as e:
        raise SystemExit(f"meancache {cmd}: cannot read --prompts: {e}")
    if not prompts:
        raise SystemExit(f"meancache {cmd}: --prompts {path} holds no prompt")
    return prompts


_RESERVED = {"prompt": "--prompt / --prompts", "num_inference_steps": "--steps", "generator": "--seed"}


def _check_call_args(pipe, call: dict) -> None:
    """ValueError for a --set key the pipeline's __call__ does not take (when its signature says so)."""
    import inspect

    for key, opt in _RESERVED.items():
        if key in call:
            raise ValueError(f"--set {key}=...: use {opt}")
    params = inspect.signature(pipe.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(call) - set(params))
    if unknown:
        raise ValueError(f"--set {unknown[0]}=...: {type(pipe).__name__} takes no argument {unknown[0]!r}; it takes "
                         f"{sorted(k for k in params if k not in _RESERVED)}")


def _outputs(result):
    """(kind, outputs) of a pipeline call, one output per image or video: "images" ([H, W, C]) or "frames"
    ([frames, H, W, C]) as float arrays in [0, 1], or "tensors" (output_type latent / pt)."""
    import numpy as np
    import torch

    for attr, kind in (("images", "images"), ("frames", "frames")):
        value = getattr(result, attr, None)
        if value is None:
            continue
        if isinstance(value, torch.Tensor):
            return "tensors", list(value)
        if isinstance(value, np.ndarray):
            return kind, [np.asarray(v, np.float64) for v in value]
        items = list(value)
        if items and hasattr(items[0], "save"):  # PIL images
            return kind, [np.asarray(v, np.float64) / 255.0 for v in items]
        return kind, [np.asarray(v, np.float64) for v in items]
    raise ValueError(f"the pipeline returned {type(result).__name__} with neither images nor frames")


def _save_output(out_dir: str, stem: str, kind: str, value) -> list[str]:
    import numpy as np
    import torch

    if kind == "tensors":
        path = os.path.join(out_dir, f"{stem}.pt")
        torch.save(value.detach().cpu(), path)
        return [path]
    from PIL import Image

    def png(arr, path):
        arr = np.clip(np.asarray(arr, np.float64), 0.0, 1.0)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(path)
        return path

    if kind == "frames":  # one video: [frames, H, W, C]
        return [png(f, os.path.join(out_dir, f"{stem}_frame{k:03d}.png")) for k, f in enumerate(value)]
    return [png(value, os.path.join(out_dir, f"{stem}.png"))]


def _cmd_run(args) -> int:
    import json

    import numpy as np

    if args.steps < 1:
        raise SystemExit(f"meancache run: --steps must be >= 1, got {args.steps}")
    if not 1 <= args.budget <= args.steps:
        raise SystemExit(f"meancache run: --budget must be in 1..--steps ({args.steps}), got {args.budget}")
    prompts = list(args.prompt or []) + (_read_prompts("run", args.prompts) if args.prompts else [])
    if not prompts:
        raise SystemExit("meancache run: give --prompt TEXT (repeat for several) or --prompts FILE")
    try:
        extra = parse_set(args.call_args)
    except ValueError as e:
        raise SystemExit(f"meancache run: {e}")
    try:
        import torch

        from .diffusers import MeanCacheConfig, get_mean_cache_stats, mean_cache
        from .diffusers.loading import load_pipeline
    except ImportError as e:
        raise SystemExit(f"meancache run needs diffusers: pip install 'meancache_kernels[diffusers]' ({e})")
    try:
        config = _budget_config(MeanCacheConfig, args.budget, learn=not args.no_learn, cache_dir=args.cache_dir)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"meancache run: {e}")
    _check_device("run", _resolve_device(args))
    try:
        pipe, call = load_pipeline(args.model, dtype=args.dtype, device=args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"meancache run: cannot load the pipeline {args.model!r}: {e}")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=args.no_progress)
    call.update(extra)
    call.setdefault("output_type", "np")
    try:
        _check_call_args(pipe, call)
    except ValueError as e:
        raise SystemExit(f"meancache run: {e}")
    if args.compare and call["output_type"] in ("latent", "pt"):
        raise SystemExit(f"meancache run: --compare needs images or frames, not output_type={call['output_type']!r}")
    os.makedirs(args.out, exist_ok=True)
    cuda = str(args.device).startswith("cuda")

    def generate(k: int, prompt: str):
        gen = torch.Generator("cpu").manual_seed(args.seed + k)
        t0 = time.perf_counter()
        result = pipe(prompt=prompt, num_inference_steps=args.steps, generator=gen, **call)
        if cuda:
            torch.cuda.synchronize()
        return _outputs(result), time.perf_counter() - t0

    print(f"{type(pipe).__name__} from {args.model} on {args.device} ({_dtype_name(pipe)}): N={args.steps}, "
          f"{config.source}, {len(prompts)} prompt(s) -> {args.out}")
    rows = []
    full = {}
    if args.compare:
        for k, prompt in enumerate(prompts):
            (kind, values), dt = generate(k, prompt)
            full[k] = (values, dt)
            for v_i, value in enumerate(values):
                _save_output(args.out, f"{k:03d}_full" + (f"_{v_i}" if len(values) > 1 else ""), kind, value)
    with mean_cache(pipe, config):
        for k, prompt in enumerate(prompts):
            (kind, values), dt = generate(k, prompt)
            stats = get_mean_cache_stats(pipe)
            files = []
            for v_i, value in enumerate(values):
                files += _save_output(args.out, f"{k:03d}" + (f"_{v_i}" if len(values) > 1 else ""), kind, value)
            row = {"prompt": prompt, "seed": args.seed + k, "num_steps": stats.num_steps,
                   "steps_computed": stats.steps_computed, "transformer_calls": stats.transformer_calls,
                   "transformer_calls_saved": stats.transformer_calls_saved, "calls_per_step": stats.calls_per_step,
                   "compute_steps": stats.schedule.compute_steps if stats.schedule is not None else None,
                   "seconds": dt, "files": [os.path.basename(f) for f in files]}
            line = (f"[{k}] {stats.transformer_calls} transformer calls ({stats.transformer_calls_saved} saved, "
                    f"{stats.steps_computed}/{stats.num_steps} steps computed), {dt:.2f} s")
            if getattr(stats, "learning", False):
                line += " (the learning generation: every step computed, the schedule learnt from it)"
            if getattr(config, "learn", False):
                row["learning"] = bool(getattr(stats, "learning", False))
                row["learnt"] = getattr(stats, "learnt", None)
            if args.compare:
                ref, t_full = full[k]
                from .metrics import psnr

                row["psnr_db"] = [None if np.isinf(v) else v for v in (psnr(a, b) for a, b in zip(values, ref))]
                row["seconds_full"] = t_full
                line += (f"; uncached {t_full:.2f} s; PSNR vs uncached "
                         + ", ".join("inf" if v is None else f"{v:.2f} dB" for v in row["psnr_db"]))
            print(line + f": {prompt!r}")
            rows.append(row)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"model": args.model, "pipeline": type(pipe).__name__, "device": args.device,
                   "dtype": _dtype_name(pipe), "config": config.source, "budget": args.budget, "steps": args.steps,
                   "call_args": {k: v for k, v in call.items() if _jsonable(v)}, "runs": rows}, f, indent=1)
    print(f"images and results.json written to {args.out}")
    return 0


def _budget_config(config_cls, budget: int, *, learn: bool, cache_dir=None):
    """``MeanCacheConfig(budget=B)``; ``learn=False`` and ``cache_dir`` passed where the configuration has them (one
    without ``learn`` runs the calibration-free rule already, and has nowhere to keep a schedule)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {}
    if not learn and "learn" in fields:
        kwargs["learn"] = False
    if cache_dir is not None:
        if not learn:
            raise ValueError("--cache-dir keeps learnt schedules: it does not go with --no-learn")
        if "cache_dir" not in fields:
            raise ValueError("--cache-dir: this MeanCacheConfig does not learn schedules")
        kwargs["cache_dir"] = cache_dir
    return config_cls(budget=budget, **kwargs)


def _jsonable(v) -> bool:
    import json

    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------------- preview
def _add_preview(sub) -> None:
    p = sub.add_parser(
        "preview",
        help="the steps MeanCacheConfig(budget=B) runs for N steps on a pipeline's scheduler, without the model",
        description="Loads only the scheduler of a pipeline (local directory or hub id; default: the shipped tiny "
        "FluxPipeline) and prints which of the N steps run the transformer and each skipped step's estimator, for "
        "MeanCacheConfig(budget=B) or a schedule file (meancache tune) or a calibration profile. No model is loaded "
        "or run.",
    )
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="local pipeline directory or hub id (default: the shipped tiny FluxPipeline)")
    p.add_argument("--budget", "-b", type=int, default=None, metavar="B", help="computed steps per generation")
    p.add_argument("--steps", type=int, default=50, metavar="N", help="num_inference_steps N (default 50)")
    p.add_argument("--schedule", default=None, metavar="FILE", help="a schedule JSON (meancache tune --out)")
    p.add_argument("--profile", default=None, metavar="FILE", help="a calibration profile, solved for --budget")
    p.add_argument("--no-learn", action="store_true", help="MeanCacheConfig(budget=B, learn=False)")
    shift = p.add_mutually_exclusive_group()
    shift.add_argument("--image-seq-len", type=int, default=None, metavar="L",
                       help="latent sequence length, for schedulers that shift by resolution (FLUX.1 / Qwen-Image "
                       "at 1024x1024: 4096)")
    shift.add_argument("--mu", type=float, default=None, help="the resolution shift mu itself, instead")
    p.set_defaults(func=_cmd_preview)


def _load_scheduler(model):
    """The scheduler of a pipeline directory or hub id, from its model_index.json and scheduler config only."""
    import diffusers

    from ._assets import SHIPPED_MODEL_DIR

    source = SHIPPED_MODEL_DIR if model is None else model
    index = diffusers.DiffusionPipeline.load_config(source)
    entry = index.get("scheduler")
    if not entry or not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"{source}: model_index.json names no scheduler")
    cls = getattr(diffusers, entry[1], None)
    if cls is None:
        raise ValueError(f"{source}: the scheduler class {entry[1]!r} is not in diffusers")
    return cls.from_pretrained(source, subfolder="scheduler")


def _shipped_seq_len() -> int:
    """The latent sequence length of the shipped tiny FluxPipeline at the size it was trained for (2x2 packing)."""
    import json

    from ._assets import SHIPPED_META, SHIPPED_MODEL_DIR

    meta = json.loads((SHIPPED_MODEL_DIR / SHIPPED_META).read_text())
    vae = json.loads((SHIPPED_MODEL_DIR / "vae" / "config.json").read_text())
    factor = 2 * 2 ** (len(vae["block_out_channels"]) - 1)
    return (meta["height"] // factor) * (meta["width"] // factor)


def _cmd_preview(args) -> int:
    try:
        from .diffusers import MeanCacheConfig, preview_schedule
    except ImportError as e:
        raise SystemExit(f"meancache preview needs diffusers: pip install 'meancache_kernels[diffusers]' ({e})")
    from .profile import Profile
    from .schedule import Schedule

    if args.schedule is not None and args.profile is not None:
        raise SystemExit("meancache preview: give --schedule or --profile, not both")
    try:
        if args.schedule is not None:
            if args.budget is not None:
                raise SystemExit("meancache preview: --budget is not used with --schedule (it carries its own)")
            config = MeanCacheConfig(schedule=Schedule.from_json(args.schedule))
        elif args.budget is None:
            raise SystemExit("meancache preview: give --budget B (with or without --profile) or --schedule FILE")
        elif args.profile is not None:
            config = MeanCacheConfig(profile=Profile.load(args.profile), budget=args.budget)
        else:
            config = _budget_config(MeanCacheConfig, args.budget, learn=not args.no_learn)
        scheduler = _load_scheduler(args.model)
        seq_len = args.image_seq_len
        if scheduler.config.get("use_dynamic_shifting", False) and seq_len is None and args.mu is None:
            if args.model is not None:
                raise SystemExit(
                    f"meancache preview: {type(scheduler).__name__} shifts its sigmas by resolution: give "
                    "--image-seq-len L (FLUX.1 / Qwen-Image at 1024x1024: 4096) or --mu M")
            seq_len = _shipped_seq_len()
        preview = preview_schedule(scheduler, config, args.steps, mu=args.mu, image_seq_len=seq_len)
    except (ValueError, TypeError, OSError) as e:
        raise SystemExit(f"meancache preview: {e}") from None
    print(preview)
    return 0


def _add_signature(sub) -> None:
    p = sub.add_parser(
        "signature",
        help="a pipeline's dynamics signature beside FLUX.1's published one (which regime it is in)",
        description="Runs one full-step generation of a pipeline (local directory or hub id; default: the shipped "
        "tiny FluxPipeline) and prints the per-step magnitude ratio and relative change of its (guided) transformer "
        "output beside FLUX.1's published magnitude ratios (MagCache's calibration, N = 28), with the early-phase "
        "summaries. --steps 28 reads like for like. N transformer steps; MeanCache is not applied.",
    )
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="local pipeline directory or hub id (default: the shipped tiny FluxPipeline)")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a prompt (repeat for several; default: one prompt of the shipped model's kind)")
    p.add_argument("--steps", type=int, default=28, metavar="N", help="num_inference_steps N (default 28)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first prompt (then +1 each)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="call_args",
                   help="any other call argument (VALUE parsed as JSON when it parses), e.g. --set num_frames=9")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the signature as JSON")
    _device_args(p)
    p.set_defaults(func=_cmd_signature)


def _cmd_signature(args) -> int:
    try:
        from .diffusers.dynamics import pipeline_signature
        from .diffusers.loading import load_pipeline
    except ImportError as e:
        raise SystemExit(f"meancache signature needs diffusers: pip install 'meancache_kernels[diffusers]' ({e})")
    import json

    import torch

    if args.steps < 2:
        raise SystemExit(f"meancache signature: --steps must be >= 2, got {args.steps}")
    _check_device("signature", _resolve_device(args))
    try:
        extra = parse_set(args.call_args)
        pipe, call = load_pipeline(args.model, dtype=args.dtype, device=args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"meancache signature: {e}")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    prompts = args.prompt or ["a red circle at the top left"]
    gens = [torch.Generator(device=args.device).manual_seed(args.seed + k) for k in range(len(prompts))]
    call.update(extra)
    name = "shipped tiny FluxPipeline" if args.model is None else str(args.model)
    sig = pipeline_signature(pipe, name=name, prompt=prompts, num_inference_steps=args.steps, generator=gens, **call)
    print(sig.format())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": name, "steps": args.steps, "prompts": prompts, "ratios": list(sig.ratios),
                       "changes": list(sig.changes), "early5": sig.early5, "prod10": sig.prod10,
                       "regime": sig.regime}, f, indent=1)
    return 0


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meancache",
        description="MeanCache for flow-matching generation. Bare `meancache` (no command, or options only) runs "
        "`meancache demo`: the shipped tiny FluxPipeline, offline, with and without MeanCacheConfig(budget=B). "
        "Your own model: `meancache run MODEL --budget B --prompt TEXT --steps N --set KEY=VALUE`.",
        epilog="`meancache COMMAND --help` gives each command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_run(sub)
    _add_preview(sub)
    _add_signature(sub)
    _add_compare(sub)
    _add_calibrate(sub)
    _add_tune(sub)
    _add_solve(sub)
    _add_show(sub)
    return parser


DEFAULT_COMMAND = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = [DEFAULT_COMMAND, *argv]
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:  # bad input or unusable files: a message, not a traceback
        raise SystemExit(f"meancache {args.command}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
