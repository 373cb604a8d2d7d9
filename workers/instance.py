"""One model instance: a process that hosts exactly one `llama_cpp.Llama` (DESIGN invariant 4).

Started by the supervisor as ``python -m workers.instance --state-dir S --handle H``:

- stdin: one JSON line, the spec (instance id, model, llama kwargs, ...). The process imports
  llama_cpp *before* reading it, so the supervisor keeps one such process waiting as a spare and
  a load skips the import. EOF on stdin (the supervisor dismissed the spare, or died): exit.
- stdout: events for the supervisor, JSON lines: ``{"event": "progress", "progress": p}``
  (from llama.cpp's own loader callback), then ``{"event": "loaded", ...}`` or
  ``{"event": "failed", "message": ...}``. If the supervisor is gone while loading (the pipe is
  broken), the load is abandoned and the process exits: nobody could adopt it.
- stderr: ``<state>/logs/<handle>.log``, opened by the supervisor. llama.cpp writes its reasons
  for a failed load there; the supervisor quotes the tail in the error.

Once loaded it serves ``<state>/instances/<handle>.sock`` (JSON lines, `workers.protocol`):
``info`` and ``status`` are answered at once; inference jobs go through a bounded queue to one
executor thread, so one request runs at a time and `status` knows whether it is busy (TTL and
eviction never cut a request in flight). ``shutdown`` (or SIGTERM) stops accepting, lets the
running job finish within the given timeout, fails queued jobs and exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from workers import llama_params, policy
from workers.protocol import Channel, ProtocolError, listen

log = logging.getLogger("workers.instance")

PROGRESS_STEP = 0.01  # report progress in steps of at least 1%


class Events:
    """The stdout pipe to the supervisor. A broken pipe while loading means it died."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "w", buffering=1)
        self.broken = False

    def send(self, **event) -> None:
        try:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        except (BrokenPipeError, OSError):
            self.broken = True


def install_log_filter():
    """Send llama.cpp's warnings and errors (not its per-tensor info lines) to fd 2, the log.

    `Llama(verbose=True)` keeps llama-cpp-python from pointing fd 2 at /dev/null while it loads,
    which would lose llama.cpp's reason for a failed load; this callback keeps the log short.
    Returns the ctypes callback, which must stay referenced.
    """
    import llama_cpp

    # ggml's levels (ggml.h; llama-cpp-python's _logger comment predates them): NONE 0,
    # DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous message). The corrupt
    # model test checks that a failed load still quotes llama.cpp.
    wanted = {3, 4}
    last = [0]

    @llama_cpp.llama_log_callback
    def on_log(level, text, _user_data):
        if level != 5:
            last[0] = level
        if last[0] in wanted:
            os.write(2, text)

    llama_cpp.llama_log_set(on_log, None)
    return on_log


class Job:
    def __init__(self, request: dict, channel: Channel):
        self.request = request
        self.channel = channel
        self.done = threading.Event()


