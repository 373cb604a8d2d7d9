"""JSON lines over Unix stream sockets: the wire format of every local RPC in lmhost.

HTTP worker -> supervisor (control: load, unload, status) and HTTP worker/supervisor ->
instance (info, status, expire, evict, shutdown, inference) all send one JSON object per line
and read one or more JSON objects back (a load streams progress events, then its result).
Both servers are a `UnixServer`: a thread per connection, each handled with a `Channel`.

Lines are capped (`MAX_LINE`) so a broken peer cannot make a reader buffer without bound.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
from typing import Callable

MAX_LINE = 16 * 1024 * 1024


class ProtocolError(ConnectionError):
    """The peer closed the connection or sent something that is not a JSON line."""


class Channel:
    """One connection: `send(obj)` writes a line, `recv()` reads the next object."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def connect(cls, path: str | os.PathLike, timeout: float | None) -> "Channel":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def send(self, obj) -> None:
        self.sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def recv_line(self) -> bytes:
        """The next line as sent, newline included (for relaying without decoding)."""
        line = self._reader.readline(MAX_LINE + 1)
        if not line:
            raise ProtocolError("connection closed by peer")
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise ProtocolError("line too long or cut short")
        return line

    def recv(self):
        line = self.recv_line()
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ProtocolError(f"not JSON: {exc}") from None

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def call(path: str | os.PathLike, request: dict, timeout: float = 5.0) -> dict:
    """One request, one answer (``info``, ``status``, ``expire``, ...)."""
    with Channel.connect(path, timeout) as channel:
        channel.send(request)
        return channel.recv()


class _ChannelHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(None)
        channel = Channel(self.request)
        try:
            self.server.handle_channel(channel)
        finally:
            channel.close()


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection, each handed to `handle(channel)`; the connection closes when
    `handle` returns. Listening (mode 0600) once constructed: `serve_forever()` accepts,
    `shutdown()` (from another thread) stops accepting, `server_close()` removes the socket."""

    daemon_threads = True   # a connection in flight never holds up the process's exit
    request_queue_size = 64

    def __init__(self, path: str | os.PathLike, handle: Callable[[Channel], None]):
        self.path = str(path)
        self.handle_channel = handle
        if os.path.exists(self.path):  # a stale socket file left by a dead owner
            os.unlink(self.path)
        super().__init__(self.path, _ChannelHandler)
        os.chmod(self.path, 0o600)

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
