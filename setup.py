"""Build segfast: setuptools drives CMake + Ninja for the native extension segfast._C.

Environment switches:
  SEGFAST_CUDA=auto|1|0       build the CUDA kernels (auto: when torch has CUDA and nvcc is found)
  SEGFAST_CUDA_ARCHS="80;90"  CMake CUDA architectures (default: 80;90, plus PTX for the newest)
  SEGFAST_BUILD_TYPE=Release  CMake build type
  MAX_JOBS=N                  parallel compile jobs
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _find_nvcc():
    for candidate in (
        os.environ.get("CUDACXX"),
        os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "nvcc") if os.environ.get("CUDA_HOME") else None,
        shutil.which("nvcc"),
        "/usr/local/cuda/bin/nvcc",
    ):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _want_cuda(torch):
    choice = os.environ.get("SEGFAST_CUDA", "auto").lower()
    if choice not in ("auto", "1", "0", "on", "off", "true", "false"):
        raise RuntimeError(f"SEGFAST_CUDA must be auto, 1 or 0, got {choice!r}")
    nvcc = _find_nvcc()
    if choice in ("0", "off", "false"):
        return None
    if choice in ("1", "on", "true"):
        if torch.version.cuda is None:
            raise RuntimeError("SEGFAST_CUDA=1 but the installed torch has no CUDA")
        if nvcc is None:
            raise RuntimeError("SEGFAST_CUDA=1 but nvcc was not found (set CUDACXX or CUDA_HOME)")
        return nvcc
    return nvcc if (torch.version.cuda is not None and nvcc is not None) else None


def _cuda_include_dirs():
    """CUDA headers torch's own headers include (cusparse.h, cublas_v2.h) ship as pip packages."""
    dirs = []
    for entry in sys.path:
        nvidia = Path(entry) / "nvidia"
        if nvidia.is_dir():
            dirs += [str(p) for p in sorted(nvidia.glob("*/include")) if p.is_dir()]
    return dirs


def _tool(name):
    """cmake / ninja from their pip packages when installed (newer than the system's), else PATH."""
    try:
        module = __import__(name)
        path = Path(module.CMAKE_BIN_DIR if name == "cmake" else module.BIN_DIR) / name
        if path.is_file():
            return str(path)
    except (ImportError, AttributeError):
        pass
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: pip install {name}")
    return found


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import torch
        import torch.utils.cpp_extension as cpp

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        nvcc = _want_cuda(torch)
        cfg = os.environ.get("SEGFAST_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DSEGFAST_TORCH_INCLUDE_DIRS={';'.join(cpp.include_paths())}",
            f"-DSEGFAST_TORCH_LIBRARY_DIR={cpp.library_paths()[0]}",
            f"-DSEGFAST_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DSEGFAST_VERSION={self.distribution.get_version()}",
            f"-DSEGFAST_WITH_CUDA={'ON' if nvcc else 'OFF'}",
            "-G",
            "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
        ]
        if nvcc:
            args += [
                f"-DCMAKE_CUDA_COMPILER={nvcc}",
                f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('SEGFAST_CUDA_ARCHS', '80-real;90')}",
                f"-DSEGFAST_CUDA_INCLUDE_DIRS={';'.join(_cuda_include_dirs())}",
            ]
        print(f"segfast: building {'with' if nvcc else 'without'} CUDA kernels", flush=True)
        cmake = _tool("cmake")
        subprocess.run([cmake, str(ROOT), *args], cwd=build_dir, check=True)
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run([cmake, "--build", ".", "-j", jobs], cwd=build_dir, check=True)


setup(
    packages=find_packages(include=["segfast", "segfast.*"]) + ["segfast.kernels"],
    package_dir={"segfast.kernels": "kernels"},
    ext_modules=[CMakeExtension("segfast._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