class Instance:
    def __init__(self, spec: dict, llm, socket_path: str, queue_size: int):
        self.spec = spec
        self.llm = llm
        self.socket_path = socket_path
        # The bound is enforced through `pending` below, not by the Queue: Queue(maxsize=0)
        # would mean "unbounded", and LMHOST_QUEUE_SIZE=0 means "nothing waits".
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.queue_size = queue_size
        # `pending` counts accepted jobs, queued or running; "idle" means pending == 0. It and
        # `stopping` change together under state_lock, so an expiry can never slip between a
        # request being accepted and it running.
        self.state_lock = threading.Lock()
        self.pending = 0
        self.running = False
        self.last_used = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        self.stopping = threading.Event()
        self.listener: socket.socket | None = None

    # -- serving -------------------------------------------------------------------------------

    def serve(self) -> None:
        """Accept connections until stopped; `self.listener` is already listening."""
        threading.Thread(target=self._execute_jobs, name="executor", daemon=True).start()
        self.listener.settimeout(0.2)  # wake up to notice `stopping`
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(None)
            threading.Thread(target=self._handle, args=(Channel(conn),), daemon=True).start()

    def _handle(self, channel: Channel) -> None:
        keep_open = False
        try:
            request = channel.recv()
            op = request.get("op")
            if op == "info":
                channel.send(self.info())
            elif op == "status":
                channel.send(self.status())
            elif op == "expire":
                channel.send(self.expire(float(request["ttl"])))
            elif op == "evict":
                channel.send(self.evict())
            elif op == "shutdown":
                channel.send({"ok": True})
                self.stop(float(request.get("graceful_timeout", 30)))
            elif op == "run":
                keep_open = self._enqueue(request, channel)
            else:
                channel.send({"error": {"type": "invalid_request", "message": f"unknown op {op!r}"}})
        except (ProtocolError, OSError, ValueError):
            pass
        finally:
            if not keep_open:
                channel.close()

    def _enqueue(self, request: dict, channel: Channel) -> bool:
        """Accept a job, or refuse it: unloading, queue full, or (``"if_idle": true``, used by
        routing to find an idle instance among several) busy."""
        with self.state_lock:
            if self.stopping.is_set():
                refusal = {"type": "unavailable", "message": "instance is unloading"}
            elif request.get("if_idle") and self.pending:
                refusal = {"type": "busy", "message": "instance is busy"}
            elif self.pending >= 1 + self.queue_size:  # one running, queue_size waiting
                refusal = {"type": "overloaded", "message": "the instance's queue is full"}
            else:
                self.jobs.put_nowait(Job(request, channel))
                self.pending += 1
                return True
        channel.send({"error": refusal})
        return False

    def _execute_jobs(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self.state_lock:
                self.running = True
                self.last_used = time.monotonic()
            try:
                run_job(self.llm, job.request, job.channel)
            except (OSError, ProtocolError):
                pass  # the client went away: its generation stops here
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the instance
                log.exception("job failed")
                try:
                    job.channel.send({"error": {"type": "invalid_request", "message": str(exc)}})
                except OSError:
                    pass
            finally:
                job.channel.close()
                with self.state_lock:
                    self.last_used = time.monotonic()
                    self.running = False
                    self.pending -= 1
                job.done.set()

    # -- state ---------------------------------------------------------------------------------

    def info(self) -> dict:
        return {**self.spec, "pid": os.getpid(), "socket": self.socket_path}

    def _status(self) -> dict:
        # caller holds state_lock
        return {"busy": self.running, "queued": self.pending - self.running,
                "last_used": self.last_used, "now": time.monotonic()}

    def status(self) -> dict:
        with self.state_lock:
            return self._status()

    def _stop_if(self, decide) -> tuple[bool, dict]:
        """Stop (as after `shutdown` with no grace) if `decide(status)` says so. Decided and
        acted on under state_lock, so no request can be accepted between the two."""
        with self.state_lock:
            status = self._status()
            stop = not self.stopping.is_set() and decide(status)
            if stop:
                self.stopping.set()
        if stop:
            threading.Thread(target=self._finish, args=(0.0,), daemon=True).start()
        return stop, status

    def expire(self, ttl: float) -> dict:
        """TTL: stop if idle (nothing queued or running) for `ttl` seconds."""
        expired, status = self._stop_if(lambda s: policy.ttl_expired(ttl, s))
        idle_for = status["now"] - status["last_used"] if policy.idle(status) else 0.0
        return {"expired": expired, "last_used_ago": idle_for}

    def evict(self) -> dict:
        """Auto-evict: stop if idle right now."""
        evicted, _ = self._stop_if(policy.idle)
        return {"evicted": evicted}

    def stop(self, graceful_timeout: float) -> None:
        """Stop accepting, let the running job finish (bounded), fail queued jobs, exit."""
        with self.state_lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
        threading.Thread(target=self._finish, args=(graceful_timeout,), daemon=True).start()

    def _finish(self, graceful_timeout: float) -> None:
        if self.listener is not None:
            self.listener.close()
        pending = []
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                pending.append(job)
        for job in pending:
            with self.state_lock:
                self.pending -= 1
            try:
                job.channel.send({"error": {"type": "unavailable", "message": "instance unloaded"}})
            except OSError:
                pass
            finally:
                job.channel.close()
        deadline = time.monotonic() + graceful_timeout
        while self.pending > 0 and time.monotonic() < deadline:  # the job in flight
            time.sleep(0.01)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        sys.stderr.flush()
        os._exit(0)  # llama.cpp's destructors add nothing at exit but time


def run_job(llm, request: dict, channel: Channel) -> None:
    """One inference request: ``{"op": "run", "kind": "completion"|"chat"|"embedding",
    "params": {...}, "stream": bool}``; the reply is the result line, or one line per chunk
    then ``{"done": true}`` when streaming."""
    kind, params, stream = request.get("kind"), dict(request.get("params") or {}), bool(request.get("stream"))
    name = request.get("model")  # what the client called the model: answers carry it
    if kind == "embedding":
        result = llm.create_embedding(**params)
        result["model"] = name or result.get("model")
        channel.send({"result": result})
        return
    method_name = {"completion": "create_completion", "chat": "create_chat_completion"}.get(kind)
    if method_name is None:
        raise ValueError(f"unknown kind {kind!r}")
    method = getattr(llm, method_name)
    if not stream:
        result = method(**params)
        result["model"] = name or result.get("model")
        channel.send({"result": result})
        return
    chunks = method(stream=True, **params)
    try:
        for chunk in chunks:
            chunk["model"] = name or chunk.get("model")
            channel.send({"chunk": chunk})  # raises when the client is gone
        channel.send({"done": True})
    finally:
        chunks.close()  # stops llama.cpp's generation loop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.instance")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--handle", required=True)
    parser.add_argument("--queue-size", type=int, default=8)
    args = parser.parse_args(argv)

    # Our events go to a private copy of stdout; fd 1 joins stderr (the log file), so nothing
    # llama.cpp or a library prints can corrupt the event stream.
    events = Events(os.dup(1))
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [instance {args.handle}] %(levelname)s %(message)s")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    import llama_cpp  # the slow import, done before the spec arrives (spare process)
    llama_cpp.llama_backend_init()
    log_filter = install_log_filter()  # noqa: F841 - must outlive the process's llama.cpp use

    line = sys.stdin.readline()
    if not line:
        return 0  # dismissed spare
    spec = json.loads(line)
    log.info("loading %s for instance %r", spec["path"], spec["instance_id"])

    last = [-1.0]

    def report(progress: float) -> bool:
        if progress >= 1.0 or progress - last[0] >= PROGRESS_STEP:
            last[0] = progress
            events.send(event="progress", progress=round(min(progress, 1.0), 4))
        return not events.broken  # supervisor gone: abandon the load

    # The engine probe's verdict (workers.engine_probe): extra buffer types off where this
    # host traps their instructions.
    llama_params.install(extra_bufts=spec.get("extra_bufts", True), on_progress=report)
    started = time.monotonic()
    try:
        llm = llama_cpp.Llama(**spec["llama_kwargs"])
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which quotes stderr
        sys.stderr.flush()
        events.send(event="failed", message=str(exc))
        return 1
    if events.broken:
        return 1
    load_time = time.monotonic() - started
    llm.verbose = False  # no per-request timing prints from llama-cpp-python

    socket_path = str(Path(args.state_dir) / "instances" / f"{args.handle}.sock")
    instance = Instance({**spec, "load_time_seconds": load_time}, llm, socket_path, args.queue_size)
    signal.signal(signal.SIGTERM, lambda *_: instance.stop(30.0))  # sets a flag, starts a thread
    instance.listener = listen(socket_path)  # listening before "loaded" is reported
    server = threading.Thread(target=instance.serve, name="accept", daemon=True)
    server.start()
    events.send(event="loaded", load_time_seconds=load_time, socket=socket_path,
                pid=os.getpid())
    log.info("loaded in %.3f s, serving %s", load_time, socket_path)
    server.join()
    instance.stop(30.0)
    threading.Event().wait()  # _finish exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
