"""Build script: drives CMake to compile the torch-free C++ solver into ``meancache_kernels._C``.

Set ``MEANCACHE_SKIP_EXT=1`` to skip the native build; the package then uses its pure-Python fallbacks.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, source_dir: Path):
        super().__init__(name, sources=[])
        self.source_dir = str(source_dir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cfg = "Debug" if self.debug else "Release"
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
        ]
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        subprocess.run(["cmake", ext.source_dir, *args], cwd=build_temp, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", ".", "--config", cfg, "-j", jobs], cwd=build_temp, check=True)


ext_modules = []
if os.environ.get("MEANCACHE_SKIP_EXT", "0") not in ("1", "true", "True", "yes"):
    ext_modules.append(CMakeExtension("meancache_kernels._C", ROOT))

setup(ext_modules=ext_modules, cmdclass={"build_ext": CMakeBuild})
