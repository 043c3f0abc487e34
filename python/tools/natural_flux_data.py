"""Data for the tiny "natural" FluxPipeline (python/tools/train_natural_flux.py): images whose coarse content is a
choice among a few global colour layouts at large amplitude, with natural-photo texture on top.

Each 32x32 RGB image is ``layout_k + texture``:

* ``layout_k``: one of ``K`` fixed smooth colour fields (random low-frequency cosine sums per colour channel,
  seeded), jittered slightly per image. The layouts hold most of the image's power, in a few coarse directions, and
  the data are multimodal in those directions: a sampler must choose the layout early, at high noise, as real
  text-to-image models choose composition.
* ``texture``: a random crop (random zoom, flips) of one scikit-image photograph with its mean removed, at smaller
  amplitude: a natural power-law spectrum for the detail.

The prompt names only the photograph the texture came from ("a photo of grass"), so it leaves the layout (the bulk
of the image) undecided. Only numpy and scikit-image are needed; images are float32 in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

import numpy as np

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "grass", "gravel", "brick", "camera")
LAYOUTS = 16
FREQS = 3  # cosine frequencies 0..FREQS-1 per axis in the layouts


def prompt_for(source: str) -> str:
    return f"a photo of {source}"


def vocabulary() -> list[str]:
    words = {"a", "photo", "of"}
    words.update(SOURCES)
    return sorted(words)


def _photo(name: str) -> np.ndarray:
    import skimage.data

    im = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    return im[..., :3]


def layout_coefficients(seed: int = 1234, layouts: int = LAYOUTS, amplitude: float = 0.25) -> np.ndarray:
    """[K, FREQS, FREQS, 3] cosine coefficients of the layouts (amplitude decays with frequency)."""
    rng = np.random.default_rng(seed)
    p = np.arange(FREQS)
    decay = 1.0 / (1.0 + p[:, None] + p[None, :])
    coef = rng.normal(size=(layouts, FREQS, FREQS, 3)) * decay[None, :, :, None] * amplitude
    return coef.astype(np.float32)


def render_layout(coef: np.ndarray, res: int) -> np.ndarray:
    """One layout (coefficients [FREQS, FREQS, 3]) as an image around 0.5, shape (res, res, 3)."""
    x = (np.arange(res) + 0.5) / res
    basis = np.cos(np.pi * np.arange(FREQS)[:, None] * x[None, :])  # [F, res]
    field = np.einsum("pqc,py,qx->yxc", coef, basis, basis)
    return 0.5 + field


def _resize(img: np.ndarray, res: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(img, (res, res, img.shape[2]), anti_aliasing=True, order=1).astype(np.float32)


def make_dataset(per_source: int, res: int = 32, seed: int = 0, texture: float = 1.0, jitter: float = 0.12,
                 layout_seed: int = 1234, amplitude: float = 0.25):
    """Images [n, res, res, 3] in [0, 1], source labels [n] (index into SOURCES), layout labels [n].

    Args:
        per_source: images per photograph (n = per_source * len(SOURCES)).
        texture: multiplier of the mean-free photo crop added to the layout.
        jitter: relative per-image jitter of the layout's coefficients.
        amplitude: scale of the layouts' coefficients.
    """
    if per_source < 1:
        raise ValueError(f"per_source must be >= 1, got {per_source}")
    rng = np.random.default_rng(seed)
    coefs = layout_coefficients(layout_seed, LAYOUTS, amplitude)
    images, src_labels, lay_labels = [], [], []
    for si, name in enumerate(SOURCES):
        photo = _photo(name)
        h, w, _ = photo.shape
        for _ in range(per_source):
            side = int(rng.integers(res, min(h, w, 4 * res) + 1))
            y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = _resize(photo[y0 : y0 + side, x0 : x0 + side], res)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            tex = (crop - crop.mean(axis=(0, 1), keepdims=True)) * texture
            k = int(rng.integers(LAYOUTS))
            c = coefs[k] * (1.0 + jitter * rng.normal(size=coefs[k].shape).astype(np.float32))
            img = np.clip(render_layout(c, res) + tex, 0.0, 1.0)
            images.append(img.astype(np.float32))
            src_labels.append(si)
            lay_labels.append(k)
    return np.stack(images), np.array(src_labels, dtype=np.int64), np.array(lay_labels, dtype=np.int64)
