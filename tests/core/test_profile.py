"""Profile: construction checks, min/argmin over K, and the single-file format (round trip; corrupt, truncated,
foreign, wrong-version and inconsistent files give a ValueError naming the file)."""

import json
import os

import numpy as np
import pytest

import meancache_kernels as mck
from meancache_kernels.testing import flow_sigmas


def _profile(n=8, kmax=3, seed=0, cv=True):
    rng = np.random.default_rng(seed)
    costs = np.full((kmax + 1, n + 1, n + 1), np.inf)
    for i in range(n):
        costs[:, i, i + 1] = 0.0
        for j in range(i + 2, min(n, i + 4) + 1):
            costs[1:, i, j] = rng.random(kmax)
    cvs = np.where(np.isfinite(costs), rng.random(costs.shape), np.nan) if cv else None
    meta = {"model": "toy", "resolution": [64, 64], "stability": {"rank_correlation": 0.9}}
    return mck.Profile(costs, flow_sigmas(n, 3.0), meta=meta, cv=cvs)


def test_round_trip(tmp_path):
    p = _profile()
    path = tmp_path / "toy.profile"  # any name: written to exactly this path
    p.save(path)
    assert os.listdir(tmp_path) == ["toy.profile"]
    q = mck.Profile.load(path)
    assert np.array_equal(q.costs, p.costs) and np.array_equal(q.sigmas, p.sigmas)
    assert np.array_equal(q.cv, p.cv, equal_nan=True) and q.meta == p.meta
    assert q.num_steps == 8 and q.k_max == 3 and q.max_skip == 3  # j <= i + 4
    r = _profile(cv=False)
    r.save(tmp_path / "nocv.npz")
    assert mck.Profile.load(tmp_path / "nocv.npz").cv is None


def test_min_and_argmin_over_k():
    p = _profile()
    m, k = p.min_cost(), p.argmin_k()
    for i, j in [(0, 2), (3, 6), (5, 8)]:
        kk = int(np.argmin(p.costs[1:, i, j])) + 1
        assert k[i, j] == kk and m[i, j] == p.costs[kk, i, j]
    assert m[2, 3] == 0 and k[2, 3] == 0  # chain
    assert np.isinf(m[0, 5]) and k[0, 5] == 0  # not calibrated
    m2 = p.min_cost((2, 2))
    assert (p.argmin_k((2, 2))[np.isfinite(m2) & (m2 > 0)] == 2).all() and np.array_equal(m2, p.costs[2])
    with pytest.raises(ValueError, match="k_range"):
        p.min_cost((2, 4))


@pytest.mark.parametrize(
    "damage, match",
    [
        ("truncate", "not a readable MeanCache profile"),
        ("garbage", "not a readable MeanCache profile"),
        ("flip", "corrupt"),
        ("empty", "not a readable MeanCache profile"),
    ],
)
def test_damaged_files(tmp_path, damage, match):
    path = tmp_path / "p.npz"
    _profile().save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = b"this is not a profile" * 10
    elif damage == "flip":
        raw = bytearray(raw)
        for off in range(200, len(raw) - 200, 97):
            raw[off] ^= 0xFF
        raw = bytes(raw)
    else:
        raw = b""
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as e:
        mck.Profile.load(path)
    assert str(path) in str(e.value)


def _write(path, header, costs, sigmas):
    arrays = {"costs": costs, "sigmas": sigmas, "header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_foreign_version_and_mismatched_files(tmp_path):
    from meancache_kernels.profile import _digest

    p = _profile(cv=False)
    arrays = {"costs": p.costs, "sigmas": p.sigmas}
    good = {"format": "meancache-profile", "version": 1, "num_steps": 8, "k_max": 3, "sha256": _digest(arrays),
            "meta": {}}
    path = tmp_path / "x.npz"
    _write(path, good, p.costs, p.sigmas)
    assert np.array_equal(mck.Profile.load(path).costs, p.costs)  # the hand-written file itself is valid
    cases = [
        (dict(good, version=99), "version 99"),
        (dict(good, format="something-else"), "not a MeanCache profile"),
        (dict(good, num_steps=9), r"N=9"),
        (dict(good, k_max=5), r"K_max=5"),
        (dict(good, sha256="0" * 64), "checksum"),
    ]
    for header, match in cases:
        _write(path, header, p.costs, p.sigmas)
        with pytest.raises(ValueError, match=match) as e:
            mck.Profile.load(path)
        assert str(path) in str(e.value)
    np.save(tmp_path / "plain.npy", p.costs)  # a numpy file, but not an archive
    with pytest.raises(ValueError, match="plain.npy"):
        mck.Profile.load(tmp_path / "plain.npy")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        mck.Profile.load(tmp_path / "missing.npz")


def test_constructor_validation():
    s = flow_sigmas(8, 3.0)
    with pytest.raises(ValueError, match=r"\[K_max\+1, 9, 9\]"):
        mck.Profile(np.zeros((3, 8, 8)), s)
    with pytest.raises(ValueError, match="NaN"):
        mck.Profile(np.full((3, 9, 9), np.nan), s)
    with pytest.raises(ValueError, match=">= 0"):
        mck.Profile(-np.ones((3, 9, 9)), s)
    with pytest.raises(ValueError, match="cv"):
        mck.Profile(np.ones((3, 9, 9)), s, cv=np.ones((2, 9, 9)))
    with pytest.raises(ValueError, match="sigmas"):
        mck.Profile(np.ones((3, 9, 9)), s.flip(0))
    with pytest.raises(ValueError, match="JSON"):
        mck.Profile(np.ones((3, 9, 9)), s, meta={"bad": object()}).save("/tmp/never-written.npz")


def test_bad_argument_types_are_named():
    import torch

    from meancache_kernels import Profile, calibrate
    from meancache_kernels.calibration import profile_from_trajectories
    from meancache_kernels.testing import flow_sigmas

    with pytest.raises(TypeError, match="path must be a file path"):
        Profile.load(None)
    with pytest.raises(TypeError, match="costs must be a float array"):
        Profile("abc", flow_sigmas(3))
    with pytest.raises(TypeError, match="trajectories must be an iterable"):
        profile_from_trajectories(None, flow_sigmas(3))
    with pytest.raises(TypeError, match="meta must be a dict"):
        calibrate(lambda z, s: z, torch.zeros(2, 3), flow_sigmas(3), meta="x", progress=False)
