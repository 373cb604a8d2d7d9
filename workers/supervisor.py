"""The supervisor: the only process that spawns, stops or evicts instances, and the only writer
of the instance table (DESIGN invariant 1). Run as ``python -m workers`` (see `__main__`).

Instance states, one `InstanceRecord` each::

    spawn ─► LOADING ──"loaded" event──► LOADED ──unload / TTL expiry──► UNLOADING
               │                            │                               │
               └─ failed, died, unloaded ───┴──────────── died ─────────────┴─► GONE (row dropped)

Every transition goes through `Supervisor._transition`, which checks it against `TRANSITIONS`,
writes the table and wakes everyone waiting on `changed`.

Threads: one per control connection (HTTP workers), one reading each loading instance's events,
one watching process deaths through pidfds (no polling), one for TTL expiry, one refilling the
spare pool. Lock order: `Supervisor.lock` before `InstanceTable.lock` (a file lock). Nothing
slow happens under `Supervisor.lock`: no RPC to an instance, no process wait, no socket write.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from config import Settings
from workers import policy, procs
from workers.catalog import Catalog
from workers.crashes import explain_crash, exit_status
from workers.engine_probe import Verdict, cpu_info, rebuild_advice
from workers.errors import (IdentifierConflict, InstanceCrashed, InstanceNotFound, LmhostError,
                            ModelLoadFailed, to_wire)
from workers.loadconfig import LoadPlan, plan_load
from workers.protocol import Channel, ProtocolError
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger("workers.supervisor")

SOCKET_FILE = "supervisor.sock"
PID_FILE = "supervisor.pid"
LOCK_FILE = "supervisor.lock"
TTL_INTERVAL = 1.0
LOG_TAIL_BYTES = 16384
HANDLE_LENGTH = 12  # hex digits; keeps <state>/instances/<handle>.sock within AF_UNIX's 107 bytes
FAILURES_KEPT = 20  # the table keeps this many recent failures, for the listing and requests


class State(str, enum.Enum):
    LOADING = policy.LOADING
    LOADED = policy.LOADED
    UNLOADING = policy.UNLOADING
    GONE = "gone"


TRANSITIONS = {
    State.LOADING: {State.LOADED, State.GONE},
    State.LOADED: {State.UNLOADING, State.GONE},
    State.UNLOADING: {State.GONE},
    State.GONE: set(),
}


@dataclass
class InstanceRecord:
    id: str
    model_key: str
    variant: str
    path: str
    type: str
    load_config: dict
    ttl: int | None
    created: float
    estimate_bytes: int
    handle: str = ""              # names socket and log file (ids may hold "/"); set at spawn
    jit: bool = False             # loaded by an inference request: auto-evict may unload it
    state: State = State.LOADING
    progress: float = 0.0
    pid: int | None = None
    started: int | None = None    # process start time (procs.start_time): pid reuse guard
    socket: str | None = None
    load_time: float | None = None
    last_used: float | None = None
    error: LmhostError | None = None
    cancelled: bool = False       # unloaded while loading: its death was asked for
    process: subprocess.Popen | None = field(default=None, repr=False)  # None when adopted
    reader: threading.Thread | None = field(default=None, repr=False)

    def to_row(self) -> dict:
        return {
            "id": self.id, "handle": self.handle, "model_key": self.model_key,
            "variant": self.variant, "path": self.path, "type": self.type,
            "pid": self.pid, "started": self.started, "socket": self.socket,
            "state": self.state.value, "progress": self.progress,
            "load_config": self.load_config, "ttl": self.ttl, "created": self.created,
            "last_used": self.last_used if self.last_used is not None else self.created,
            "load_time_seconds": self.load_time, "estimate_bytes": self.estimate_bytes,
            "jit": self.jit,
        }

    @classmethod
    def from_info(cls, info: dict, started: int) -> "InstanceRecord":
        """An instance adopted from what it says about itself (its `info` answer)."""
        return cls(
            id=info["instance_id"], handle=info["handle"], model_key=info["model_key"],
            variant=info["variant"], path=info["path"], type=info["type"],
            load_config=info["load_config"], ttl=info.get("ttl"), created=info["created"],
            estimate_bytes=info.get("estimate_bytes", 0), state=State.LOADED, progress=1.0,
            pid=info["pid"], started=started, socket=info["socket"],
            load_time=info.get("load_time_seconds"), last_used=info["created"],
            jit=bool(info.get("jit")))


def failure_reason(log_tail: str, fallback: str) -> str:
    """llama.cpp's own words for a failed load, from the tail of the instance's stderr."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    wanted = re.compile(r"error|failed|invalid|GGML_ASSERT|abort|exception|unable|cannot", re.I)
    ours = re.compile(r"\[instance [^\]]+\]")  # our own log lines say what we did, not why
    picked = [line for line in lines if wanted.search(line) and not ours.search(line)]
    return " | ".join(picked[-4:]) or fallback


