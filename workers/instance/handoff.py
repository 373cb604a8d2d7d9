"""A stream's text written by the instance itself, on the client's connection.

Relaying each token through the HTTP worker costs that worker a wakeup, a read and a write per
token, on the same cores as llama.cpp's threads (about 200 us of CPU a token on a 2-core host,
a few percent of a small model's decode). So an HTTP worker that streams SSE over a plain
HTTP/1.1 connection asks for a hand-off (``"hand_off": true`` in the ``run`` request), writes
the response head and the first text event itself, and then sends the instance its client's
socket (``{"op": "hand_off", "before", "after"}`` carrying the descriptor). From then on the
instance writes every further text event on that socket itself, as one HTTP chunk each:
``before`` + the text as a JSON string + ``after``. Every other line (tool calls, ``done``)
still goes to the worker, which writes the rest of the response once ``done`` has come: the
instance closes its copy of the socket before it sends ``done``, so the two never write at
once. ``done`` carries the text written here as ``handed_off``, for a worker that answers with
the whole text at the end (``/api/v1/chat``'s ``chat.end``).

The instance never changes the socket's flags (its file description is shared with the HTTP
worker): writes use ``MSG_DONTWAIT`` and wait with ``poll``. A client that is gone, or a
cancel, ends the writing: the generation is cancelled and stops at its next token.
"""

from __future__ import annotations

import os
import select
import socket
import threading

from workers.protocol import json_text

SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
POLL_SLICE_MS = 200  # how often a write to a client that does not read looks for a cancel


class Handoff:
    """The client's connection once the HTTP worker has handed it over (`give`, from the
    connection's thread); `write_text` (from the executor) waits for it until then."""

    def __init__(self, cancelled: threading.Event):
        self.cancelled = cancelled
        self._given = threading.Event()  # set by `give` or `wake`
        self._lock = threading.Lock()  # `give` (connection's thread) vs `close` (executor)
        self._closed = False
        self._sock: socket.socket | None = None
        self._before = self._after = b""
        self.written: list[str] = []

    def give(self, fd: int, before: bytes, after: bytes) -> None:
        with self._lock:
            if self._closed:  # the job ended before the hand-off came
                os.close(fd)
                return
            self._sock = socket.socket(fileno=fd)
            self._before, self._after = before, after
        self._given.set()

    def wake(self) -> None:
        """The job was cancelled: a writer waiting for the socket stops waiting."""
        self._given.set()

    def write_text(self, text: str) -> bool:
        """Write one text event to the client, once the socket is here; nothing once the job is
        cancelled (the client went away, or the worker gave up). Whether it was written."""
        self._given.wait()
        if self._sock is None or self.cancelled.is_set():
            return False
        frame = self._before + json_text(text) + self._after
        try:
            self._send_all(b"%X\r\n" % len(frame) + frame + b"\r\n")
        except OSError:
            self.cancelled.set()  # the client is gone: stop generating for it
            return False
        self.written.append(text)
        return True

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        poller = None
        while view:
            try:
                view = view[self._sock.send(view, SEND_FLAGS):]
            except BlockingIOError:  # the client reads slower than we write
                if poller is None:
                    poller = select.poll()
                    poller.register(self._sock, select.POLLOUT)
                while not poller.poll(POLL_SLICE_MS):
                    if self.cancelled.is_set():
                        raise ConnectionAbortedError("cancelled while the client was not reading")

    def close(self) -> str:
        """Close this copy of the socket (for good); the text written on it."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        return "".join(self.written)
