"""Profile: calibrated edge costs of one model, step count and resolution, and its file format (.npz).

A :class:`Profile` holds the paper's edge costs ``L_K(i, j)`` (docs/design.md section 2), the polynomial estimators'
costs ``L_e(h, i, j)`` (section 2b), the calibration sigmas and metadata; :meth:`Profile.save` / :meth:`Profile.load`
write and read it (a versioned, checksummed zip of arrays and a JSON header). It is made by
:func:`meancache_kernels.calibrate` and read by :func:`meancache_kernels.solve`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import torch

from .checks import as_count, as_sigmas

__all__ = ["Profile"]

_FORMAT = "meancache-profile"
_FORMAT_VERSION = 2  # 2 adds the polynomial estimators' costs; a profile without them is still written as 1
_READ_VERSIONS = (1, 2)


class Profile:
    """Calibrated edge costs of one model / step count / resolution.

    Args:
        costs: float64 array [K_max+1, N+1, N+1]; ``costs[K, i, j]`` = L_K(i, j) for K >= 1 and j >= i + 2, 0 on chain
            edges (j = i + 1), +inf where the edge or span was not calibrated (K = 0, j <= i, skips > max_skip).
        sigmas: the N + 1 sigmas of the calibration (strictly decreasing, ending at 0).
        meta: JSON-serialisable metadata (model, num_steps, resolution, dtype, estimator, num_samples, max_span,
            max_skip, stability statistics, ...).
        cv: optional float64 array of ``costs``' shape, the per-edge coefficient of variation across samples (NaN
            where not allowed).
        poly_costs: optional float64 array [E, N, D+1, D+1, D+1] of the polynomial estimators' edge costs
            (docs/design.md 2b): ``poly_costs[e, i, a, b, d]`` = L_e(h, i, j) for the edge i -> j = i + d (d >= 2) when
            the computed node before i is h = i - a and the one before h is h - b (a = 0: i = 0 has none; b = 0:
            h = 0 has none); +inf where not allowed or not calibrated. D = the longest calibrated edge.
        poly_estimators: the E estimator names of ``poly_costs`` (``"taylor1"``, ``"mean2"``, ...).
    """

    __slots__ = ("costs", "sigmas", "meta", "cv", "poly_costs", "poly_estimators")

    def __init__(self, costs, sigmas, meta: dict | None = None, cv=None, *, poly_costs=None,
                 poly_estimators=None):
        if isinstance(costs, torch.Tensor):
            costs = costs.detach().cpu().double().numpy()
        try:
            costs = np.array(costs, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"costs must be a float array [K_max+1, N+1, N+1], got {type(costs).__name__} ({e})"
            ) from None
        sig = as_sigmas(sigmas)
        n = len(sig) - 1
        if costs.ndim != 3 or costs.shape[0] < 2 or costs.shape[1:] != (n + 1, n + 1):
            raise ValueError(
                f"costs must have shape [K_max+1, N+1, N+1] = [K_max+1, {n + 1}, {n + 1}] (K_max >= 1) for "
                f"{n + 1} sigmas, got {tuple(costs.shape)}"
            )
        if np.isnan(costs).any():
            raise ValueError("costs must not hold NaN (use +inf for edges that are not allowed)")
        if (costs < 0).any():
            raise ValueError(f"costs must be >= 0, got a minimum of {costs.min()}")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
        if cv is not None:
            if isinstance(cv, torch.Tensor):
                cv = cv.detach().cpu().double().numpy()
            cv = np.array(cv, dtype=np.float64, copy=True)
            if cv.shape != costs.shape:
                raise ValueError(f"cv must have the shape of costs {tuple(costs.shape)}, got {tuple(cv.shape)}")
        poly_costs, poly_estimators = _check_poly(poly_costs, poly_estimators, n)
        self.poly_costs = poly_costs
        self.poly_estimators = poly_estimators
        self.costs = costs
        self.sigmas = np.asarray(sig, dtype=np.float64)
        self.meta = dict(meta) if meta else {}
        self.cv = cv

    # ------------------------------------------------------------------ views
    @property
    def num_steps(self) -> int:
        return self.costs.shape[1] - 1

    @property
    def k_max(self) -> int:
        return self.costs.shape[0] - 1

    @property
    def estimators(self) -> tuple[str, ...]:
        """The estimator names this profile has costs for: ``"jvp"`` and the polynomial ones calibrated."""
        return ("jvp", *self.poly_estimators)

    @property
    def max_skip(self) -> int:
        """Longest run of skipped steps with a finite cost for some K >= 1 (0 when only chain edges are allowed)."""
        finite = np.isfinite(self.costs[1:]).any(axis=0)
        i, j = np.nonzero(finite)
        lengths = j - i - 1
        lengths = lengths[lengths >= 1]
        return int(lengths.max()) if lengths.size else 0

    def _k_slice(self, k_range) -> tuple[int, int]:
        if k_range is None:
            return 1, self.k_max
        lo, hi = (as_count("k_range[0]", k_range[0], 1), as_count("k_range[1]", k_range[1], 1))
        if not lo <= hi <= self.k_max:
            raise ValueError(f"k_range must satisfy 1 <= k_lo <= k_hi <= K_max={self.k_max}, got ({lo}, {hi})")
        return lo, hi

    def min_cost(self, k_range: tuple[int, int] | None = None) -> np.ndarray:
        """[N+1, N+1]: min over K in ``k_range`` (default 1..K_max) of L_K(i, j); 0 on chain edges, +inf elsewhere."""
        lo, hi = self._k_slice(k_range)
        out = self.costs[lo : hi + 1].min(axis=0)
        n = self.num_steps
        out[np.arange(n), np.arange(1, n + 1)] = 0.0
        return out

    def argmin_k(self, k_range: tuple[int, int] | None = None) -> np.ndarray:
        """[N+1, N+1] int64: the smallest K attaining :meth:`min_cost`; 0 on chain edges and where none is allowed."""
        lo, hi = self._k_slice(k_range)
        block = self.costs[lo : hi + 1]
        k = np.argmin(block, axis=0).astype(np.int64) + lo  # argmin returns the first (smallest K) on ties
        k[~np.isfinite(block.min(axis=0))] = 0
        n = self.num_steps
        k[np.arange(n), np.arange(1, n + 1)] = 0
        return k

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={self.meta[k]!r}" for k in ("model", "num_samples") if k in self.meta)
        return f"Profile(N={self.num_steps}, K_max={self.k_max}, max_skip={self.max_skip}{', ' + keys if keys else ''})"

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the profile to ONE file (a numpy ``.npz`` archive, no pickle): costs, sigmas, optional cv, and a JSON
        header (format, version, N, K_max, metadata, SHA-256 of the arrays). Written to a temporary file first and
        then renamed, so an interrupted save never leaves a half-written profile under ``path``."""
        try:
            header_meta = json.loads(json.dumps(self.meta, allow_nan=True))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Profile.meta must be JSON-serialisable to be saved: {e}") from None
        arrays = {"costs": self.costs, "sigmas": self.sigmas}
        if self.cv is not None:
            arrays["cv"] = self.cv
        if self.poly_costs is not None:
            arrays["poly_costs"] = self.poly_costs
        header = {
            "format": _FORMAT,
            "version": 1 if self.poly_costs is None else _FORMAT_VERSION,
            "num_steps": self.num_steps,
            "k_max": self.k_max,
            "sha256": _digest(arrays),
            "meta": header_meta,
        }
        if self.poly_costs is not None:
            header["poly_estimators"] = list(self.poly_estimators)
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read a file written by :meth:`save`. A corrupt, truncated, foreign or inconsistent file raises ValueError
        naming the file."""
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path must be a file path, got {type(path).__name__}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"profile file {path!r} does not exist")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ValueError(f"{path!r} is not a readable MeanCache profile: {e}") from None
        if not raw.startswith(b"PK\x03\x04"):  # every .npz is a zip archive; np.load would try pickle on the rest
            what = ("the file is empty" if not raw else "it is a single numpy array (.npy), not a profile archive"
                    if raw.startswith(b"\x93NUMPY") else f"it is not an .npz archive (it starts with {raw[:16]!r})")
            raise ValueError(f"{path!r} is not a readable MeanCache profile: {what}; profiles are the .npz files "
                             "written by Profile.save or `meancache calibrate`")
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                names = set(data.files)
                missing = {"header", "costs", "sigmas"} - names
                if missing:
                    raise ValueError(f"missing arrays {sorted(missing)} (found {sorted(names)})")
                header = json.loads(bytes(data["header"].astype(np.uint8)).decode("utf-8"))
                arrays = {"costs": data["costs"], "sigmas": data["sigmas"]}
                for optional in ("cv", "poly_costs"):
                    if optional in names:
                        arrays[optional] = data[optional]
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
            raise ValueError(f"{path!r} is not a readable MeanCache profile (corrupt or truncated?): {e}") from None
        except Exception as e:  # zlib.error and other decoder failures on damaged archives
            raise ValueError(f"{path!r} is not a readable MeanCache profile (corrupt or truncated?): {e!r}") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            fmt = header.get("format") if isinstance(header, dict) else None
            raise ValueError(f"{path!r} is not a MeanCache profile: format={fmt!r}, expected {_FORMAT!r}")
        if header.get("version") not in _READ_VERSIONS:
            raise ValueError(
                f"{path!r}: unsupported profile format version {header.get('version')!r}; this build reads "
                f"versions {list(_READ_VERSIONS)}"
            )
        if header.get("sha256") != _digest(arrays):
            raise ValueError(f"{path!r}: checksum mismatch, the profile arrays are corrupt")
        costs, sigmas = arrays["costs"], arrays["sigmas"]
        n, kmax = header.get("num_steps"), header.get("k_max")
        ok = isinstance(n, int) and isinstance(kmax, int) and n >= 1 and kmax >= 1
        if not ok or costs.shape != (kmax + 1, n + 1, n + 1) or sigmas.shape != (n + 1,):
            raise ValueError(
                f"{path!r}: shapes do not match the header (N={n!r}, K_max={kmax!r}): costs {tuple(costs.shape)}, "
                f"sigmas {tuple(sigmas.shape)}"
            )
        try:
            return cls(costs, sigmas, meta=header.get("meta") or {}, cv=arrays.get("cv"),
                       poly_costs=arrays.get("poly_costs"), poly_estimators=header.get("poly_estimators"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path!r}: invalid profile content: {e}") from None


def _check_poly(poly_costs, poly_estimators, n: int):
    from . import estimators as est

    if poly_costs is None:
        if poly_estimators:
            raise ValueError(f"poly_estimators={poly_estimators!r} given without poly_costs")
        return None, ()
    if isinstance(poly_costs, torch.Tensor):
        poly_costs = poly_costs.detach().cpu().double().numpy()
    try:
        arr = np.array(poly_costs, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"poly_costs must be a float array [E, N, D+1, D+1, D+1], got {type(poly_costs).__name__} "
                        f"({e})") from None
    if arr.ndim != 5 or arr.shape[1] != n or not arr.shape[2] == arr.shape[3] == arr.shape[4] >= 3:
        raise ValueError(f"poly_costs must have shape [E, N={n}, D+1, D+1, D+1] with D >= 2, got {tuple(arr.shape)}")
    if isinstance(poly_estimators, (str, bytes)) or not isinstance(poly_estimators, (list, tuple)):
        raise TypeError(f"poly_estimators must be a list of estimator names, got {type(poly_estimators).__name__}")
    names = tuple(poly_estimators)
    if len(names) != arr.shape[0]:
        raise ValueError(f"poly_estimators has {len(names)} names for {arr.shape[0]} cost tables in poly_costs")
    for name in names:
        fam, _ = est.parse(name)
        if fam == "jvp":
            raise ValueError("poly_estimators must name polynomial estimators (jvp's costs live in costs)")
    if len(set(names)) != len(names):
        raise ValueError(f"poly_estimators has duplicates: {list(names)}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError("poly_costs must be >= 0 and not NaN (+inf where not allowed)")
    return arr, names


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
