"""What HTTP workers use to reach the supervisor: control RPC over its Unix socket, and the
start/stop of the supervisor process itself.

A control call that cannot connect starts the supervisor again (under a file lock, so one HTTP
worker starts it while the others wait), waits a bounded time for it, and otherwise fails with
`Unavailable` (503): nothing hangs. Starting it first asks the engine probe (cached) whether
llama.cpp can run here at all: when it cannot, `EngineUnusable` says why and how to fix it, and
the service refuses to start (gunicorn's on_starting).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Iterator

from filelock import FileLock, Timeout

from config import Settings, to_env, without_secrets
from workers import engine_probe, procs, served
from workers.errors import Unavailable, from_wire
from workers.protocol import Channel, ProtocolError
from workers.statedir import StateDir
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
RESTART_WAIT = 10.0


def _connect(settings: Settings) -> Channel:
    return Channel.connect(StateDir(settings.state_dir).supervisor_socket, CONNECT_TIMEOUT)


def ping(settings: Settings) -> bool:
    try:
        with _connect(settings) as channel:
            channel.send({"op": "ping"})
            return "result" in channel.recv()
    except (OSError, ProtocolError):
        return False


class EngineUnusable(Unavailable):
    """The llama.cpp engine cannot decode on this host (the engine probe's verdict)."""


def start_supervisor(settings: Settings, wait: float | None = None) -> bool:
    """Start the supervisor unless it answers; True once it answers (within `wait` s).
    Raises `EngineUnusable` when llama.cpp cannot run on this host."""
    wait = RESTART_WAIT if wait is None else wait
    if ping(settings):
        return True
    engine = engine_probe.check_engine(settings.cache_dir)
    if not engine.usable:
        raise EngineUnusable(engine.reason)
    lock = FileLock(str(StateDir(settings.state_dir).start_lock))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        log.warning("another process has been starting the supervisor for %.0f s", wait)
        return ping(settings)
    try:
        if ping(settings):  # another worker started it while we waited for the lock
            return True
        log.info("starting the supervisor for %s", settings.state_dir)
        starter = subprocess.Popen(
            [sys.executable, "-m", "workers", "--state-dir", str(settings.state_dir), "--daemon"],
            env=without_secrets({**os.environ, **to_env(settings)}), stdin=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)
        starter.wait(timeout=30)  # returns as soon as the daemon has forked
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if ping(settings):
                return True
            time.sleep(0.05)
        return False
    finally:
        lock.release()


def stop_supervisor(settings: Settings, timeout: float) -> None:
    """Stop the supervisor and with it every instance; kill whatever is left after `timeout`.
    Used when the service stops (gunicorn's on_exit)."""
    state_dir = StateDir(settings.state_dir)
    if not ping(settings) and any(state_dir.instances.glob("*.sock")):
        # Instances without a supervisor (it crashed, and maybe the table is damaged): a new
        # supervisor adopts them from their sockets, so that the shutdown below reaches them.
        start_supervisor(settings, wait=10)
    try:
        with _connect(settings) as channel:
            channel.settimeout(timeout)
            channel.send({"op": "shutdown"})
            channel.recv()
    except (OSError, ProtocolError):
        log.warning("supervisor did not confirm its shutdown: stopping what is left by pid")
    try:
        pid, started = (int(x) for x in state_dir.pid_file.read_text().split())
        if not procs.wait_gone(pid, started, 10):
            procs.stop_process(pid, started, 5)
    except (OSError, ValueError):
        pass
    try:
        rows = InstanceTable(settings.state_dir).read()
    except TableUnreadable:
        rows = []
    for row in rows:  # a supervisor that died without stopping its instances
        if row.get("pid") and row.get("started"):
            procs.signal_process(row["pid"], row["started"], signal.SIGKILL)


class SupervisorClient:
    def __init__(self, settings: Settings):
        self.settings = settings

    def _channel(self) -> Channel:
        try:
            return _connect(self.settings)
        except OSError:
            pass
        if not start_supervisor(self.settings):
            raise Unavailable("the supervisor cannot be reached; try again shortly")
        try:
            return _connect(self.settings)
        except OSError:
            raise Unavailable("the supervisor cannot be reached; try again shortly") from None

    def events(self, request: dict, timeout: float = 600.0) -> Iterator[dict]:
        """Send one control request; yield its events, then its result as
        ``{"result": ...}``. An error reply raises the matching `LmhostError`.

        A supervisor that dies before it answers anything (a connection accepted by a dying
        process is closed unanswered) is replaced and asked once more: whatever it had begun
        for this request did not survive it (loads in progress are dropped at adoption)."""
        for attempt in (1, 2):
            channel = self._channel()
            answered = False
            try:
                channel.settimeout(timeout)
                channel.send(request)
                while True:
                    try:
                        message = channel.recv()
                    except (OSError, ProtocolError):
                        if answered or attempt == 2:
                            raise Unavailable("the supervisor stopped answering") from None
                        break  # unanswered: try once more
                    answered = True
                    if "error" in message:
                        raise from_wire(message["error"])
                    if isinstance(message.get("result"), dict):  # a load's or an unload's
                        served.note(message["result"].get("instance_id"))
                    yield message
                    if "result" in message:
                        return
            except OSError:
                if attempt == 2:
                    raise Unavailable("the supervisor stopped answering") from None
            finally:
                channel.close()

    def call(self, request: dict, timeout: float = 600.0) -> dict:
        for message in self.events(request, timeout):
            if "result" in message:
                return message["result"]
        raise Unavailable("the supervisor closed the connection")

    def load(self, load_request: dict) -> Iterator[dict]:
        return self.events({"op": "load", "request": load_request})

    def unload(self, instance_id: str) -> dict:
        return self.call({"op": "unload", "instance_id": instance_id},
                         timeout=self.settings.unload_timeout + 30)

    def estimate(self, load_request: dict) -> dict:
        """A load's memory estimate and whether it would fit now; nothing is loaded."""
        return self.call({"op": "estimate", "request": load_request}, timeout=30)

    def resources(self) -> dict:
        return self.call({"op": "resources"}, timeout=30)
