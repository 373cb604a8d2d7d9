"""The instances the supervisor knows, and the only code that changes their state.

Every transition of the diagram in `workers.records` is a method here (`loaded`, `retiring`,
`gone`), and all of them go through `_move`, which checks it against `TRANSITIONS`, writes the
table and wakes everyone waiting on `changed`. Rows appear with `add` (a load begins) or
`adopt` (found alive at start).

The registry, not the file, is the truth while the supervisor runs. A table write that fails
(the state dir read-only or full) leaves the previous file intact; the registry goes on, `flush`
(called by the main loop) retries, and new loads are refused with 503 `unavailable` until a
write succeeds again: a load must not start that the table cannot record.

Lock order: `Registry.lock` before `InstanceTable.lock` (a file lock). Nothing slow happens
under `Registry.lock`: no RPC to an instance, no process wait, no socket write.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from workers import metrics
from workers.errors import LmhostError, Unavailable, to_wire
from workers.records import TRANSITIONS, InstanceRecord, State, failure_row
from workers.table import InstanceTable, TableWriteFailed
from workers.supervisor.processes import InstanceProcess

log = logging.getLogger("workers.supervisor")

FAILURES_KEPT = 20  # the table keeps this many recent failures, for the listing and requests


@dataclass(eq=False)
class Instance(InstanceRecord):
    """An instance as the supervisor tracks it: its record, plus what only this process has."""

    process: InstanceProcess | None = field(default=None, repr=False)
    follower: threading.Thread | None = field(default=None, repr=False)  # reads its events
    error: LmhostError | None = None  # why its load failed (what the load answers)
    cancelled: bool = False           # unloaded while loading: its death was asked for
    # every progress it reported while loading, rising (at most ~100: it reports in steps of
    # 1%); each waiting caller sends each step, so a quick load's steps are not lost when the
    # caller's thread wakes after several of them
    progress_steps: list[float] = field(default_factory=lambda: [0.0], repr=False)


class Registry:
    def __init__(self, table: InstanceTable, wall_clock: Callable[[], float] = time.time):
        self.table = table
        self.wall_clock = wall_clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.instances: dict[str, Instance] = {}  # guarded by lock
        self.failures: list[dict] = []            # guarded by lock; newest last
        self.on_load_over: Callable[[], None] = lambda: None  # called under lock
        self.on_gone: Callable[[int | None], None] = lambda pid: None  # a process gone; under lock
        self.unwritable: str | None = None        # guarded by lock; why the last write failed

    # -- reading -------------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        with self.lock:
            return [i.to_row() for i in self.instances.values()]

    def pids(self) -> list[int]:
        """The processes of every instance (loading, loaded or leaving) that has one."""
        with self.lock:
            return [i.pid for i in self.instances.values() if i.pid]

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until `ready()`, checked under the lock at every change."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def wait_gone(self, instance: Instance, timeout: float) -> bool:
        return self.wait_until(lambda: instance.state is State.GONE, timeout)

    # -- rows that appear ----------------------------------------------------------------------

    def add(self, instance: Instance) -> None:
        """A load begins: the row appears as LOADING (its identifier is taken from now on).
        Caller holds the lock and has checked the identifier is free. Raises `Unavailable`
        when the table cannot be written."""
        self.instances[instance.id] = instance
        if not self.write():
            del self.instances[instance.id]
            raise Unavailable(f"{self.unwritable}; loads are refused until the state dir can be "
                              "written again")

    def adopt(self, instance: Instance) -> bool:
        """An instance found alive at start, LOADED. False if its id is taken already."""
        with self.lock:
            if instance.id in self.instances:
                return False
            self.instances[instance.id] = instance
            self.write()
            return True

    def restore_failures(self, failures: list[dict]) -> None:
        with self.lock:
            self.failures = failures[-FAILURES_KEPT:]

    # -- the transitions -----------------------------------------------------------------------

    def loaded(self, instance: Instance, socket: str, load_time: float,
               measured: dict | None = None) -> None:
        """LOADING -> LOADED: the instance reported "loaded" and serves its socket; `measured`
        is its memory then."""
        with self.lock:
            if instance.state is State.LOADING:
                self._move(instance, State.LOADED, progress=1.0, socket=socket,
                           load_time=load_time, last_used=self.wall_clock(), measured=measured)

    def retiring(self, instance: Instance, why: str) -> bool:
        """LOADED -> UNLOADING, for an unload, a TTL expiry or an eviction. False when the
        instance is not loaded (still loading, or leaving already)."""
        with self.lock:
            if instance.state is not State.LOADED:
                return False
            log.info("instance %r retires: %s", instance.id, why)
            self._move(instance, State.UNLOADING)
            return True

    def gone(self, instance: Instance, exit_status: str = "", error: LmhostError | None = None) -> None:
        """-> GONE: the row goes. With `error`, the instance ended unasked (a failed load, a
        crash): the failure is recorded, and a load waiting for it raises `error`."""
        with self.lock:
            if instance.state is State.GONE:
                return
            if error is not None:
                self.failures.append(failure_row(instance, self.wall_clock(), exit_status,
                                                 to_wire(error)))
                del self.failures[:-FAILURES_KEPT]
            self._move(instance, State.GONE, error=error or instance.error)

    def _move(self, instance: Instance, new: State, **changes) -> None:
        """The one place an instance changes state. Caller holds the lock."""
        if new not in TRANSITIONS[instance.state]:
            raise RuntimeError(f"instance {instance.id!r}: {instance.state.value} -> "
                               f"{new.value} is not allowed")
        for name, value in changes.items():
            setattr(instance, name, value)
        log.info("instance %r: %s -> %s", instance.id, instance.state.value, new.value)
        if instance.state is State.LOADING:
            self.on_load_over()
        metrics.transition(instance, instance.state, new)
        instance.state = new
        if new is State.GONE:
            self.instances.pop(instance.id, None)
            self.on_gone(instance.pid)
        self.write()
        self.changed.notify_all()

    # -- progress (not a state) ----------------------------------------------------------------

    def progress(self, instance: Instance, progress: float) -> None:
        with self.lock:
            if instance.state is not State.LOADING or progress <= instance.progress:
                return
            crossed = int(progress * 10) != int(instance.progress * 10)
            instance.progress = progress
            instance.progress_steps.append(progress)
            if crossed:  # the table shows progress in steps of 10%, written without fsync
                self.write(durable=False)
            self.changed.notify_all()

    def write(self, durable: bool = True) -> bool:
        """Replace the table with what the registry holds; False when that failed (logged once
        per outage). Caller holds self.lock (lock order: registry lock, then the file lock)."""
        try:
            self.table.write([i.to_row() for i in self.instances.values()], durable, self.failures)
        except TableWriteFailed as exc:
            if self.unwritable is None:
                log.error("%s: new loads are refused until it can be written again", exc)
            self.unwritable = str(exc)
            return False
        if self.unwritable is not None:
            log.info("the instance table can be written again")
            self.unwritable = None
        return True

    def flush(self) -> None:
        """Write the table again if the last write failed (the main loop calls this)."""
        with self.lock:
            if self.unwritable is not None:
                self.write()
