"""Writes expected_schedules_v1.json: the paper's PSSP optima the estimator tests assert against.

Run from the repository root: ``python tests/core/data/make_expected_schedules.py``. Each schedule is solved twice,
by the pure-Python DP (``solve_reference``) and by the C++ extension (``solve_costs(backend="cpp")``); the script
refuses to write unless both agree exactly (steps, spans and objective bits). Sources:

- ``profile_v1``: tests/core/data/profile_v1.npz (the shipped profile as written at git 282b657, format version 1),
  gamma 2, always_compute (0,), its own max_skip, budgets 25, 17, 10;
- ``gaussian_mixture_jvp``: the jvp-only profile test_estimators.py::test_jvp_only_calibration_is_the_old_profile
  calibrates (GaussianMixtureFlow.random(5, components=3, seed=2), z0 = randn(3, 5) float64 from seed 1, N = 12
  flow sigmas with shift 3, max_span 2, max_skip 5), budgets 4, 6, 9.
"""

import json
from pathlib import Path

import torch

import meancache_kernels as mck
from meancache_kernels.solver import solve_costs, solve_reference
from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas

HERE = Path(__file__).resolve().parent


def gaussian_mixture_jvp_profile() -> mck.Profile:
    flow = GaussianMixtureFlow.random(5, components=3, seed=2)
    z0 = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return mck.calibrate(flow, z0, flow_sigmas(12, 3.0), max_span=2, max_skip=5, progress=False, estimators=("jvp",))


def solved(profile: mck.Profile, budgets) -> list[dict]:
    rows = []
    for b in budgets:
        py = solve_reference(profile.costs, b, max_skip=profile.max_skip)
        cpp = solve_costs(profile.costs, b, max_skip=profile.max_skip, backend="cpp")
        assert py == cpp and py.objective == cpp.objective, (b, py, cpp)
        rows.append({"budget": b, "compute_steps": list(py.compute_steps), "spans": list(py.spans),
                     "objective": py.objective})
    return rows


def main() -> None:
    out = {
        "note": "written by tests/core/data/make_expected_schedules.py (see its docstring): the pure-Python DP and "
                "the C++ solver, checked equal; gamma 2, always_compute (0,), the profile's max_skip",
        "profile_v1": solved(mck.Profile.load(HERE / "profile_v1.npz"), (25, 17, 10)),
        "gaussian_mixture_jvp": solved(gaussian_mixture_jvp_profile(), (4, 6, 9)),
    }
    lines = ["{", f' "note": {json.dumps(out.pop("note"))},']
    for k, (name, rows) in enumerate(out.items()):
        lines.append(f' "{name}": [')
        lines += [f"  {json.dumps(r)}" + ("," if i + 1 < len(rows) else "") for i, r in enumerate(rows)]
        lines.append(" ]" + ("," if k + 1 < len(out) else ""))
    (HERE / "expected_schedules_v1.json").write_text("\n".join(lines + ["}"]) + "\n")


if __name__ == "__main__":
    main()
