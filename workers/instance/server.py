"""The serving side of an instance: its socket, its bounded job queue and its own view of
whether it is idle, which is what TTL expiry, eviction and unload ask for.

Ops on ``<state>/instances/<handle>.sock``: ``info`` and ``status`` answered at once;
``expire`` (TTL) and ``evict`` stop the instance only if it is idle, decided and acted on under
`state_lock`, so no request can be accepted in between; ``shutdown`` stops accepting, lets the
running job finish (bounded), fails queued jobs and exits; ``run`` queues an inference job
(`jobs.run_job`), and while it waits or runs, the connection's thread reads the client's
``cancel`` (or its going away) and flags the job, and hands it its ``hand_off`` and its
``first_written``. ``tokenize`` and ``template`` (a chat as the model reads it) touch no
decoding state and are answered at once, even while a job runs. One executor thread runs the
jobs one at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Callable

from workers import policy
from workers.instance.handoff import Handoff
from workers.instance.jobs import run_job
from workers.instance.structured import RequestError
from workers.protocol import Channel, ProtocolError, UnixServer, can_hand_off

log = logging.getLogger("workers.instance")


class Job:
    def __init__(self, request: dict, channel: Channel):
        self.request = request
        self.channel = channel
        self.done = threading.Event()
        self.cancelled = threading.Event()  # the client sent cancel, or went away
        # a job whose HTTP worker will hand over its client, if such a job may be handed off
        # (checked here as well: the worker's word is not taken for it)
        wants = (request.get("hand_off") is True
                 and can_hand_off(request.get("kind"), request.get("params") or {}))
        self.handoff = Handoff(self.cancelled) if wants else None
        # the client wrote the first text on (`jobs.FIRST_WRITTEN_WAIT`), if it will say so
        self.first_written = threading.Event() if request.get("first_written") is True else None

    def cancel(self) -> None:
        self.cancelled.set()
        if self.handoff is not None:
            self.handoff.wake()
        self._first_written()

    def _first_written(self) -> None:
        if self.first_written is not None:
            self.first_written.set()

    def watch(self) -> None:
        """Until the job is done: a ``cancel`` line or the connection closing cancels it; a
        ``hand_off`` line gives the job its client's socket; ``first_written`` (or the
        hand-off) lets its next token go (`jobs.FIRST_WRITTEN_WAIT`)."""
        while not self.done.is_set():
            try:  # lines already buffered first: two can come in one read (first_written, cancel)
                message = self.channel.recv_ready(0.2)
            except (OSError, ProtocolError, ValueError):
                self.cancel()
                return
            if message is None:
                continue
            op = message.get("op") if isinstance(message, dict) else None
            if op == "cancel":
                self.cancel()
                self.done.wait()
                return
            if op == "hand_off":
                self._take_handoff(message)
                self._first_written()  # the worker hands off once it wrote the first text
            elif op == "first_written":
                self._first_written()

    def _take_handoff(self, message: dict) -> None:
        fd = self.channel.take_fd()
        before, after = message.get("before"), message.get("after")
        if self.handoff is None:
            if fd is not None:
                os.close(fd)  # not asked for: the job goes on as it was
        elif fd is None or not isinstance(before, str) or not isinstance(after, str):
            if fd is not None:
                os.close(fd)
            self.cancel()  # a writer waits for this hand-off: it cannot be taken
        else:
            self.handoff.give(fd, before.encode(), after.encode())


class Instance:
    def __init__(self, spec: dict, engine, socket_path: str, queue_size: int,
                 clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.engine = engine  # generation.Engine (the model), or a stand-in in unit tests
        self.socket_path = socket_path
        self.clock = clock  # CLOCK_MONOTONIC: comparable across processes (policy.ttl_expired)
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
        self.generated_tokens = 0  # since the load, for /metrics (guarded by state_lock)
        self.handed_off_tokens = 0  # of those, written on a client's connection (handoff)
        self.last_used = clock()
        self.stopping = threading.Event()
        self.server: UnixServer | None = None
        self.exit: Callable[[], None] = lambda: os._exit(0)  # llama.cpp's destructors add nothing but time

    # -- serving -------------------------------------------------------------------------------

    def listen(self) -> None:
        """Listen on the socket (before "loaded" is reported: the supervisor may call at once)."""
        self.server = UnixServer(self.socket_path, self.handle, take=self.take)

    def serve(self) -> None:
        """Run the executor and accept connections until stopped."""
        threading.Thread(target=self.execute_jobs, name="executor", daemon=True).start()
        self.server.serve_forever(poll_interval=0.2)

    def take(self, channel: Channel, request) -> Callable[[], None] | None:
        """A request that arrived with its connection, on the accepting thread: a job is queued
        at once, so the executor starts on it while the connection's thread (which then
        watches for a cancel) is being created; anything else is left to `handle`."""
        if not (isinstance(request, dict) and request.get("op") == "run"):
            return lambda: self.handle(channel, request)
        try:
            job = self.enqueue(request, channel)
        except OSError:
            return None  # refused, and the client is gone
        return job.watch if job is not None else None

    def handle(self, channel: Channel, request=None) -> None:
        """A connection, on its own thread; `request`: its request line when already read."""
        try:
            if request is None:
                request = channel.recv()
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            op = request.get("op")
            if op == "info":
                channel.send(self.info())
            elif op == "status":
                channel.send(self.status())
            elif op == "expire":
                self.expire(float(request["ttl"]), reply=channel.send)
            elif op == "evict":
                self.evict(reply=channel.send)
            elif op == "shutdown":
                channel.send({"ok": True})
                self.stop(float(request.get("graceful_timeout", 30)))
            elif op == "run":
                job = self.enqueue(request, channel)
                if job is not None:
                    job.watch()  # the connection stays open for the job's answer
            elif op == "tokenize":
                channel.send({"tokens": self.engine.tokenize(
                    str(request.get("text", "")), bool(request.get("add_bos", True)))})
            elif op == "template":
                channel.send({"prompt": self.engine.formatted(
                    list(request.get("messages") or []), list(request.get("tools") or []),
                    request.get("template"))})
            else:
                channel.send({"error": {"type": "invalid_request", "message": f"unknown op {op!r}"}})
        except RequestError as exc:
            channel.send({"error": _invalid(exc)})
        except (ProtocolError, OSError, ValueError, KeyError):
            pass

    def enqueue(self, request: dict, channel: Channel) -> Job | None:
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
                job = Job(request, channel)
                self.jobs.put_nowait(job)
                self.pending += 1
                return job
        channel.send({"error": refusal})
        return None

    def execute_jobs(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self.state_lock:
                self.running = True
                self.last_used = self.clock()
            try:
                if not job.cancelled.is_set():  # cancelled while queued: nothing to do
                    run_job(self.engine, job.request, job.channel, job.cancelled,
                            self._count_tokens, job.handoff, job.first_written)
            except (OSError, ProtocolError):
                pass  # the client went away: its generation stops here
            except RequestError as exc:
                try:
                    job.channel.send({"error": _invalid(exc)})
                except OSError:
                    pass
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the instance
                log.exception("job failed")
                try:
                    job.channel.send({"error": {"type": "invalid_request", "message": str(exc)}})
                except OSError:
                    pass
            finally:
                with self.state_lock:
                    self.last_used = self.clock()
                    self.running = False
                    self.pending -= 1
                job.done.set()

    # -- state ---------------------------------------------------------------------------------

    def info(self) -> dict:
        return {**self.spec, "pid": os.getpid(), "socket": self.socket_path}

    def _status(self) -> dict:
        # caller holds state_lock
        return {"busy": self.running, "queued": self.pending - self.running,
                "last_used": self.last_used, "now": self.clock(),
                "generated_tokens": self.generated_tokens,
                "handed_off_tokens": self.handed_off_tokens}

    def _count_tokens(self, count: int, handed_off: bool) -> None:
        with self.state_lock:
            self.generated_tokens += count
            if handed_off:
                self.handed_off_tokens += count

    def status(self) -> dict:
        with self.state_lock:
            return self._status()

    def _stop_if(self, decide, answer: Callable[[bool, dict], dict],
                 reply: Callable[[dict], None] | None) -> dict:
        """Stop (as after `shutdown` with no grace) if `decide(status)` says so. Decided and
        acted on under state_lock, so no request can be accepted between the two. The
        `answer(stopped, status)` goes to `reply` before the stop begins: a process that
        exits first would leave the asker believing it refused."""
        with self.state_lock:
            status = self._status()
            stop = not self.stopping.is_set() and decide(status)
            if stop:
                self.stopping.set()
        result = answer(stop, status)
        try:
            if reply is not None:
                reply(result)
        finally:
            if stop:
                threading.Thread(target=self._finish, args=(0.0,), daemon=True).start()
        return result

    def expire(self, ttl: float, reply: Callable[[dict], None] | None = None) -> dict:
        """TTL: stop if idle (nothing queued or running) for `ttl` seconds."""
        return self._stop_if(lambda s: policy.ttl_expired(ttl, s),
                             lambda stop, s: {"expired": stop, "last_used_ago": policy.idle_for(s)},
                             reply)

    def evict(self, reply: Callable[[dict], None] | None = None) -> dict:
        """Auto-evict: stop if idle right now."""
        return self._stop_if(policy.idle, lambda stop, s: {"evicted": stop}, reply)

    def stop(self, graceful_timeout: float) -> None:
        """Stop accepting, let the running job finish (bounded), fail queued jobs, exit."""
        with self.state_lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
        threading.Thread(target=self._finish, args=(graceful_timeout,), daemon=True).start()

    def _finish(self, graceful_timeout: float) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue
            with self.state_lock:
                self.pending -= 1
            try:
                job.channel.send({"error": {"type": "unavailable", "message": "instance unloaded"}})
            except OSError:
                pass
            finally:
                job.done.set()
        deadline = time.monotonic() + graceful_timeout
        while self.pending > 0 and time.monotonic() < deadline:  # the job in flight
            time.sleep(0.01)
        sys.stderr.flush()
        self.exit()


def _invalid(exc: RequestError) -> dict:
    return {"type": "invalid_request", "message": str(exc), "param": exc.param}
