"""Instance processes as the supervisor handles them: the process seam.

The rest of the supervisor only talks to an `InstanceProcess`: hand it its spec, read its
events, ask its socket, signal it, learn when it has exited and how. `ChildProcess` is one the
supervisor spawned (`Launcher.spawn`), `AdoptedProcess` one an earlier supervisor spawned
(found alive at start). Unit tests pass a launcher of fakes instead.

`graceful_then_kill` is the one "ask to stop, wait, then kill" of lmhost: unload, TTL expiry,
eviction, shutdown and the dismissal of spares all use it (gunicorn's arbiter does the same).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from typing import Callable, Iterator, Mapping, Protocol

from workers import hugepages, procs
from workers.protocol import call
from workers.statedir import HANDLE_LENGTH, StateDir

log = logging.getLogger("workers.supervisor")

KILL_WAIT = 5.0  # seconds a SIGKILLed process gets to be reaped
# How long llama.cpp's OpenMP threads spin at a barrier before they sleep, in libgomp's pause
# iterations (~1 ms here). libgomp's default, 300,000 (~17 ms), keeps an instance's threads
# on every core they run on between and within tokens, so the HTTP worker relaying a token and
# the client reading it wait for a core: a quarter of the first tokens through HTTP came 4-25
# ms late on 2 cores, against 1 in 30 with this, at the same decode speed (README: Performance).
OPENMP_SPIN_COUNT = "20000"


def instance_environment(environ: Mapping[str, str], malloc_advice: bool = False) -> dict:
    """An instance process's environment: the service's, with llama.cpp's crash backtraces
    off (they only add noise to the log tail), unbuffered output, the OpenMP spin count above
    unless the operator set OpenMP's waiting themselves, and with `malloc_advice` glibc's
    malloc advising huge pages (`workers.hugepages`)."""
    env = {**environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"}
    if "GOMP_SPINCOUNT" not in environ and "OMP_WAIT_POLICY" not in environ:
        env["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
    return hugepages.environment(env) if malloc_advice else env


class InstanceProcess(Protocol):
    handle: str
    pid: int
    started: int | None

    def send_spec(self, spec: dict) -> None: ...
    def events(self) -> Iterator[dict]: ...
    def ask(self, socket_path: str, request: dict, timeout: float = 5.0) -> dict: ...
    def signal(self, sig: int) -> bool: ...
    def exit_fd(self) -> int | None: ...
    def reap(self) -> int | None: ...
    def alive(self) -> bool: ...
    def dismiss(self) -> None: ...


class ChildProcess:
    """An instance process this supervisor spawned: its pipes and its exit status are ours."""

    def __init__(self, handle: str, popen: subprocess.Popen):
        self.handle = handle
        self.popen = popen
        self.pid = popen.pid
        self.started = procs.start_time(popen.pid)

    def send_spec(self, spec: dict) -> None:
        try:
            self.popen.stdin.write((json.dumps(spec) + "\n").encode())
            self.popen.stdin.close()
        except OSError:
            pass  # it died: the death watch reports it

    def events(self) -> Iterator[dict]:
        """Progress, then loaded or failed, from its stdout (until it closes)."""
        try:
            for line in self.popen.stdout:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
        finally:
            self.popen.stdout.close()

    def ask(self, socket_path: str, request: dict, timeout: float = 5.0) -> dict:
        return call(socket_path, request, timeout)

    def signal(self, sig: int) -> bool:
        return procs.signal_process(self.pid, self.started, sig)

    def exit_fd(self) -> int | None:
        return procs.pidfd(self.pid)

    def reap(self) -> int | None:
        return self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def dismiss(self) -> None:
        """A spare that never got a spec: EOF on stdin makes it exit."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


class AdoptedProcess(ChildProcess):
    """An instance that an earlier supervisor spawned: no pipes, and its exit status is not
    ours to read (only its parent's), so `reap` says None."""

    def __init__(self, handle: str, pid: int, started: int):
        self.handle, self.pid, self.started, self.popen = handle, pid, started, None

    def send_spec(self, spec: dict) -> None:
        raise RuntimeError("an adopted instance is loaded already")

    def events(self) -> Iterator[dict]:
        return iter(())

    def reap(self) -> int | None:
        return None

    def alive(self) -> bool:
        return procs.same_process(self.pid, self.started)

    def dismiss(self) -> None:
        pass

    def wait_exit(self, timeout: float) -> bool:
        return procs.wait_gone(self.pid, self.started, timeout)


class Launcher:
    """Spawns instance processes: ``python -m workers.instance``, in their own session (they
    survive a supervisor crash and get no terminal signals), stderr into their log file.
    `malloc_advice()` says whether a process gets malloc's huge-page advice: the supervisor's
    decision for every load (a spare is spawned before its load is known)."""

    def __init__(self, state_dir: StateDir, queue_size: int,
                 malloc_advice: Callable[[], bool] = lambda: False):
        self.state_dir = state_dir
        self.queue_size = queue_size
        self.malloc_advice = malloc_advice

    def spawn(self) -> ChildProcess:
        handle = uuid.uuid4().hex[:HANDLE_LENGTH]
        env = instance_environment(os.environ, self.malloc_advice())
        with open(self.state_dir.log(handle), "ab") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "workers.instance", "--state-dir", str(self.state_dir.path),
                 "--handle", handle, "--queue-size", str(self.queue_size)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
                start_new_session=True, close_fds=True)
        return ChildProcess(handle, popen)


def graceful_then_kill(ask: Callable[[], None], gone: Callable[[float], bool],
                       process: InstanceProcess, graceful: float, what: str) -> bool:
    """Ask a process to stop, give it `graceful` seconds (`gone(timeout)` waits), then SIGKILL
    it and give it `KILL_WAIT` more. True once it has gone."""
    ask()
    if gone(graceful):
        return True
    log.warning("%s did not stop in %.0f s: killing it", what, graceful)
    process.signal(signal.SIGKILL)
    return gone(KILL_WAIT)
