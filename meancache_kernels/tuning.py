"""End-to-end tuning: pick the schedule whose samples come closest to the full-step outputs (docs/design.md 2b).

The PSSP objective is local (an edge's cost is measured from the true state), so the schedule it finds is not always
the one with the smallest final error. :func:`tune` evaluates a set of candidate schedules (PSSP at several gamma and
estimator sets, evenly spaced computed steps with each estimator) on a few tuning samples against their full-step
outputs and returns the best one, with every candidate's measured error in ``schedule.meta["tune"]``.

Cost: N model calls per tuning sample for the references, plus B per candidate per sample; printed before it starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .checks import InfeasibleError, as_sigmas, check_budget, check_ops_backend, check_solver_backend
from .metrics import geometric_mean as _geometric_mean
from .metrics import per_sample_errors, sample_error
from .profile import Profile
from .schedule import Schedule
from .solver import solve

__all__ = ["DEFAULT_GAMMAS", "DEFAULT_ESTIMATOR_SETS", "DEFAULT_EDGE_COSTS", "DEFAULT_WARPS", "DEFAULT_MARGIN_SE",
           "candidate_schedules", "choose", "default_candidate", "per_sample_errors", "prepare_candidates",
           "run_tuning", "sample_error", "select", "tune"]

DEFAULT_GAMMAS = (1.0, 2.0, 3.0)
# None: solve()'s default (the polynomial estimators); the paper's rule alone; taylor and taylorc alone
DEFAULT_ESTIMATOR_SETS = (None, ("jvp",), ("taylor1",), ("taylor2",), ("taylorc1",), ("taylorc2",))
DEFAULT_EDGE_COSTS = ("state", "velocity")
# evenly spaced steps, warped towards the start (warp > 1) or the end (< 1), with these estimators
DEFAULT_WARPS = (0.85, 1.15, 1.3, 1.5)
WARPED_ESTIMATORS = ("taylor1", "taylorc1", "taylorc2")
# tune keeps the calibration-free default rule unless the lowest-error candidate beats it by more than this many
# standard errors (one: the usual convention; measured in bench/RESULTS.md, "Tuning: how well the choice holds")
DEFAULT_MARGIN_SE = 1.0
# the name of the calibration-free default among the candidates (the baseline the choice keeps unless beaten)
DEFAULT_RULE_NAME = "default rule"


def candidate_schedules(profile, budget: int, *, gammas: Sequence[float] = DEFAULT_GAMMAS,
                        estimator_sets: Sequence = DEFAULT_ESTIMATOR_SETS,
                        edge_costs: Sequence[str] = DEFAULT_EDGE_COSTS, uniform: bool = True,
                        warps: Sequence[float] = DEFAULT_WARPS, solver_backend: str = "auto",
                        allowed: Sequence[str] | None = None, sampler: str = "euler") -> dict[str, Schedule]:
    """The candidates :func:`tune` evaluates, by name, duplicates removed (the first name of a schedule is kept).

    ``pssp[<estimators>,<edge cost>]@g<gamma>``: :func:`meancache_kernels.solve` with those estimators
    (``default`` = solve's default) and edge cost at that gamma, for every estimator set the profile has costs for;
    ``uniform[<estimator>]``: :meth:`Schedule.uniform` with each estimator of the profile (jvp with K = 1, 2);
    ``uniform[<estimator>]^<warp>``: the same spacing warped (``Schedule.uniform(warp=)``) for the taylor and
    taylorc estimators the profile has. ``solver_backend``: the PSSP solver's (``"auto"``, ``"cpp"``, ``"python"``).
    Only infeasibility drops a PSSP candidate; any other error of :func:`meancache_kernels.solve` propagates.
    ``allowed``: the estimator names the sampler can use (e.g. ``("taylor1", "taylor2")`` under a multistep diffusers
    scheduler); candidates using others are left out, and the default rule is restricted to them. ``sampler``: what
    takes the estimate (``"euler"`` or ``"multistep"``), which picks the default rule (as ``MeanCacheConfig(budget=B)``
    does under that scheduler).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    budget = check_budget(budget, profile.num_steps)
    check_solver_backend(solver_backend, "solver_backend")
    if not gammas and not uniform:
        raise ValueError("no candidates: give at least one gamma or uniform=True")
    have = set(profile.estimators)
    out: dict[str, Schedule] = {}
    seen: set[Schedule] = set()

    def add(name: str, schedule: Schedule) -> None:
        if schedule not in seen:
            seen.add(schedule)
            out[name] = schedule

    from .default_rule import default_schedule

    # the calibration-free default first: on ties it wins, and choose() keeps it unless clearly beaten
    add(DEFAULT_RULE_NAME, default_schedule(profile.sigmas, budget, estimators=allowed, sampler=sampler))
    for est in estimator_sets:
        if est is not None and not set(est) <= have:
            continue
        label = "default" if est is None else "+".join(est)
        for cost in edge_costs:
            for g in gammas:
                try:
                    s = solve(profile, budget, gamma=float(g), estimators=est, edge_cost=cost, backend=solver_backend)
                except InfeasibleError:  # for this estimator set (e.g. edges longer than it was calibrated for)
                    continue
                add(f"pssp[{label},{cost}]@g{g:g}", s)
    if uniform:
        n = profile.num_steps
        for name in profile.estimators:
            if name == "jvp":
                for k in (1, 2):
                    add(f"uniform[jvp K={k}]", Schedule.uniform(n, budget, "jvp", span=k))
            else:
                add(f"uniform[{name}]", Schedule.uniform(n, budget, name))
        for w in warps:
            for name in WARPED_ESTIMATORS:
                if name in profile.estimators:
                    add(f"uniform[{name}]^{w:g}", Schedule.uniform(n, budget, name, warp=float(w)))
    if allowed is not None:
        ok = set(allowed) | {""}
        out = {name: c for name, c in out.items() if set(c.estimator_names()) <= ok}
    if not out:
        raise ValueError(f"no feasible candidate schedule for budget={budget} with gammas={list(gammas)}")
    return out


def select(names: Sequence[str], num_samples: int, run: Callable[[str, list[int]], list[float]], *,
           halving: bool = False, progress: bool = True) -> list[dict]:
    """Evaluate candidates with ``run(name, sample_indices) -> per-sample errors``; ``[{"name", "error",
    "samples", "errors"}]`` in the order of ``names`` (error: :func:`sample_error`'s geometric mean, None when
    non-finite; errors: the per-sample errors, in sample order).

    ``halving=False``: every candidate on every sample. ``halving=True``: successive halving, every candidate on the
    first sample, the better half on the first 2, then 4, ... up to all of them (ties: the earlier candidate), about
    ``C + C/2 + C/4 * 2 + ...`` sample evaluations instead of ``C * S``; a candidate that is poor on the first samples
    is not evaluated further, so it may miss one that is only good on the later ones.
    """
    from tqdm.auto import tqdm

    errs: dict[str, list[float]] = {name: [] for name in names}
    alive, seen, size = list(names), 0, (1 if halving else num_samples)
    bar = tqdm(total=len(alive), desc="meancache tune", unit="candidate", disable=not progress)
    while True:
        new = list(range(seen, size))
        for name in alive:
            errs[name] += run(name, new)
            bar.update(1)
        seen = size
        if seen >= num_samples or len(alive) <= 1:
            break
        order = sorted(range(len(alive)), key=lambda k: (_geometric_mean(errs[alive[k]]), k))
        alive = [alive[k] for k in order[: max(1, math.ceil(len(alive) / 2))]]
        size = min(2 * size, num_samples)
        bar.total += len(alive)
    bar.close()
    out = []
    for name in names:
        g = _geometric_mean(errs[name])
        out.append({"name": name, "error": g if math.isfinite(g) else None, "samples": len(errs[name]),
                    "errors": [float(e) for e in errs[name]]})
    return out


def prepare_candidates(profile, budget: int, candidates: dict[str, Schedule] | None, *,
                       gammas: Sequence[float] = DEFAULT_GAMMAS, margin_se: float = DEFAULT_MARGIN_SE,
                       solver_backend: str = "auto", allowed: Sequence[str] | None = None,
                       sampler: str = "euler") -> tuple[dict[str, Schedule], str | None]:
    """The candidates to evaluate and the name of the untuned default among them (None when ``candidates`` is
    given): the validation and candidate set shared by :func:`tune` and ``tune_pipeline``."""
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a meancache_kernels.Profile, got {type(profile).__name__}")
    budget = check_budget(budget, profile.num_steps)
    _check_margin(margin_se)
    if candidates is None:
        candidates = candidate_schedules(profile, budget, gammas=gammas, solver_backend=solver_backend,
                                         allowed=allowed, sampler=sampler)
        return candidates, default_candidate(candidates, profile, budget, solver_backend=solver_backend,
                                             allowed=allowed, sampler=sampler)
    if not isinstance(candidates, dict) or not candidates:
        raise TypeError("candidates must be a non-empty dict {name: Schedule}")
    for name, s in candidates.items():
        if not isinstance(s, Schedule) or s.num_steps != profile.num_steps:
            raise ValueError(f"candidates[{name!r}] must be a Schedule of N={profile.num_steps} steps")
    return candidates, None


def run_tuning(candidates: dict[str, Schedule], baseline: str | None, num_samples: int,
               run: Callable[[str, list[int]], list[float]], model_calls: Callable[[], int], budget: int, *,
               halving: bool = False, margin_se: float = DEFAULT_MARGIN_SE, progress: bool = True) -> Schedule:
    """The tuning loop shared by :func:`tune` and ``tune_pipeline``: evaluate every candidate with ``run(name,
    sample_indices) -> per-sample errors`` (:func:`select`), then keep the chosen one (:func:`choose`) with every
    candidate's result in ``meta["tune"]``; ``model_calls()`` is read once, at the end."""
    results = select(list(candidates), num_samples, run, halving=halving, progress=progress)
    return _best(candidates, results, model_calls(), budget, baseline=baseline, margin_se=margin_se)


def tune(
    model_fn: Callable[[torch.Tensor, float], torch.Tensor],
    latents: torch.Tensor,
    sigmas,
    profile,
    budget: int,
    *,
    candidates: dict[str, Schedule] | None = None,
    references: torch.Tensor | None = None,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    halving: bool = False,
    default_margin_se: float = DEFAULT_MARGIN_SE,
    progress: bool = True,
    backend: str = "auto",
    solver_backend: str = "auto",
) -> Schedule:
    """The candidate schedule with the lowest error of the final latents against the full-step outputs
    (:func:`sample_error`: the geometric mean over samples of the per-sample relative RMSE), unless the library's
    untuned default is not clearly worse (``default_margin_se``).

    Args:
        model_fn: ``model_fn(z, sigma) -> v``, as for :func:`meancache_kernels.sample`.
        latents: [S, ...] tuning latents (keep them apart from any evaluation data).
        sigmas: the N + 1 sigmas (the profile's N).
        profile: the calibration :class:`Profile` the PSSP candidates are solved from.
        budget: B.
        candidates: ``{name: Schedule}`` to evaluate instead of :func:`candidate_schedules`' set.
        references: [S, ...] full-step outputs of ``latents`` when already known (saves N calls per sample).
        gammas: gammas of the PSSP candidates.
        halving: successive halving over the samples instead of every candidate on every sample (:func:`select`):
            about a third of the model calls with 8 samples and 36-52 candidates (bench/results/tune_selection.md).
        default_margin_se: with the default candidates, the calibration-free default schedule
            (:func:`meancache_kernels.default_rule`, what ``MeanCacheConfig(budget=B)`` runs) is kept unless
            the lowest-error candidate beats it by more than this many standard errors of the paired per-sample
            differences of log error (:func:`choose`); 0: always the lowest error.
        progress: a tqdm bar over the candidates, and the model-call cost printed first.
        backend: op backend of the sampler (``"auto"``, ``"torch"``, ``"triton"``).
        solver_backend: PSSP solver backend of the candidates (``"auto"``, ``"cpp"``, ``"python"``).

    Returns:
        The chosen :class:`Schedule` (among those evaluated on the most samples); ``meta["tune"]`` holds ``best``
        (its name), ``lowest`` (the lowest-error candidate's), ``default`` (how the default was weighed, or None),
        ``metric``, ``model_calls`` and ``candidates``: ``[{"name", "error", "samples", "errors"}]`` for every
        candidate, lowest error first. Ties go to the earlier candidate.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if not isinstance(latents, torch.Tensor) or latents.dim() < 1 or latents.shape[0] < 1:
        raise TypeError(f"latents must be a torch.Tensor [S, ...] with S >= 1, got {type(latents).__name__}")
    check_ops_backend(backend)
    candidates, baseline = prepare_candidates(profile, budget, candidates, gammas=gammas,
                                              margin_se=default_margin_se, solver_backend=solver_backend)
    sig = as_sigmas(sigmas, profile.num_steps)
    from .cache import sample

    n, num = profile.num_steps, latents.shape[0]
    calls = [0]

    def counted(z, s):
        calls[0] += z.shape[0]  # model evaluations per sample, summed over the batch
        return model_fn(z, s)

    if progress:
        cost = (0 if references is not None else n * num) + sum(c.budget for c in candidates.values()) * num
        print(f"meancache tune: {len(candidates)} candidates x {num} samples: "
              f"{'at most ' if halving else ''}{cost} model calls "
              f"({'references given' if references is not None else f'{n * num} for the full-step references'})")
    if references is None:
        references = sample(counted, latents, sig, Schedule.full(n), backend=backend)
    elif not isinstance(references, torch.Tensor) or references.shape != latents.shape:
        raise ValueError(f"references must be a tensor of latents' shape {tuple(latents.shape)}")

    def run(name: str, idx: list[int]) -> list[float]:
        out = sample(counted, latents[idx], sig, candidates[name], backend=backend)
        return per_sample_errors(out, references[idx])

    return run_tuning(candidates, baseline, num, run, lambda: calls[0], budget, halving=halving,
                      margin_se=default_margin_se, progress=progress)


def _order(results: list[dict]) -> list[int]:
    """Indices of ``results``: most samples first, then the lowest error (non-finite last), then the earlier one."""
    return sorted(range(len(results)), key=lambda k: (results[k]["error"] is None, -results[k]["samples"],
                                                      results[k]["error"] or 0.0, k))


def _check_margin(margin_se) -> None:
    if isinstance(margin_se, bool) or not isinstance(margin_se, (int, float)) or not (
            math.isfinite(margin_se) and margin_se >= 0):
        raise ValueError(f"default_margin_se must be a finite number >= 0, got {margin_se!r}")


def default_candidate(candidates: dict[str, Schedule], profile, budget: int, *, solver_backend: str = "auto",
                      allowed: Sequence[str] | None = None, sampler: str = "euler") -> str | None:
    """The name under which ``candidates`` holds the library's untuned default, or None: the calibration-free default
    rule (:func:`meancache_kernels.default_rule`, what ``MeanCacheConfig(budget=B)`` runs), so that tuning is
    never worse than not tuning beyond noise. ``solver_backend`` is kept for callers of the former default,
    ``solve(profile, budget)``."""
    from .default_rule import default_schedule

    check_solver_backend(solver_backend, "solver_backend")
    default = default_schedule(profile.sigmas, budget, estimators=allowed, sampler=sampler)
    return next((name for name, s in candidates.items() if s == default), None)


def choose(results: list[dict], baseline: str | None = None,
           margin_se: float = DEFAULT_MARGIN_SE) -> tuple[str, dict | None]:
    """The chosen candidate's name among ``results`` (:func:`select`'s), and how the baseline was weighed.

    The lowest geometric-mean error among the candidates evaluated on the most samples wins, unless ``baseline``
    (the untuned default) was evaluated on the same samples and the winner's advantage, the mean over samples of
    ``log e_baseline - log e_winner``, is at most ``margin_se`` standard errors of those paired differences: then the
    baseline is kept. With 8 tuning prompts the candidate that is lowest on the tuning data is often not the best on
    other prompts (bench/RESULTS.md, "Tuning: how well the choice holds"); keeping the default when the evidence
    against it is within noise lowered that loss there. ``margin_se=0`` or a single sample: the lowest error.
    """
    _check_margin(margin_se)
    most = max(r["samples"] for r in results)
    best = results[_order(results)[0]]
    if best["error"] is None or best["samples"] != most:
        raise ValueError("every candidate schedule that was evaluated on every sample diverged (non-finite error)")
    base = next((r for r in results if r["name"] == baseline), None)
    if base is None or base["error"] is None or base["samples"] != most:
        return best["name"], None
    how = {"name": baseline, "margin_se": float(margin_se), "advantage_db": 0.0, "se_db": 0.0, "kept": True}
    if base["name"] == best["name"]:
        return best["name"], how
    diffs = [math.log(max(a, 1e-300)) - math.log(max(b, 1e-300)) for a, b in zip(base["errors"], best["errors"])]
    mean = sum(diffs) / len(diffs)
    se = (math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
          if len(diffs) > 1 else math.inf)
    db = 20.0 / math.log(10.0)  # log error -> dB
    kept = len(diffs) > 1 and margin_se > 0 and mean <= margin_se * se
    how.update(advantage_db=mean * db, se_db=se * db if math.isfinite(se) else None, kept=kept)
    return (baseline if kept else best["name"]), how


def _best(candidates: dict[str, Schedule], results: list[dict], model_calls: int, budget: int, *,
          baseline: str | None = None, margin_se: float = DEFAULT_MARGIN_SE) -> Schedule:
    name, how = choose(results, baseline, margin_se)
    order = _order(results)
    s = candidates[name]
    meta = dict(s.meta or {})
    meta["tune"] = {
        "best": name,
        "lowest": results[order[0]]["name"],
        "default": how,
        "metric": "geometric mean over samples of the relative RMSE of the final latent vs the full-step output",
        "budget": budget,
        "model_calls": model_calls,
        "candidates": [results[k] for k in order],
    }
    return Schedule(s.compute, s.spans, meta=meta, estimators=s.estimators)
