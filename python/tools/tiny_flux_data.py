"""Procedural data for the shipped tiny FluxPipeline: one coloured shape on a plain dark background.

Prompts look like "a red circle at the top left" or "a large blue triangle in the center". The vocabulary,
the palette and the renderer live here so that the training script, the tests and the benchmark agree on them.
Only numpy is needed; images are float32 in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

import itertools

import numpy as np

BACKGROUND = (0.08, 0.08, 0.10)
COLOURS = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.25),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.70, 0.25, 0.85),
    "cyan": (0.15, 0.80, 0.85),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {  # centre of the shape as a fraction of the image (x, y), y pointing down
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.50, 0.50),
}
SIZES = {"small": 0.13, "large": 0.21}  # half-extent as a fraction of the image side


def prompt_for(colour: str, shape: str, position: str, size: str | None = None) -> str:
    where = "in the center" if position == "center" else f"at the {position}"
    adjective = f"{size} {colour}" if size else colour
    return f"a {adjective} {shape} {where}"


def all_prompt_specs() -> list[tuple[str, str, str, str | None]]:
    """Every (colour, shape, position, size-or-None) combination the model is trained on."""
    return list(itertools.product(COLOURS, SHAPES, POSITIONS, (None, *SIZES)))


def vocabulary() -> list[str]:
    words = {"a", "at", "the", "in"}
    for spec in all_prompt_specs():
        words.update(prompt_for(*spec).split())
    return sorted(words)


def render(colour: str, shape: str, position: str, size: str, *, res: int = 32, jitter=(0.0, 0.0)) -> np.ndarray:
    """Anti-aliased (4x supersampled) rendering of one shape; ``jitter`` shifts the centre (fractions of the side)."""
    ss = 4
    n = res * ss
    coords = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(coords, coords)
    cx, cy = POSITIONS[position]
    cx, cy = cx + jitter[0], cy + jitter[1]
    r = SIZES[size]
    if shape == "circle":
        mask = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif shape == "square":
        mask = (np.abs(x - cx) <= r * 0.9) & (np.abs(y - cy) <= r * 0.9)
    elif shape == "triangle":  # apex up, base down
        top, bottom = cy - r, cy + r
        t = np.clip((y - top) / (bottom - top), 0.0, 1.0)
        mask = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= t * r * 1.1)
    else:
        raise ValueError(f"shape={shape!r} is not one of {SHAPES}")
    cover = mask.reshape(res, ss, res, ss).mean(axis=(1, 3))[..., None]
    img = (1.0 - cover) * np.asarray(BACKGROUND) + cover * np.asarray(COLOURS[colour])
    return img.astype(np.float32)


def make_dataset(copies: int, *, res: int = 32, seed: int = 0):
    """``copies`` jittered renderings of every prompt; returns (images (M,H,W,3) float32, prompt indices (M,), specs).

    A prompt without a size word gets a random size, so that "a red circle" covers both sizes.
    """
    rng = np.random.default_rng(seed)
    specs = all_prompt_specs()
    images, labels = [], []
    for idx, (colour, shape, position, size) in enumerate(specs):
        for _ in range(copies):
            s = size if size is not None else str(rng.choice(list(SIZES)))
            jit = tuple(rng.uniform(-0.05, 0.05, size=2))
            images.append(render(colour, shape, position, s, res=res, jitter=jit))
            labels.append(idx)
    return np.stack(images), np.asarray(labels), specs


def classify(image: np.ndarray) -> tuple[str | None, str | None]:
    """(colour, position) of the shape in an (H, W, 3) image in [0, 1], by simple pixel statistics.

    Foreground = pixels far from the background colour; colour = palette entry nearest the mean foreground
    colour; position = centroid of the foreground (centre if within 1/6 of the middle on both axes,
    else its quadrant). Returns (None, None) when there is no foreground.
    """
    img = np.asarray(image, dtype=np.float64)
    dist = np.linalg.norm(img - np.asarray(BACKGROUND), axis=-1)
    fg = dist > 0.35
    if fg.sum() < 3:
        return None, None
    mean = img[fg].mean(axis=0)
    colour = min(COLOURS, key=lambda c: float(np.linalg.norm(mean - np.asarray(COLOURS[c]))))
    h, w = fg.shape
    ys, xs = np.nonzero(fg)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    if abs(cx - 0.5) < 1 / 6 and abs(cy - 0.5) < 1 / 6:
        position = "center"
    else:
        position = ("top" if cy < 0.5 else "bottom") + " " + ("left" if cx < 0.5 else "right")
    return colour, position
