"""An instance's real socket server (`workers.instance.server.Instance`) around a scripted
engine, for the unit tests of what the instance does with a job's lines; a hand-off's client
end, read as HTTP chunks."""

from __future__ import annotations

import socket
import threading

import pytest

from workers.instance.server import Instance
from workers.protocol import Channel

BEFORE, AFTER = b'data: {"text":', b"}\n\n"


class ScriptEngine:
    """Sends `texts` one line each (1 token each), then ``done``; stops early when cancelled.
    `keep_going`: repeat the last text until cancelled. `gate`: waited for after the first."""

    def __init__(self, texts, keep_going=False, gate=None):
        self.texts, self.keep_going, self.gate = texts, keep_going, gate

    def generate(self, params, send, cancelled):
        sent = 0
        while not cancelled.is_set() and (sent < len(self.texts) or self.keep_going):
            line = {"text": self.texts[min(sent, len(self.texts) - 1)], "tokens": 1}
            if params.get("logprobs") is not None:
                line["logprobs"] = [{"token": line["text"], "logprob": -0.5}]
            send(line)
            sent += 1
            if sent == 1 and self.gate is not None:
                assert self.gate.wait(10)
        send({"done": {"stop": "cancelled" if cancelled.is_set() else "eos",
                       "completion_tokens": sent}})


@pytest.fixture
def serve_instance(tmp_path):
    started = []

    def start(engine):
        path = str(tmp_path / "i.sock")
        instance = Instance({"instance_id": "x"}, engine, path, queue_size=1)
        instance.exit = lambda: None
        instance.listen()
        threading.Thread(target=instance.serve, daemon=True).start()
        started.append(instance)
        return instance, path

    yield start
    for instance in started:
        instance.server.shutdown()
        instance.server.server_close()
        instance.jobs.put(None)


def read_chunks(sock: socket.socket) -> list[bytes]:
    """HTTP chunks until the other end is closed (every copy of it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    chunks = []
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        assert rest[length:length + 2] == b"\r\n", "a chunk's framing is broken"
        chunks.append(rest[:length])
        data = rest[length + 2:]
    return chunks


def hand_off(channel: Channel, client_end: socket.socket) -> None:
    channel.send({"op": "hand_off", "before": BEFORE.decode(), "after": AFTER.decode()},
                 fds=(client_end.fileno(),))
    client_end.close()  # the instance holds the only other copy now
