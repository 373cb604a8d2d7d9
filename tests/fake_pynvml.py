"""A fake ``pynvml`` (package nvidia-ml-py) for hosts without an NVIDIA GPU.

`make(...)` returns a module object that has exactly the names `workers.nvml` uses — any other
attribute is an AttributeError, as for a function the real module lacks — so a test that
passes it to `Nvml(module)`, or puts it in ``sys.modules["pynvml"]``, exercises the same code
as the real one. Its GPUs are plain objects the test changes between readings (processes come
and go); `fail(error)` makes every later call raise, as a GPU that fell off the bus does.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

GiB = 1 << 30


class NVMLError(Exception):
    """pynvml's base error class (its subclasses carry an error code)."""


@dataclass
class FakeGpu:
    name: str = "NVIDIA H200"
    total: int = 140 * GiB
    reserved: int = 615 << 20            # the driver's own (v2 reports it apart, v1 in `used`)
    processes: dict[int, int] = field(default_factory=dict)  # pid -> bytes
    other: int = 0                       # used by processes NVML does not list to us

    @property
    def used(self) -> int:
        return sum(self.processes.values()) + self.other


def make(gpus: list[FakeGpu], *, init_error: Exception | None = None, v2: bool = True,
         driver: str = "580.159") -> types.ModuleType:
    state = {"error": None}
    module = types.ModuleType("pynvml")

    def call(fn):
        def wrapped(*args, **kwargs):
            if state["error"] is not None:
                raise state["error"]
            return fn(*args, **kwargs)
        return wrapped

    def nvmlInit():
        if init_error is not None:
            raise init_error

    def memory_info(handle, version=None):
        gpu = gpus[handle]
        if version is not None:
            if not v2:
                raise NVMLError("Not Supported")
            return types.SimpleNamespace(total=gpu.total, reserved=gpu.reserved, used=gpu.used,
                                         free=gpu.total - gpu.reserved - gpu.used)
        used = gpu.used + gpu.reserved
        return types.SimpleNamespace(total=gpu.total, used=used, free=gpu.total - used)

    def processes(handle):
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used)
                for pid, used in gpus[handle].processes.items()]

    module.NVMLError = NVMLError
    module.nvmlMemory_v2 = 0x02000028
    module.nvmlInit = nvmlInit
    module.nvmlSystemGetDriverVersion = call(lambda: driver)
    module.nvmlDeviceGetCount = call(lambda: len(gpus))
    module.nvmlDeviceGetHandleByIndex = call(lambda index: index)
    module.nvmlDeviceGetName = call(lambda handle: gpus[handle].name.encode())
    module.nvmlDeviceGetMemoryInfo = call(memory_info)
    module.nvmlDeviceGetComputeRunningProcesses = call(processes)
    module.fail = lambda error: state.update(error=error)  # test control, not pynvml's
    return module
