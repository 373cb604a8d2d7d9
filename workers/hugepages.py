"""Model weights in transparent huge pages, on a host without GPUs (``LMHOST_HUGE_PAGES``).

llama.cpp maps a GGUF file and computes from the mapping: on a CPU the weights are file pages
in 4 KiB page-table entries, and decoding one token reads all of them. From 2 MiB pages a
token costs 2.5-5 % less on this project's hosts (VMs, where a TLB miss also walks the
hypervisor's tables; README: Performance, "Huge pages"). So an instance on a host without GPUs
loads the weights without the mapping (``use_mmap=False``: llama.cpp reads the file into memory
it allocates) and its process runs with glibc's ``glibc.malloc.hugetlb=1``, which makes malloc
advise transparent huge pages (``MADV_HUGEPAGE``) for the large blocks it maps: the weights,
the KV cache and the compute buffers.

What it costs: a load reads the file (from the page cache) rather than mapping it; two
instances of one file no longer share its pages; weights in anonymous memory cannot be dropped
under memory pressure and read again, as file pages can (admission counts them as RAM taken
either way, and a load that ``LMHOST_GUARDRAIL=off`` lets in although it does not fit stays
mapped: `workers.loadconfig.LoadPlan.mapped`).

Where nothing would put the weights in huge pages, reading them only costs (4 KiB anonymous
pages decode no faster than mapped ones, and load slower), so the file stays mapped: THP
``never`` or absent; THP ``madvise`` with nobody to advise (glibc before 2.35, which has no
such tunable, another libc, or an operator's own ``glibc.malloc.hugetlb=0``); a host with GPUs,
whose loads were measured mapped (`bench/estimate_accuracy.py --gpu`).

The decisions are pure (`host_allows`, `weights_in_huge_pages`); the kernel's mode and glibc's
version are read by the supervisor's main, the GPUs counted once at its start
(`Supervisor.decide_huge_pages`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MALLOC_TUNABLE = "glibc.malloc.hugetlb"
MALLOC_ADVISE = "1"      # madvise(MADV_HUGEPAGE) after mmap (2 would take reserved hugetlbfs
                         # pages, and fall back to 4 KiB ones where none are reserved)
TUNABLE_SINCE = (2, 35)  # the glibc release that added glibc.malloc.hugetlb


def thp_mode(path: Path = THP_ENABLED) -> str:
    """The kernel's transparent-huge-page mode, the bracketed word of `path`
    (``always [madvise] never`` -> ``madvise``); ``unavailable`` without THP."""
    try:
        text = path.read_text()
    except OSError:
        return "unavailable"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unavailable"


def libc_version() -> str:
    """``glibc 2.36``-style, or "" where the C library is not glibc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return ""


def _glibc_at_least(libc: str, version: tuple[int, int]) -> bool:
    name, _, number = libc.partition(" ")
    try:
        return name == "glibc" and tuple(int(p) for p in number.split(".")[:2]) >= version
    except ValueError:
        return False


def operator_tunable(tunables: str) -> str | None:
    """The operator's own ``glibc.malloc.hugetlb`` in a ``GLIBC_TUNABLES`` value, if any."""
    for tunable in tunables.split(":"):
        name, _, value = tunable.partition("=")
        if name == MALLOC_TUNABLE:
            return value
    return None


def host_allows(setting: bool, mode: str, libc: str, tunables: str = "") -> bool:
    """Whether instances on this host may keep their weights in huge pages: lmhost's setting
    is on and anonymous memory gets them, from the kernel (THP ``always``) or by malloc's
    advice (THP ``madvise``, a glibc with the tunable, not set otherwise by the operator)."""
    if not setting or mode not in ("always", "madvise"):
        return False
    if mode == "always":
        return True
    own = operator_tunable(tunables)
    return _glibc_at_least(libc, TUNABLE_SINCE) and own in (None, MALLOC_ADVISE)


def host_allows_here(setting: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """`host_allows` with this host's kernel mode and C library, and `environ`'s tunables."""
    return host_allows(setting, thp_mode(), libc_version(), environ.get("GLIBC_TUNABLES", ""))


def decided_here(setting: bool = True) -> bool:
    """What a supervisor started here would decide (`Supervisor.decide_huge_pages`), NVML
    asked for the GPUs the same way: for tests and benchmarks that load as instances do."""
    from workers.memory import Memory  # NVML: only where a caller asks
    memory = Memory()
    memory.start()
    return weights_in_huge_pages(host_allows_here(setting), memory.gpu_count())


def weights_in_huge_pages(allowed: bool, gpus: int) -> bool:
    """Whether loads read their weights into memory of their own (``use_mmap=False``) rather
    than map the file: where the host allows it (`host_allows`) and has no GPUs."""
    return allowed and gpus == 0


def describe(decided: bool, setting: bool, mode: str, gpus: int) -> str:
    """The supervisor's one log line on it."""
    if decided:
        return f"weights: read into huge pages (THP {mode})"
    why = ("LMHOST_HUGE_PAGES=0" if not setting else f"{gpus} GPU(s)" if gpus
           else f"THP {mode}, nothing to advise huge pages" if mode == "madvise"
           else f"THP {mode}")
    return f"weights: mapped from the model files ({why})"


def resident_in_huge_pages(pid: int | str = "self", proc: Path = Path("/proc")) -> int:
    """Bytes of process `pid` in anonymous transparent huge pages (0 when unreadable)."""
    try:
        with open(proc / str(pid) / "smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def environment(environ: Mapping[str, str]) -> dict:
    """`environ` with glibc's malloc told to advise huge pages, added to any tunables the
    operator set; an operator's own ``glibc.malloc.hugetlb`` is kept as it is."""
    env = dict(environ)
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if operator_tunable(":".join(tunables)) is None:
        tunables.append(f"{MALLOC_TUNABLE}={MALLOC_ADVISE}")
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env
