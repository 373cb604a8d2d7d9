"""Model weights in transparent huge pages, on a host without GPUs (``LMHOST_HUGE_PAGES``).

llama.cpp maps a GGUF file and computes from the mapping: on a CPU the weights are file pages
in 4 KiB page-table entries, and decoding one token streams all of them. In a VM each TLB miss
walks two levels of page tables, so on this project's hosts a token costs 4-5 % more than from
2 MiB pages (README: Performance, "Huge pages"). So an instance on a host without GPUs loads
the weights without the mapping (``use_mmap=False``: llama.cpp reads the file into memory it
allocates) and its process runs with glibc's ``glibc.malloc.hugetlb=1``, which makes malloc
advise transparent huge pages (``MADV_HUGEPAGE``) for the large blocks it maps: those blocks are
the weights, the KV cache and the compute buffers.

What it costs: a load reads the file (from the page cache, a few ms per 100 MB) rather than
mapping it; two instances of one file no longer share its pages; weights in anonymous memory
cannot be dropped under memory pressure and read again, as file pages can (admission already
counts them as RAM taken). Hosts with GPUs keep the mapping: their loads were measured that way
(`bench/estimate_accuracy.py --gpu`), and the layers there do not need it.

The decision is pure (`weights_in_huge_pages`); the kernel's setting is read once, at the
supervisor's start (`thp_mode`). With THP ``never`` (or no THP in the kernel) anonymous memory
would gain nothing and a load would be slower, so the mapping stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
USABLE_MODES = ("always", "madvise")  # "never": the kernel gives no huge pages to anyone
MALLOC_TUNABLE = "glibc.malloc.hugetlb"
MALLOC_ADVISE = "1"  # 1: madvise(MADV_HUGEPAGE) after mmap; 2 would need reserved hugetlbfs pages


def thp_mode(path: Path = THP_ENABLED) -> str:
    """The kernel's transparent-huge-page mode, the bracketed word of `path`
    (``always [madvise] never`` -> ``madvise``); ``unavailable`` without THP."""
    try:
        text = path.read_text()
    except OSError:
        return "unavailable"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unavailable"


def host_allows(setting: bool, mode: str) -> bool:
    """Whether instances on this host may keep their weights in huge pages: lmhost's setting is
    on and the kernel hands huge pages to a process that asks."""
    return setting and mode in USABLE_MODES


def weights_in_huge_pages(allowed: bool, gpus: int) -> bool:
    """Whether a load reads its weights into memory of its own (``use_mmap=False``) rather
    than mapping the file: where the host allows it (`host_allows`) and has no GPUs."""
    return allowed and gpus == 0


def resident_in_huge_pages(pid: int | str = "self") -> int:
    """Bytes of process `pid` in anonymous transparent huge pages (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
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
    if not any(t.split("=", 1)[0] == MALLOC_TUNABLE for t in tunables):
        tunables.append(f"{MALLOC_TUNABLE}={MALLOC_ADVISE}")
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env
