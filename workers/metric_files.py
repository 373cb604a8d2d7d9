"""Prometheus multiprocess files whose blocks are allocated before they are mapped.

prometheus_client keeps a process's series in a file (``<kind>_<pid>.db`` in
``PROMETHEUS_MULTIPROC_DIR``, which is ``<state>/metrics``). It maps that file into memory and
grows it with ``truncate()``, which leaves it sparse. A later write to a page that has no block
yet needs one from the file system. When the file system is full (the state dir's disk, or a
small tmpfs) the kernel answers with SIGBUS, and the process dies: an HTTP worker lost its
request this way in the disk-fault test, and the supervisor would be lost the same way.

`install()` makes every such file allocate its blocks (``posix_fallocate``) when it is made
and when it grows. A full file system is then an `OSError` at that moment, which the caller
handles (a metric not recorded), never a signal later. It is called once per process, before
the first series is made, by whoever records in the multiprocess directory (`app.metrics`,
`workers.metrics`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from prometheus_client import mmap_dict, values

log = logging.getLogger(__name__)


def allocate(fd: int, size: int, old_size: int) -> None:
    """Give the file `size` bytes of blocks; on failure put its size back to `old_size`, so
    that no unallocated tail is left for a mapping to fault on."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.ftruncate(fd, old_size)
        raise


class _AllocatingFile:
    """The file object an `AllocatedMmapedDict` holds: its ``truncate()`` (how the dict
    grows) allocates the new blocks too."""

    def __init__(self, f):
        self._f = f

    def truncate(self, size: int) -> None:
        fd = self._f.fileno()
        allocate(fd, size, os.fstat(fd).st_size)  # posix_fallocate extends the file itself

    def __getattr__(self, name):
        return getattr(self._f, name)


class AllocatedMmapedDict(mmap_dict.MmapedDict):
    def __init__(self, filename, read_mode=False):
        if not read_mode:
            # made (or its blocks completed) before the parent maps it; the parent then finds
            # a file of that size and does not truncate it
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                allocate(fd, size or mmap_dict._INITIAL_MMAP_SIZE, size)
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)
        if not read_mode:
            self._f = _AllocatingFile(self._f)


def install() -> None:
    """Every multiprocess value made from now on in this process uses `AllocatedMmapedDict`
    (prometheus_client makes its files in `values.MultiProcessValue`, looking the class up
    in its module at that moment). Harmless without ``PROMETHEUS_MULTIPROC_DIR``: no file is
    made then."""
    values.MmapedDict = AllocatedMmapedDict


def recorded(update: Callable[[], None]) -> None:
    """Run a metric update. A file system too full for the metric files loses the update (one
    warning line each), not the request or the load it counts."""
    try:
        update()
    except OSError as exc:
        log.warning("a metric was not recorded (%s: the state dir's file system?)", exc)
