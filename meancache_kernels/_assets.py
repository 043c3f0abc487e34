"""Paths of the data shipped inside the package (no imports beyond the standard library)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL_DIR = ASSETS / "tiny_flux"  # FluxPipeline in save_pretrained format (python/tools/train_tiny_flux.py)
SHIPPED_PROFILE = ASSETS / "tiny_flux_profile.npz"  # its MeanCache profile (python/tools/calibrate_tiny_flux.py)
NATURAL_MODEL_DIR = ASSETS / "tiny_flux_natural"  # FLUX.1-like early dynamics (python/tools/train_natural_flux.py)
SHIPPED_META = "meancache_tiny_flux.json"  # call settings the tiny model was trained for, inside its directory
