"""Memory readings: what the host has free, and what each instance process uses.

GPU mode (NVML, `workers.nvml`, initialised once per process): each GPU's name, total, free
and used memory, and each process's use of it. CPU mode — no driver, no GPU, or any NVML
error, at start or later (one log line, never a crash): none of that. RAM is read in both
modes from ``/proc/meminfo``, and each instance's RSS from ``/proc/<pid>/status``.

A reading's ``free`` of a pool is what a new load could take from it now:

- ``gpu``: the GPUs' free memory, together (llama.cpp spreads layers over all of them);
- ``ram``: MemAvailable less the file pages that instance processes have mapped. The kernel
  counts page cache as available, and where a model's weights are mapped from its file (a GPU
  host, or ``LMHOST_HUGE_PAGES=0``), without that correction a loaded model would still look
  free. Weights read into the process's own memory (`workers.hugepages`) are out of
  MemAvailable already; the page cache that reading left is available, rightly.

After an unload, GPU memory comes back to the reading a little later (NVML lags by up to a
second); RAM is back once the process is reaped. `gone` (the registry calls it whenever an
instance's row drops) queues the process, `before_stop` notes a baseline when lmhost asks an
instance on a GPU to stop, and `settle` — called before every admission — waits (bounded by
`RELEASE_WAIT`) until the reading shows its memory back.

Lock order: the registry's lock before `Memory._lock` (`gone` is called under the former);
readings take the registry's lock (for the pids) and are never taken under `Memory._lock`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from workers import admission
from workers.nvml import GpuReading, Nvml, NvmlError

log = logging.getLogger("workers.memory")

RELEASE_WAIT = 5.0   # seconds the next admission waits for an unload's memory to show free
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class ProcessUse:
    ram: int = 0        # resident (RSS), bytes
    ram_file: int = 0   # of which file pages (the mapped model)
    ram_peak: int = 0   # the highest RSS so far (VmHWM)
    gpu: int = 0        # on every GPU together (NVML)

    def to_json(self) -> dict:
        return {"ram_bytes": self.ram, "gpu_bytes": self.gpu, "total_bytes": self.ram + self.gpu,
                "ram_peak_bytes": self.ram_peak}

    def pools(self) -> dict[str, int]:
        return {"ram": self.ram, "gpu": self.gpu}


@dataclass(frozen=True)
class Reading:
    gpus: tuple[GpuReading, ...]
    ram_total: int
    ram_available: int
    processes: dict[int, ProcessUse] = field(default_factory=dict)  # instance pid -> use

    @property
    def mode(self) -> str:
        return "gpu" if self.gpus else "cpu"

    def pools(self) -> dict[str, admission.Pool]:
        """The memory pools a load draws from, with what is free in each by this reading."""
        mapped = sum(use.ram_file for use in self.processes.values())
        pools = {"ram": admission.Pool("ram", self.ram_total, max(self.ram_available - mapped, 0))}
        if self.gpus:
            pools["gpu"] = admission.Pool("gpu", sum(g.total for g in self.gpus),
                                          sum(g.free for g in self.gpus))
        return pools


@dataclass(eq=False)
class Release:
    """An instance process that has gone, whose memory the reading may not show free yet.
    With a baseline (the GPUs' free memory and its own use there just before it was asked to
    stop), the memory is back once most of that use shows free; either way, once the
    process is no longer listed (NVML's process list; /proc)."""
    pid: int
    deadline: float
    baseline: tuple[int, int] | None = None  # (GPU free before, its GPU use)


def read_meminfo(path: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes."""
    values = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    return values["MemTotal"], values.get("MemAvailable", 0)


def read_process(path: Path) -> ProcessUse | None:
    """RSS, file pages and peak RSS from /proc/<pid>/status; None when the process is gone."""
    try:
        text = path.read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    if "VmRSS" not in values:  # a zombie: its memory is gone already
        return None
    return ProcessUse(ram=values["VmRSS"], ram_file=values.get("RssFile", 0),
                      ram_peak=values.get("VmHWM", values["VmRSS"]))


class Memory:
    """Readings for one process (the supervisor). `pids()` gives the instance processes to
    read; `nvml` is the seam for a fake ``pynvml`` (tests)."""

    def __init__(self, nvml: Nvml | None = None, pids: Callable[[], Iterable[int]] = tuple,
                 proc: Path = Path("/proc"), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.nvml = nvml or Nvml()
        self.pids = pids
        self.proc = proc
        self.clock = clock
        self.sleep = sleep
        self.cpu_reason: str | None = None  # why this process is in CPU mode, once known
        self._lock = threading.Lock()
        self._pending: list[Release] = []   # guarded by _lock
        self._baselines: dict[int, tuple[int, int]] = {}  # pid -> (GPU free, GPU use); _lock

    # -- readings ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start NVML (once per process) and say which mode this host is in (one log line)."""
        gpus = self._read_gpus()
        if gpus:
            log.info("memory: GPU mode, %s", "; ".join(
                f"GPU {g.index} {g.name}: {g.total / 2**30:.1f} GiB" for g in gpus))

    def gpu_count(self) -> int:
        """GPUs a load may use: 0 in CPU mode."""
        return len(self._read_gpus())

    def _read_gpus(self) -> tuple[GpuReading, ...]:
        if self.cpu_reason is not None:
            return ()
        if not self.nvml.available():
            self._cpu_mode(self.nvml.reason or "NVML unavailable: CPU mode")
            return ()
        try:
            gpus = tuple(self.nvml.read())
        except NvmlError as exc:  # mid-run: readings cannot be trusted any more
            self._cpu_mode(f"{exc}: CPU mode from now on", logging.WARNING)
            return ()
        if not gpus:
            self._cpu_mode("NVML sees no GPU: CPU mode")
        return gpus

    def _cpu_mode(self, reason: str, level: int = logging.INFO) -> None:
        if self.cpu_reason is None:
            self.cpu_reason = reason
            log.log(level, "memory: %s", reason)

    def read(self) -> Reading:
        """The GPUs (none in CPU mode), RAM, and every instance process's use now."""
        gpus = self._read_gpus()
        total, available = read_meminfo(self.proc / "meminfo")
        on_gpu: dict[int, int] = {}
        for gpu in gpus:
            for pid, used in gpu.processes.items():
                on_gpu[pid] = on_gpu.get(pid, 0) + used
        processes = {}
        for pid in set(self.pids()):
            use = self._process_use(pid, on_gpu.get(pid, 0))
            if use is not None:
                processes[pid] = use
        return Reading(gpus, total, available, processes)

    def use(self, pid: int) -> ProcessUse | None:
        """One process's use now (a just-loaded instance's, for its row): `read` less the
        RAM totals and the other processes."""
        return self._process_use(pid, sum(gpu.processes.get(pid, 0) for gpu in self._read_gpus()))

    def _process_use(self, pid: int, on_gpu: int) -> ProcessUse | None:
        use = read_process(self.proc / str(pid) / "status")
        return None if use is None else ProcessUse(use.ram, use.ram_file, use.ram_peak, on_gpu)

    # -- unloads: wait until the reading shows the memory back ----------------------------------

    def before_stop(self, pid: int | None) -> None:
        """Note, before an instance on a GPU is asked to stop, the GPUs' free memory and its
        own use there: the baseline its release is measured against (the driver frees it a
        little after the process exits). An instance in RAM needs none: the kernel frees a
        process's memory before it can be reaped, so gone from /proc is back (its file pages
        stay cached, and MemAvailable counted them all along: waiting for them to show free
        would wait for nothing)."""
        if not pid or not self._read_gpus():  # CPU mode: nothing to note, nothing to read
            return
        reading = self.read()
        use = reading.processes.get(pid)
        if use is not None and use.gpu and reading.gpus:
            with self._lock:
                self._baselines[pid] = (reading.pools()["gpu"].free, use.gpu)

    def forget(self, pid: int | None) -> None:
        """The instance was asked to stop and would not (serving): no baseline to keep."""
        with self._lock:
            self._baselines.pop(pid, None)

    def gone(self, pid: int | None) -> None:
        """An instance process has gone (any way: unload, eviction, TTL, crash): the next
        admission waits for its memory (`settle`). Cheap: called under the registry's lock."""
        if not pid:
            return
        with self._lock:
            self._pending.append(Release(pid, self.clock() + RELEASE_WAIT,
                                         self._baselines.pop(pid, None)))

    def _back(self, release: Release, reading: Reading) -> bool:
        if any(release.pid in gpu.processes for gpu in reading.gpus):
            return False
        if release.baseline is None:  # in RAM, or no baseline: gone from /proc is enough
            return read_process(self.proc / str(release.pid) / "status") is None
        free_before, size = release.baseline
        gpus = reading.pools().get("gpu")
        return gpus is not None and admission.memory_back(free_before, gpus.free, size)

    def settle(self) -> Reading | None:
        """Wait until every recent unload's memory shows free in the reading, each at most
        until its deadline; one that never shows is logged and forgotten. Returns the reading
        that showed it (taken last, so the caller need not read again), or None when nothing
        was pending."""
        reading = None
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return reading
            reading = self.read()
            now = self.clock()
            done = []
            for release in pending:
                back = self._back(release, reading)
                if not back and now >= release.deadline:
                    log.warning("memory: the %s bytes of instance process %d not shown free "
                                "after %.0f s; admitting anyway",
                                release.baseline[1] if release.baseline else "?",
                                release.pid, RELEASE_WAIT)
                if back or now >= release.deadline:
                    done.append(release)
            with self._lock:
                self._pending = [r for r in self._pending if all(r is not d for d in done)]
            if len(done) < len(pending):
                self.sleep(POLL_INTERVAL)
