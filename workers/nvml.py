"""GPU readings through NVML: the `pynvml` module of the `nvidia-ml-py` package.

`Nvml` initialises NVML once (the first reading) and keeps it for the life of the process. No
driver, no library, or any NVML error at init: the host is in CPU mode, and `reason` says why
(the caller logs it once); nothing raises. An NVML error in a later reading raises
`NvmlError`, and the caller decides what a missing reading means.

The module is passed in (`Nvml(module)`), so tests inject a fake `pynvml` that implements
exactly the functions called here; by default it is imported on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class NvmlError(RuntimeError):
    """A reading failed after NVML had started."""


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    total: int                   # bytes
    free: int
    used: int                    # by processes (v2: the driver's reserve is not in it)
    reserved: int = 0            # the driver's own reserve (v2 memory info only)
    processes: dict[int, int] = field(default_factory=dict)  # pid -> bytes used on this GPU


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    def __init__(self, module=None):
        self._module = module
        self._lock = threading.Lock()
        self._started = False
        self.reason: str | None = None  # why the host is in CPU mode, once known
        self.driver_version: str | None = None

    def available(self) -> bool:
        """Start NVML if not yet tried; False (CPU mode) when it cannot run here."""
        with self._lock:
            if not self._started and self.reason is None:
                self._start()
            return self._started

    def _start(self) -> None:
        try:
            if self._module is None:
                import pynvml
                self._module = pynvml
            self._module.nvmlInit()
            self.driver_version = _text(self._module.nvmlSystemGetDriverVersion())
            self._started = True
        except Exception as exc:  # noqa: BLE001 - no driver, no library, a broken install: CPU mode
            self.reason = f"NVML unavailable ({type(exc).__name__}: {exc}): CPU mode"

    def read(self) -> list[GpuReading]:
        """Every GPU's memory now; [] in CPU mode. Raises `NvmlError` when NVML fails."""
        if not self.available():
            return []
        nv = self._module
        try:
            return [self._read_one(nv, index) for index in range(nv.nvmlDeviceGetCount())]
        except Exception as exc:  # noqa: BLE001 - pynvml raises NVMLError subclasses
            raise NvmlError(f"NVML reading failed: {exc}") from exc

    @staticmethod
    def _read_one(nv, index: int) -> GpuReading:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        reserved = 0
        try:  # v2 keeps the driver's reserve out of `used` (NOTES.md: ~615 MiB on an H200)
            memory = nv.nvmlDeviceGetMemoryInfo(handle, version=nv.nvmlMemory_v2)
            reserved = int(memory.reserved)
        except (AttributeError, TypeError, nv.NVMLError):
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
        processes = {}
        for process in nv.nvmlDeviceGetComputeRunningProcesses(handle):
            used = process.usedGpuMemory
            processes[int(process.pid)] = int(used) if used is not None else 0
        return GpuReading(index=index, name=_text(nv.nvmlDeviceGetName(handle)),
                          total=int(memory.total), free=int(memory.free), used=int(memory.used),
                          reserved=reserved, processes=processes)
