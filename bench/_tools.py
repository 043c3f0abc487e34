"""The python/tools modules the benchmarks share: the tiny FluxPipeline's prompt vocabulary (tiny_flux_data) and the
calibration prompts of its shipped profile (calibrate_tiny_flux.CALIBRATION_PROMPTS).

python/tools is a folder of scripts, not a package, so its modules are loaded here from their files (path computed
from this file) and registered in ``sys.modules`` under their own names, as ``import`` would do: calibrate_tiny_flux
imports tiny_flux_data by name, so tiny_flux_data is loaded first. ``sys.path`` is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "python" / "tools"


def load(name: str) -> ModuleType:
    """python/tools/<name>.py as the module ``name`` (loaded once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def tiny_flux_data() -> ModuleType:
    return load("tiny_flux_data")


def calibration_prompts() -> list[str]:
    """The 8 calibration prompts of the shipped profile (python/tools/calibrate_tiny_flux.py)."""
    tiny_flux_data()  # calibrate_tiny_flux imports it by name
    return list(load("calibrate_tiny_flux").CALIBRATION_PROMPTS)
