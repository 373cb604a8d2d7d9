"""The SDK websockets open in one HTTP worker process: the limit on them, and closing them all.

Under gunicorn's gthread worker a websocket holds a worker thread for its whole life. The
worker runs ``LMHOST_THREADS + LMHOST_SDK_MAX_SOCKETS`` threads (config/gunicorn.conf.py) and
this registry admits at most ``LMHOST_SDK_MAX_SOCKETS`` sockets, so ``LMHOST_THREADS`` threads
always remain for plain HTTP however many SDK clients connect. A socket over the limit is
answered with an error frame and closed (see `session.Session`), never left waiting.

Open sockets would hold a graceful stop for the whole graceful timeout (the worker waits for
its threads): `close_on_signals` closes them as soon as the worker is told to stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from workers.metric_files import recorded

log = logging.getLogger(__name__)

GOING_AWAY = 1001  # websocket close code: the server is going down


class SocketRegistry:
    def __init__(self, max_sockets: int, gauge=None):
        self.max_sockets = max_sockets
        self.gauge = gauge  # open sockets by namespace (app.metrics), or None
        self._lock = threading.Lock()
        self._sessions: set = set()   # guarded by _lock
        self._closing = False         # guarded by _lock: no new socket once the worker stops

    def admit(self, session) -> bool:
        """Count `session` in, unless the worker is at its limit or stopping."""
        with self._lock:
            if self._closing or len(self._sessions) >= self.max_sockets:
                return False
            self._sessions.add(session)
        if self.gauge is not None:
            recorded(self.gauge.labels(namespace=session.namespace.name).inc)
        return True

    def leave(self, session) -> None:
        with self._lock:
            if session not in self._sessions:
                return
            self._sessions.discard(session)
        if self.gauge is not None:
            recorded(self.gauge.labels(namespace=session.namespace.name).dec)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close_all(self, reason: str) -> int:
        """Close every open socket (its loop then ends); refuse new ones. Returns how many."""
        with self._lock:
            self._closing = True
            sessions = list(self._sessions)
        for session in sessions:
            session.close(GOING_AWAY, reason)
        if sessions:
            log.info("closed %d SDK socket(s): %s", len(sessions), reason)
        return len(sessions)


def close_on_signals(registry: SocketRegistry,
                     signals=(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)) -> None:
    """Close `registry`'s sockets when this process gets one of `signals`, then let the
    handler that was installed before (gunicorn's) run. The handler only writes a byte to a
    pipe; a thread does the closing. Call from the process's main thread."""
    read_fd, write_fd = os.pipe()

    def closer():
        os.read(read_fd, 1)
        registry.close_all("lmhost is shutting down")

    threading.Thread(target=closer, name="sdk-closer", daemon=True).start()
    for sig in signals:
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            os.write(write_fd, b"x")
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)
