"""Published MeanCache schedules, as data.

Source: the public MeanCache release, https://github.com/UnicomAI/MeanCache (Apache-2.0), files
``MeanCache4Qwen-Image/Mc_qwenimage.py`` (Qwen-Image), ``MeanCache4Qwen-Image/Mc_qwenimage_2512.py``
(Qwen-Image-2512) and ``MeanCache4Z-Image/MC_zimage.py`` (Z-Image), tables ``calc_dict`` (computed steps) and
``edge_source`` (per-interval edge type), read at commit 2e12280. Edge types map to the JVP span K as in the
release's ``mapping_rules``: ``chain`` -> 0 (no skipped step), ``v_diff_mean`` -> 1, ``v_diff_mean_jvp1_sK`` -> K.
All tables are for N = 50 steps.
"""

from __future__ import annotations

from .schedule import Schedule

__all__ = ["available", "get", "SOURCE"]

SOURCE = "https://github.com/UnicomAI/MeanCache (commit 2e12280)"
NUM_STEPS = 50

# model -> budget -> (computed steps, K per interval between consecutive computed steps)
_TABLES: dict[str, dict[int, tuple[list[int], list[int]]]] = {
    "qwen-image": {
        25: (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 32, 40, 43, 45, 47, 48, 49],
            [0] * 16 + [1, 1, 1, 5, 5, 5, 0, 0],
        ),
        17: (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 17, 24, 31, 38, 45, 48, 49],
            [0] * 8 + [2, 1, 1, 1, 1, 1, 4, 0],
        ),
        10: ([0, 1, 3, 7, 14, 21, 28, 35, 42, 49], [0, 2, 1, 1, 1, 1, 1, 1, 4]),
    },
    "qwen-image-2512": {
        25: (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23, 31, 37, 44, 45, 46, 47, 48, 49],
            [0] * 15 + [2, 2, 2, 1, 1, 1, 5, 5, 0],
        ),
        17: (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 19, 27, 35, 43, 47, 49],
            [0] * 9 + [2, 1, 1, 1, 1, 5, 5],
        ),
        10: ([0, 2, 4, 7, 14, 21, 28, 35, 42, 49], [1, 3, 1, 1, 1, 1, 1, 1, 4]),
    },
    "z-image": {
        25: (
            [0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 15, 16, 17, 18, 20, 22, 29, 37, 42, 45, 47, 48, 49],
            [0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 2, 0, 0, 0, 5, 5, 1, 1, 1, 5, 5, 0, 0],
        ),
        20: (
            [0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 30, 38, 43, 46, 48, 49],
            [0, 0, 0, 0, 2, 2, 2, 2, 2, 5, 4, 5, 5, 1, 1, 1, 5, 2, 0],
        ),
        17: (
            [0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 19, 27, 35, 43, 46, 48, 49],
            [0, 0, 0, 0, 2, 2, 2, 2, 2, 1, 1, 1, 1, 5, 2, 0],
        ),
        15: (
            [0, 1, 2, 3, 5, 7, 10, 12, 17, 25, 33, 41, 45, 48, 49],
            [0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 5, 4, 0],
        ),
        13: (
            [0, 1, 2, 3, 5, 9, 15, 22, 29, 36, 43, 47, 49],
            [0, 0, 0, 2, 1, 1, 1, 1, 1, 1, 5, 2],
        ),
    },
}

_ALIASES = {
    "qwen-image": "qwen-image",
    "qwen_image": "qwen-image",
    "qwenimage": "qwen-image",
    "qwen/qwen-image": "qwen-image",
    "qwen-image-2512": "qwen-image-2512",
    "qwen_image_2512": "qwen-image-2512",
    "qwen/qwen-image-2512": "qwen-image-2512",
    "z-image": "z-image",
    "z_image": "z-image",
    "zimage": "z-image",
}


def _canonical(model: str) -> str:
    if not isinstance(model, str):
        raise TypeError(f"model must be a string, got {type(model).__name__}")
    key = _ALIASES.get(model.strip().lower())
    if key is None:
        raise ValueError(f"unknown preset model {model!r}; available: {sorted(_TABLES)}")
    return key


def available() -> dict[str, list[int]]:
    """Preset models and their budgets, e.g. ``{"qwen-image": [10, 17, 25], ...}``."""
    return {m: sorted(t) for m, t in _TABLES.items()}


def get(model: str, budget: int) -> Schedule:
    """The published schedule for ``model`` (``"qwen-image"``, ``"qwen-image-2512"``, ``"z-image"``) at ``budget``."""
    key = _canonical(model)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {budget!r}")
    table = _TABLES[key]
    if budget not in table:
        raise ValueError(f"no published {key!r} preset for budget={budget}; available budgets: {sorted(table)}")
    steps, spans = table[budget]
    return Schedule.from_official(
        steps, spans, NUM_STEPS, meta={"source": SOURCE, "preset": key, "budget": budget, "official_spans": list(spans)}
    )
