"""Deaths: every instance process is watched, reaped, and explained when it ended unasked; at
start, the instances an earlier supervisor left alive are adopted (DESIGN invariant 2).

The watch is a pidfd per process (readable once it exits; it works for processes that are not
our children, such as adopted ones), so a death is noticed at once, without polling.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
from pathlib import Path

from workers import procs
from workers.crashes import exit_status, explain_crash
from workers.errors import InstanceCrashed, LmhostError, ModelLoadFailed
from workers.protocol import ProtocolError, call
from workers.records import State
from workers.statedir import StateDir
from workers.supervisor.processes import AdoptedProcess
from workers.supervisor.registry import Instance, Registry
from workers.table import TableUnreadable

log = logging.getLogger("workers.supervisor")

FOLLOWER_JOIN = 5.0  # seconds to wait for a dying instance's last events (its failure reason)


class DeathWatch:
    def __init__(self, registry: Registry, state_dir: StateDir, rebuild_advice: str):
        self.registry = registry
        self.state_dir = state_dir
        self.rebuild_advice = rebuild_advice  # for SIGILL: how to rebuild llama.cpp here
        self.selector = selectors.DefaultSelector()
        self._queue: list[tuple[int, Instance]] = []  # guarded by _lock
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def watch(self, instance: Instance) -> None:
        """Follow `instance`'s process from now on. Cheap: may be called under the registry's
        lock (the selector is only touched by `run`'s thread)."""
        fd = instance.process.exit_fd() if instance.process is not None else None
        if fd is None:  # gone already, or not ours to watch
            return
        with self._lock:
            self._queue.append((fd, instance))
        os.write(self._wake_w, b"x")

    def run(self) -> None:
        """Reap each process as it exits; runs for the life of the supervisor (shutdown needs
        it most: it is how unloads learn that their instance has gone)."""
        while True:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                self.selector.unregister(key.fd)
                os.close(key.fd)
                self.reap(key.data)
            with self._lock:
                queued, self._queue = self._queue, []
            for fd, instance in queued:
                self.selector.register(fd, selectors.EVENT_READ, instance)

    def reap(self, instance: Instance) -> None:
        code = instance.process.reap()  # None for an adopted process: not our child
        if instance.follower is not None:
            instance.follower.join(timeout=FOLLOWER_JOIN)  # a "failed" event says why
        with self.registry.lock:
            if instance.state is State.GONE:
                return
            asked = instance.state is State.UNLOADING or instance.cancelled
            error = None if asked else instance.error or self._crash_error(instance, code)
        if asked:  # stopped on request: its log has nothing to explain (failures keep theirs)
            log.info("instance %r (pid %s) exited with %s", instance.id, instance.pid,
                     exit_status(code))
            self.state_dir.log(instance.handle).unlink(missing_ok=True)
        else:
            log.warning("%s", error.message)
        self.registry.gone(instance, exit_status(code), error)

    def _crash_error(self, instance: Instance, code: int | None) -> LmhostError:
        """An instance that died unasked: named by its signal, with the tail of its stderr and,
        for SIGILL, the likely cause and the fix (workers.crashes)."""
        if instance.state is State.LOADING:
            subject = f"instance {instance.id!r} loading {Path(instance.path).name}"
        else:
            subject = f"instance {instance.id!r} of model {instance.model_key!r}"
        message = explain_crash(subject, code, self.state_dir.log_tail(instance.handle),
                                rebuild=self.rebuild_advice)
        if instance.state is State.LOADING:
            return ModelLoadFailed(message, param="model")
        return InstanceCrashed(message, code="instance_crashed")


def adopt_instances(registry: Registry, state_dir: StateDir, watch: DeathWatch) -> None:
    """Reconcile the table with what is alive: live loaded instances are adopted, dead rows
    dropped, half-done loads killed (their supervisor is gone, so they cannot finish). An
    unreadable table is rebuilt from the instances' sockets."""
    try:
        rows = registry.table.read()
        registry.restore_failures(registry.table.read_failures())
    except TableUnreadable as exc:
        log.warning("instance table unreadable (%s): rebuilding it from live instances", exc)
        rows = []
    known_sockets = set()
    for row in rows:
        pid, started = row.get("pid"), row.get("started")
        if not procs.same_process(pid, started):
            log.info("dropping row of instance %r: its process is gone", row.get("id"))
            continue
        if row.get("state") != State.LOADED.value:
            log.info("stopping instance %r: it was %s when its supervisor died",
                     row.get("id"), row.get("state"))
            procs.signal_process(pid, started, signal.SIGKILL)
            continue
        known_sockets.add(row.get("socket"))
        _adopt(registry, watch, row.get("socket"), pid, started)
    for sock in sorted(state_dir.instances.glob("*.sock")):
        if str(sock) not in known_sockets:
            _adopt(registry, watch, str(sock), None, None)
    with registry.lock:
        registry.write()


def _adopt(registry: Registry, watch: DeathWatch, socket_path: str | None, pid: int | None,
           started: int | None) -> None:
    try:
        info = call(socket_path, {"op": "info"}, timeout=2.0)
    except (OSError, ProtocolError, TypeError):
        if pid is not None:
            log.warning("instance at %s does not answer: stopping pid %s", socket_path, pid)
            procs.signal_process(pid, started, signal.SIGKILL)
        elif socket_path:
            Path(socket_path).unlink(missing_ok=True)  # stale socket of a dead instance
        return
    started = started if pid == info.get("pid") else procs.start_time(info["pid"])
    if started is None:
        return
    instance = Instance(
        id=info["instance_id"], handle=info["handle"], model_key=info["model_key"],
        variant=info["variant"], path=info["path"], type=info["type"],
        load_config=info["load_config"], ttl=info.get("ttl"), created=info["created"],
        estimate=info.get("estimate") or {}, measured=info.get("measured"),
        state=State.LOADED, progress=1.0,
        pid=info["pid"], started=started, socket=info["socket"],
        load_time=info.get("load_time_seconds"), last_used=info["created"],
        jit=bool(info.get("jit")), model_entry=info.get("model_entry") or {},
        process=AdoptedProcess(info["handle"], info["pid"], started))
    if registry.adopt(instance):
        watch.watch(instance)
        log.info("adopted instance %r (pid %s)", instance.id, instance.pid)
