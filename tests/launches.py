"""Records the Triton launches of segfast.kernels modules: which kernel, with which grid, and
whether it ran inside segfast.kernels.device_guard for the inputs' device. The evidence, without a
GPU, that launches use the inputs' device and stay within CUDA's grid limits."""

import contextlib
from dataclasses import dataclass

import pytest

import segfast.kernels

# CUDA grid limits: x up to 2^31 - 1 blocks, y and z up to 65535
GRID_LIMITS = (2**31 - 1, 65535, 65535)


@dataclass
class Launch:
    kernel: str
    grid: tuple
    guarded_device: object  # the device of the tensor device_guard was entered with, or None


class Launches:
    """Patches device_guard and every kernel of `modules` (on `monkeypatch`). With run=False the
    kernels are not run, so huge grids can be checked on small inputs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *modules, run: bool = True):
        self.launches: list[Launch] = []
        self._guarded = []
        real_guard = getattr(segfast.kernels, "device_guard", contextlib.nullcontext)

        @contextlib.contextmanager
        def recording_guard(tensor):
            self._guarded.append(tensor.device)
            try:
                with real_guard(tensor):
                    yield
            finally:
                self._guarded.pop()

        monkeypatch.setattr(segfast.kernels, "device_guard", recording_guard, raising=False)
        for module in modules:
            for name in dir(module):
                kernel = getattr(module, name)
                if name.endswith("_kernel") and hasattr(kernel, "__getitem__"):
                    monkeypatch.setattr(module, name, _Proxy(self, name, kernel, run))

    def record(self, name, grid, meta):
        grid = grid(meta) if callable(grid) else grid
        self.launches.append(Launch(name, tuple(grid), self._guarded[-1] if self._guarded else None))


class _Proxy:
    def __init__(self, owner, name, kernel, run):
        self.owner, self.name, self.kernel, self.run = owner, name, kernel, run

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.owner.record(self.name, grid, meta)
            if self.run:
                return self.kernel[grid](*args, **meta)

        return launch