def instance_call(socket_path: str, request: dict, timeout: float = 5.0) -> dict:
    with Channel.connect(socket_path, timeout) as channel:
        channel.send(request)
        return channel.recv()


class Supervisor:
    def __init__(self, settings: Settings, engine: Verdict):
        self.settings = settings
        self.engine = engine  # the engine probe's verdict: extra buffer types on or off
        self.rebuild_advice = rebuild_advice(cpu_info()["flags"])
        self.failures: list[dict] = []  # guarded by lock; newest last, FAILURES_KEPT at most
        self.state_dir = Path(settings.state_dir)
        self.catalog = Catalog(settings.models_dir, settings.state_dir)
        self.table = InstanceTable(settings.state_dir)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.instances: dict[str, InstanceRecord] = {}   # guarded by lock
        self.spares: list[tuple[str, subprocess.Popen]] = []  # guarded by lock
        self._refilling = False                                 # guarded by lock
        self.stopping = threading.Event()  # no new connections, TTL checks or spares
        self.done = threading.Event()      # everything stopped: the process may exit
        self._deaths = selectors.DefaultSelector()
        self._watch_queue: list[tuple[int, InstanceRecord]] = []  # guarded by lock
        self._wake_r, self._wake_w = os.pipe()
        self._deaths.register(self._wake_r, selectors.EVENT_READ, None)
        for sub in ("instances", "logs"):
            (self.state_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- table and transitions -------------------------------------------------------------

    def _write_table(self, durable: bool = True) -> None:
        # caller holds self.lock (lock order: supervisor lock, then the table's file lock)
        self.table.write([r.to_row() for r in self.instances.values()], durable, self.failures)

    def _transition(self, rec: InstanceRecord, new: State, **changes) -> None:
        """The one place an instance changes state. Caller holds self.lock."""
        if new not in TRANSITIONS[rec.state]:
            raise RuntimeError(f"instance {rec.id!r}: {rec.state.value} -> {new.value} is not allowed")
        for name, value in changes.items():
            setattr(rec, name, value)
        log.info("instance %r: %s -> %s", rec.id, rec.state.value, new.value)
        if rec.state is State.LOADING:
            # Refill the spare pool once a load is over, not while it runs: on a small machine
            # a spare importing llama_cpp next to a loading model slows the load.
            self._refill_spares_later()
        rec.state = new
        if new is State.GONE:
            self.instances.pop(rec.id, None)
        self._write_table()
        self.changed.notify_all()

    # -- start: adopt what is alive --------------------------------------------------------

    def adopt_instances(self) -> None:
        """Reconcile the table with what is alive (DESIGN invariant 2): live loaded instances
        are adopted, dead rows dropped, half-done loads killed (their supervisor is gone, so
        they cannot finish). An unreadable table is rebuilt from the instances' sockets."""
        try:
            rows = self.table.read()
            self.failures = self.table.read_failures()[-FAILURES_KEPT:]
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
            self._adopt(row.get("socket"), pid, started)
        for sock in sorted((self.state_dir / "instances").glob("*.sock")):
            if str(sock) not in known_sockets:
                self._adopt(str(sock), None, None)
        with self.lock:
            self._write_table()

    def _adopt(self, socket_path: str | None, pid: int | None, started: int | None) -> None:
        try:
            info = instance_call(socket_path, {"op": "info"}, timeout=2.0)
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
        rec = InstanceRecord.from_info(info, started)
        with self.lock:
            if rec.id in self.instances:
                return
            self.instances[rec.id] = rec
            self._watch(rec)
        log.info("adopted instance %r (pid %s)", rec.id, rec.pid)

    # -- load ------------------------------------------------------------------------------

    def load(self, request: dict, emit) -> dict:
        """Load (or, with reuse_existing, get-or-load) and return seed 000's response.
        `emit(event)` receives progress events; it may fail (the caller went away): the load
        goes on regardless and the instance stays loaded."""
        reference = request["model"]
        model, variant = self.catalog.resolve(reference)
        plan = plan_load(request, model, variant,
                         default_context_length=self.settings.context_length,
                         n_threads=self.settings.threads_per_instance)
        reused = False
        with self.lock:
            rec = None
            if request.get("reuse_existing"):
                row = policy.pick_reusable([r.to_row() for r in self.instances.values()],
                                           model.key, variant.name)
                if row is not None:
                    rec, reused = self.instances[row["id"]], True
            if rec is None:
                identifier = request.get("identifier")
                if identifier is not None and identifier in self.instances:
                    raise IdentifierConflict(f"an instance with identifier {identifier!r} "
                                             "exists or is loading", param="identifier")
                identifier = identifier or policy.default_identifier(reference, set(self.instances))
                rec = InstanceRecord(
                    id=identifier, model_key=plan.model_key,
                    variant=plan.variant, path=plan.path, type=plan.type,
                    load_config=plan.load_config, ttl=request.get("ttl"), created=time.time(),
                    estimate_bytes=plan.estimate_bytes, jit=bool(request.get("jit")))
                self.instances[rec.id] = rec
                self._write_table()
        if not reused:
            if rec.jit and self.settings.auto_evict:
                self._evict_idle_jit(rec)
            self._start_loading(rec, plan)
        return self._await_loaded(rec, emit, reused, bool(request.get("echo_load_config")))

    def _start_loading(self, rec: InstanceRecord, plan: LoadPlan) -> None:
        try:
            handle, process = self._take_spare()
        except OSError as exc:
            with self.lock:
                if rec.state is State.LOADING:
                    self._transition(rec, State.GONE, error=ModelLoadFailed(
                        f"cannot start an instance process: {exc}"))
            return
        spec = {
            "instance_id": rec.id, "handle": handle, "model_key": rec.model_key,
            "variant": rec.variant, "path": rec.path, "type": rec.type,
            "load_config": rec.load_config, "ttl": rec.ttl, "created": rec.created,
            "estimate_bytes": rec.estimate_bytes, "llama_kwargs": plan.llama_kwargs,
            "jit": rec.jit, "extra_bufts": self.engine.extra_bufts,
        }
        with self.lock:
            if rec.state is not State.LOADING or self.instances.get(rec.id) is not rec:
                cancelled = True  # unloaded before its process existed
            else:
                cancelled = False
                rec.handle, rec.process, rec.pid = handle, process, process.pid
                rec.started = procs.start_time(process.pid)
                rec.reader = threading.Thread(target=self._read_events, args=(rec, process),
                                              name=f"events-{rec.id}", daemon=True)
                self._write_table()
                self._watch(rec)
        if cancelled:
            process.kill()
            process.wait()
            return
        try:
            process.stdin.write((json.dumps(spec) + "\n").encode())
            process.stdin.close()
        except OSError:
            pass  # it died: the death watcher reports it
        rec.reader.start()

    def _read_events(self, rec: InstanceRecord, process: subprocess.Popen) -> None:
        """Progress, then loaded or failed, from the instance's stdout (until it closes)."""
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            with self.lock:
                if rec.state is not State.LOADING:
                    continue
                if kind == "progress":
                    progress = max(rec.progress, float(event.get("progress", 0.0)))
                    crossed = int(progress * 10) != int(rec.progress * 10)
                    rec.progress = progress
                    if crossed:  # the table shows progress in steps of 10%
                        self._write_table(durable=False)
                    self.changed.notify_all()
                elif kind == "loaded":
                    self._transition(rec, State.LOADED, progress=1.0, socket=event["socket"],
                                     load_time=event["load_time_seconds"], last_used=time.time())
                elif kind == "failed":
                    rec.error = ModelLoadFailed(self._failure_message(rec, event.get("message", "")),
                                                param="model")
        process.stdout.close()

    def _failure_message(self, rec: InstanceRecord, fallback: str) -> str:
        tail = self._log_tail(rec.handle)
        return f"failed to load {Path(rec.path).name}: {failure_reason(tail, fallback or 'the instance process exited')}"

    def _log_path(self, handle: str) -> Path:
        return self.state_dir / "logs" / f"{handle}.log"

    def _log_tail(self, handle: str) -> str:
        try:
            with open(self._log_path(handle), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _await_loaded(self, rec: InstanceRecord, emit, reused: bool, echo: bool) -> dict:
        sent = -1.0
        while True:
            with self.lock:
                while rec.state is State.LOADING and rec.progress <= sent:
                    self.changed.wait(timeout=1.0)
                state, progress, error = rec.state, rec.progress, rec.error
            if progress > sent and state is not State.GONE:
                sent = progress
                emit({"event": "progress", "progress": progress})
            if state is State.GONE:
                raise error or ModelLoadFailed(f"instance {rec.id!r} was unloaded before it loaded")
            if state is not State.LOADING:
                break
        if sent < 1.0:
            emit({"event": "progress", "progress": 1.0})
        result = {
            "type": rec.type,
            "model_instance_id": rec.id,
            "instance_id": rec.id,
            "load_time_seconds": round(rec.load_time or 0.0, 3),
            "status": "loaded",
            "reused": reused,
        }
        if echo:
            result["load_config"] = rec.load_config
        return result

    def _stopping_by_itself(self, rec: InstanceRecord, why: str) -> None:
        """The instance agreed to stop (TTL, auto-evict: ops that it decides atomically) and
        is now exiting: record it as unloading until its death is reaped."""
        log.info("instance %r stops: %s", rec.id, why)
        with self.lock:
            if rec.state is State.LOADED:
                self._transition(rec, State.UNLOADING)

    def _evict_idle_jit(self, new: InstanceRecord) -> None:
        """Unload earlier JIT-loaded instances that are idle before `new` loads; each instance
        decides "idle" itself under its own lock, so a request in flight is never cut."""
        with self.lock:
            victims = [self.instances[r["id"]] for r in
                       policy.jit_evictions([r.to_row() for r in self.instances.values()], new.id)]
        for rec in victims:
            try:
                evicted = instance_call(rec.socket, {"op": "evict"}, timeout=2.0).get("evicted")
            except (OSError, ProtocolError, TypeError):
                continue
            if evicted:
                self._stopping_by_itself(rec, f"auto-evict: idle JIT instance, making room for {new.id!r}")
                self._await_gone(rec, self.settings.unload_timeout + 5)

    # -- processes -------------------------------------------------------------------------

    def _spawn_process(self) -> tuple[str, subprocess.Popen]:
        handle = uuid.uuid4().hex[:HANDLE_LENGTH]
        log_path = self._log_path(handle)
        env = {**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "workers.instance", "--state-dir", str(self.state_dir),
                 "--handle", handle, "--queue-size", str(self.settings.queue_size)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
                start_new_session=True,  # survives a supervisor crash; no terminal signals
                close_fds=True)
        return handle, process

    def _take_spare(self) -> tuple[str, subprocess.Popen]:
        """A pre-started process (llama_cpp already imported), or a fresh one."""
        with self.lock:
            while self.spares:
                handle, process = self.spares.pop(0)
                if process.poll() is None:
                    return handle, process
        return self._spawn_process()

    def _refill_spares_later(self) -> None:
        threading.Thread(target=self.refill_spares, name="spares", daemon=True).start()

    def refill_spares(self) -> None:
        """Start spares until the pool is full; one refilling thread at a time."""
        with self.lock:
            if self._refilling:
                return
            self._refilling = True
        try:
            while not self.stopping.is_set():
                with self.lock:
                    if len(self.spares) >= self.settings.spare_instances:
                        return
                try:
                    spare = self._spawn_process()
                except OSError as exc:
                    log.warning("cannot start a spare instance process: %s", exc)
                    return
                with self.lock:
                    self.spares.append(spare)
        finally:
            with self.lock:
                self._refilling = False

    def _watch(self, rec: InstanceRecord) -> None:
        """Have the death watcher follow `rec`'s process. Caller holds self.lock."""
        fd = procs.pidfd(rec.pid)
        if fd is None:
            return
        self._watch_queue.append((fd, rec))
        os.write(self._wake_w, b"x")

    def watch_deaths(self) -> None:
        """Notice every instance's exit at once (pidfds become readable), reap it, drop it."""
        while True:  # runs for the life of the process: shutdown needs it most
            for key, _ in self._deaths.select(timeout=1.0):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                self._deaths.unregister(key.fd)
                os.close(key.fd)
                self._reap(key.data)
            with self.lock:
                queued, self._watch_queue = self._watch_queue, []
            for fd, rec in queued:
                self._deaths.register(fd, selectors.EVENT_READ, rec)

    def _reap(self, rec: InstanceRecord) -> None:
        code = rec.process.wait() if rec.process is not None else None  # None: adopted
        if rec.reader is not None:
            rec.reader.join(timeout=5)  # its "failed" event carries the reason
        with self.lock:
            if rec.state is State.GONE:
                return
            if rec.state is State.UNLOADING or rec.cancelled:  # stopped on request: nothing to explain
                log.info("instance %r (pid %s) exited with %s", rec.id, rec.pid, exit_status(code))
                self._log_path(rec.handle).unlink(missing_ok=True)
                self._transition(rec, State.GONE)
                return
            # a load that failed and said why ("failed" event, exit code 1), or a crash
            error = rec.error or self._crash_error(rec, code)
            log.warning("%s", error.message)
            self._record_failure(rec, code, error)
            self._transition(rec, State.GONE, error=error)

    def _crash_error(self, rec: InstanceRecord, code: int | None) -> LmhostError:
        """The error for an instance that died unasked: named by its signal, with the tail of
        its stderr and, for SIGILL, the likely cause and the fix."""
        if rec.state is State.LOADING:
            subject = f"instance {rec.id!r} loading {Path(rec.path).name}"
        else:
            subject = f"instance {rec.id!r} of model {rec.model_key!r}"
        message = explain_crash(subject, code, self._log_tail(rec.handle),
                                rebuild=self.rebuild_advice)
        if rec.state is State.LOADING:
            return ModelLoadFailed(message, param="model")
        return InstanceCrashed(message, code="instance_crashed")

    def _record_failure(self, rec: InstanceRecord, code: int | None, error: LmhostError) -> None:
        """Keep the failure for the listing and for the HTTP worker whose request the instance
        was serving. Caller holds self.lock; the transition that follows writes the table."""
        self.failures.append({
            "instance_id": rec.id, "model_key": rec.model_key, "variant": rec.variant,
            "handle": rec.handle, "pid": rec.pid, "time": time.time(), "state": rec.state.value,
            "exit": exit_status(code), "error": to_wire(error)})
        del self.failures[:-FAILURES_KEPT]

    # -- unload and TTL --------------------------------------------------------------------

    def unload(self, instance_id: str) -> dict:
        """Stop an instance: a loading one at once (its load answers with an error); a loaded
        one after its request in flight (bounded by the unload timeout)."""
        graceful = float(self.settings.unload_timeout)
        with self.lock:
            rec = self.instances.get(instance_id)
            if rec is None:
                raise InstanceNotFound(f"no instance {instance_id!r}", param="instance_id")
            if rec.state is State.LOADING:
                rec.error = ModelLoadFailed(f"load of {instance_id!r} cancelled: the instance "
                                            "was unloaded while loading", param="model")
                rec.cancelled = True
                if rec.pid is None:
                    self._transition(rec, State.GONE)
                    return {"instance_id": instance_id}
                procs.signal_process(rec.pid, rec.started, signal.SIGKILL)
            elif rec.state is State.LOADED:
                self._transition(rec, State.UNLOADING)
                self._ask_to_stop(rec, graceful)
        self._await_gone(rec, graceful + 5)
        return {"instance_id": instance_id}

    def _ask_to_stop(self, rec: InstanceRecord, graceful: float) -> None:
        def ask():
            try:
                instance_call(rec.socket, {"op": "shutdown", "graceful_timeout": graceful})
            except (OSError, ProtocolError, TypeError):
                procs.signal_process(rec.pid, rec.started, signal.SIGTERM)
        threading.Thread(target=ask, name=f"stop-{rec.id}", daemon=True).start()

    def _await_gone(self, rec: InstanceRecord, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while rec.state is not State.GONE and time.monotonic() < deadline:
                self.changed.wait(timeout=deadline - time.monotonic())
            if rec.state is State.GONE:
                return
            pid, started = rec.pid, rec.started
        log.warning("instance %r did not stop in %.0f s: killing it", rec.id, timeout)
        procs.signal_process(pid, started, signal.SIGKILL)
        with self.lock:
            deadline = time.monotonic() + 5
            while rec.state is not State.GONE and time.monotonic() < deadline:
                self.changed.wait(timeout=deadline - time.monotonic())

    def expire_idle(self) -> None:
        """Unload instances idle for longer than their TTL. The instance itself decides
        "idle" atomically (op "expire"), so a request arriving meanwhile is never cut."""
        while not self.stopping.wait(TTL_INTERVAL):
            with self.lock:
                candidates = [r for r in self.instances.values()
                              if r.state is State.LOADED and r.ttl]
            for rec in candidates:
                try:
                    answer = instance_call(rec.socket, {"op": "expire", "ttl": rec.ttl}, timeout=2.0)
                except (OSError, ProtocolError, TypeError):
                    continue
                if answer.get("last_used_ago") is not None:
                    rec.last_used = time.time() - answer["last_used_ago"]
                if answer.get("expired"):
                    self._stopping_by_itself(rec, f"idle for {rec.ttl} s (ttl)")
                    threading.Thread(target=self._await_gone,
                                     args=(rec, self.settings.unload_timeout + 5),
                                     daemon=True).start()

    # -- control server and shutdown -------------------------------------------------------

    def status(self) -> dict:
        with self.lock:
            return {"pid": os.getpid(), "instances": [r.to_row() for r in self.instances.values()]}

    def handle(self, channel: Channel) -> None:
        try:
            request = channel.recv()
            op = request.get("op")
            if op == "ping":
                channel.send({"result": {"pid": os.getpid()}})
            elif op == "status":
                channel.send({"result": self.status()})
            elif op == "load":
                def emit(event):
                    try:
                        channel.send(event)
                    except OSError:
                        pass  # the HTTP worker went away; the load goes on
                channel.send({"result": self.load(request["request"], emit)})
            elif op == "unload":
                channel.send({"result": self.unload(request["instance_id"])})
            elif op == "shutdown":
                self.stop_all()
                channel.send({"result": {"stopped": True}})
                self.done.set()
            else:
                channel.send({"error": {"type": "invalid_request", "message": f"unknown op {op!r}"}})
        except LmhostError as exc:
            try:
                channel.send({"error": to_wire(exc)})
            except OSError:
                pass
        except (ProtocolError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must not take the supervisor down
            log.exception("control request failed")
            try:
                channel.send({"error": {"type": "internal_error", "message": "supervisor error"}})
            except OSError:
                pass
        finally:
            channel.close()

    def serve(self, listener) -> None:
        listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(None)
            threading.Thread(target=self.handle, args=(Channel(conn),), daemon=True).start()

    def stop_all(self) -> None:
        """Unload every instance (in parallel, each after its request in flight) and dismiss
        the spares. Used on shutdown: no process of ours is left."""
        self.stopping.set()
        with self.lock:
            ids = list(self.instances)
            spares, self.spares = self.spares, []
        threads = [threading.Thread(target=self._unload_quietly, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for _, process in spares:
            process.stdin.close()  # EOF: a spare exits
        for t in threads:
            t.join()
        for handle, process in spares:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._log_path(handle).unlink(missing_ok=True)

    def _unload_quietly(self, instance_id: str) -> None:
        try:
            self.unload(instance_id)
        except InstanceNotFound:
            pass
