"""JSON lines over Unix stream sockets: the wire format of every local RPC in lmhost.

HTTP worker -> supervisor (control: load, unload, status) and HTTP worker/supervisor ->
instance (info, status, shutdown, inference) all send one JSON object per line and read one
or more JSON objects back (a load streams progress events, then its result).

Lines are capped (`MAX_LINE`) so a broken peer cannot make a reader buffer without bound.
"""

from __future__ import annotations

import json
import socket

MAX_LINE = 16 * 1024 * 1024


class ProtocolError(ConnectionError):
    """The peer closed the connection or sent something that is not a JSON line."""


class Channel:
    """One connection: `send(obj)` writes a line, `recv()` reads the next object."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def connect(cls, path: str, timeout: float | None) -> "Channel":
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


def listen(path: str, backlog: int = 64) -> socket.socket:
    """A listening Unix socket at `path`, replacing a stale socket file left by a dead owner."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        import os
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
