"""JSON lines over Unix stream sockets: the wire format of every local RPC in lmhost.

HTTP worker -> supervisor (control: load, unload, status) and HTTP worker/supervisor ->
instance (info, status, expire, evict, shutdown, inference) all send one JSON object per line
and read one or more JSON objects back (a load streams progress events, then its result).
Both servers are a `UnixServer`: a thread per connection, each handled with a `Channel`; an
instance takes the first step of a request that arrived whole on the accepting thread
(`UnixServer`'s ``take``), so that an inference job is queued before its connection's thread
exists.

Lines are capped (`MAX_LINE`) so a broken peer cannot make a reader buffer without bound.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import socketserver
import threading
from typing import Callable

MAX_LINE = 16 * 1024 * 1024
READ_SIZE = 64 * 1024
# How long an accepting thread waits for a connection's first line (`UnixServer`'s take): a
# client sends its request right after connecting, so it is there at once or within a few
# hundred microseconds. A later or longer one is read by the connection's thread.
TAKE_WAIT = 0.002
# File descriptors a line may carry (SCM_RIGHTS): an HTTP worker hands an instance its
# client's connection with one line (`workers.inference.Reply.messages`).
MAX_FDS = 1
FD_SIZE = array.array("i").itemsize


class ProtocolError(ConnectionError):
    """The peer closed the connection or sent something that is not a JSON line."""


class Channel:
    """One connection: `send(obj)` writes a line, `recv()` reads the next object. A line
    may carry file descriptors (`send(obj, fds)`); the receiver claims them with `take_fd()`,
    and the ones nobody claimed are closed with the channel."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = bytearray()
        self._scanned = 0  # no newline in _buffer[:_scanned]
        self._fds: list[int] = []

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

    def send(self, obj, fds: tuple[int, ...] = ()) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        if fds:
            sent = socket.send_fds(self.sock, [data], list(fds))
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def recv_line(self) -> bytes:
        """The next line as sent, newline included (for relaying without decoding)."""
        while True:
            line = self._buffered_line()
            if line is not None:
                return line
            if not self._fill(0):
                raise ProtocolError("connection closed by peer" if not self._buffer
                                    else "line cut short")

    def recv(self):
        return _decode(self.recv_line())

    def recv_ready(self, wait: float):
        """The next object if its whole line arrives within `wait` seconds, else None (what
        did arrive stays buffered for the next `recv`)."""
        line = self._buffered_line()
        if line is None:
            readable, _, _ = select.select([self.sock], [], [], wait)
            if not readable:
                return None
            try:
                if not self._fill(socket.MSG_DONTWAIT):
                    raise ProtocolError("connection closed by peer")
            except BlockingIOError:
                return None
            line = self._buffered_line()
        return None if line is None else _decode(line)

    def take_fd(self) -> int | None:
        """A file descriptor that came with the lines read so far (the caller owns it)."""
        return self._fds.pop(0) if self._fds else None

    def _buffered_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end >= MAX_LINE:
            raise ProtocolError("line too long")
        if end < 0:
            self._scanned = len(self._buffer)
            if self._scanned > MAX_LINE:
                raise ProtocolError("line too long")
            return None
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        self._scanned = 0
        return line

    def _fill(self, flags: int) -> bool:
        """Read what is there (blocking unless `flags` says not to); False at end of stream."""
        # (socket.recv_fds would drop `flags`)
        data, ancillary, _, _ = self.sock.recvmsg(
            READ_SIZE, socket.CMSG_SPACE(MAX_FDS * FD_SIZE), flags | socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % FD_SIZE])
                self._fds.extend(fds)
        self._buffer += data
        return bool(data)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def json_text(text: str) -> bytes:
    """A text as JSON, spelled the one way every streamed text chunk spells it (UTF-8 as it
    is), whether the HTTP worker writes the chunk or the instance (`instance.handoff`)."""
    return json.dumps(text, ensure_ascii=False).encode()


# the text a template is made with: JSON spells it "\u0000", which marks where a text goes
_PLACEHOLDER = "\0"


def text_template(encode: Callable[[str], bytes]) -> tuple[bytes, bytes]:
    """What `encode` (a text -> its event's data, by ``json.dumps``) writes before and after the
    text's JSON: a stream's text event is then prefix + `json_text(text)` + suffix, one small
    ``json.dumps`` a token (the hot path), and a template the instance can fill as well."""
    prefix, _, suffix = encode(_PLACEHOLDER).partition(json_text(_PLACEHOLDER))
    return prefix, suffix


def can_hand_off(kind: str, params: dict) -> bool:
    """Whether a job's instance may write its further text on the client's connection
    (`workers.instance.handoff`): a text generation without log-probabilities (those chunks
    carry more than the text: the HTTP worker writes them). The HTTP worker asks for a
    hand-off only then (`workers.inference.Inference.run`), and the instance, which does not
    take the worker's word for it, checks again (`workers.instance.server.Job`)."""
    return kind == "generate" and params.get("logprobs") is None


def _decode(line: bytes):
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None


def call(path: str | os.PathLike, request: dict, timeout: float = 5.0) -> dict:
    """One request, one answer (``info``, ``status``, ``expire``, ...)."""
    with Channel.connect(path, timeout) as channel:
        channel.send(request)
        return channel.recv()


class UnixServer(socketserver.UnixStreamServer):
    """A thread per connection, each handed to `handle(channel)`; the connection closes when
    `handle` returns. Listening (mode 0600) once constructed: `serve_forever()` accepts,
    `shutdown()` (from another thread) stops accepting, `server_close()` removes the socket.

    `take(channel, request)`, when given, runs on the accepting thread for a connection whose
    request line is there as it is accepted (within `TAKE_WAIT`), and returns what is left to
    do on the connection's thread (None: nothing, close it). Its work must be short: the next
    connection waits for it. A request that has not all arrived by then goes to `handle` on
    the connection's thread, which reads it. (The socket is its owner's alone, mode 0600 in
    the private state dir: no stranger can stall the accepting thread.)"""

    request_queue_size = 64

    def __init__(self, path: str | os.PathLike, handle: Callable[[Channel], None],
                 take: Callable[[Channel, object], Callable[[], None] | None] | None = None):
        self.path = str(path)
        self.handle_channel = handle
        self.take = take
        if os.path.exists(self.path):  # a stale socket file left by a dead owner
            os.unlink(self.path)
        super().__init__(self.path, socketserver.BaseRequestHandler)  # process_request serves
        os.chmod(self.path, 0o600)

    def process_request(self, sock: socket.socket, client_address) -> None:
        sock.settimeout(None)
        channel = Channel(sock)
        work: Callable[[], None] | None = lambda: self.handle_channel(channel)
        if self.take is not None:
            try:
                request = channel.recv_ready(TAKE_WAIT)
                if request is not None:
                    work = self.take(channel, request)
            except (OSError, ProtocolError):
                work = None  # gone already, or not a JSON line: nothing to answer
        if work is None:
            channel.close()
            return
        # daemon: a connection in flight never holds up the process's exit
        threading.Thread(target=self._run, args=(channel, work), daemon=True).start()

    @staticmethod
    def _run(channel: Channel, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            channel.close()

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
