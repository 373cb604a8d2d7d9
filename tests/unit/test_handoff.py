"""A stream handed off to its instance (`workers.instance.handoff`): a line that carries a file
descriptor, and an instance (its real socket server, a scripted engine) that writes a stream's
further text on the client's connection itself, stops when that client is gone or stops
reading, and keeps log-probabilities for the worker."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.helpers import wait_for
from tests.unit.scripted_instance import AFTER, BEFORE, ScriptEngine, hand_off, read_chunks
from workers.protocol import Channel



def test_a_line_carries_a_file_descriptor_and_one_nobody_claims_is_closed():
    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        Channel(ours).send({"n": 1}, fds=(write_end,))
        receiver = Channel(theirs)
        assert receiver.recv() == {"n": 1}
        received = receiver.take_fd()
        assert received is not None and received != write_end
        os.write(received, b"via the passed descriptor")
        assert os.read(read_end, 100) == b"via the passed descriptor"
        os.close(received)

        Channel(ours).send({"n": 2}, fds=(write_end,))
        os.close(write_end)
        write_end = None
        assert receiver.recv() == {"n": 2}
        receiver.close()  # closes the descriptor nobody took: the pipe's last writer
        assert os.read(read_end, 100) == b""
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
        ours.close()


def test_the_instance_writes_the_text_after_the_first_on_the_handed_over_connection(serve_instance):
    instance, path = serve_instance(ScriptEngine(["Hel", "lo", " wor", "ld\n\"ok\""]))
    client, client_end = socket.socketpair()
    client.settimeout(10)
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "hand_off": True})
        assert channel.recv() == {"text": "Hel", "tokens": 1}  # the worker writes the first
        # the next text waits for the connection (it would otherwise come on the channel)
        assert channel.recv_ready(0.2) is None
        hand_off(channel, client_end)
        done = channel.recv()["done"]
    assert done["handed_off"] == 'lo world\n"ok"'
    assert read_chunks(client) == [BEFORE + b'"lo"' + AFTER, BEFORE + b'" wor"' + AFTER,
                                   BEFORE + b'"ld\\n\\"ok\\""' + AFTER]
    # read_chunks saw the end of the stream: the instance closed its copy before "done"
    status = instance.status()
    assert (status["generated_tokens"], status["handed_off_tokens"]) == (4, 3)
    client.close()


def test_a_client_gone_mid_stream_stops_the_generation(serve_instance):
    instance, path = serve_instance(ScriptEngine(["tick"], keep_going=True))
    client, client_end = socket.socketpair()
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "hand_off": True})
        assert channel.recv()["text"] == "tick"
        client.close()  # gone before the hand-off: the first write fails
        hand_off(channel, client_end)
        done = channel.recv()["done"]
    assert done["stop"] == "cancelled" and done["handed_off"] == ""
    wait_for(lambda: not instance.status()["busy"], timeout=10, what="the instance to be idle")


def test_a_client_that_does_not_read_holds_the_instance_only_until_its_worker_leaves(serve_instance):
    instance, path = serve_instance(ScriptEngine(["x" * 4096], keep_going=True))
    client, client_end = socket.socketpair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    channel = Channel.connect(path, 10)
    channel.send({"op": "run", "kind": "generate", "params": {}, "hand_off": True})
    assert "text" in channel.recv()
    hand_off(channel, client_end)
    wait_for(lambda: instance.status()["handed_off_tokens"] > 0, timeout=10,
             what="the instance to write on the connection")
    assert channel.recv_ready(0.3) is None  # still writing, blocked on the client
    assert instance.status()["busy"]
    channel.close()  # the HTTP worker gives up on the request
    wait_for(lambda: not instance.status()["busy"], timeout=10,
             what="the instance to stop writing to a client that does not read")
    client.close()


def test_log_probabilities_stay_with_the_worker(serve_instance):
    handed = threading.Event()
    instance, path = serve_instance(ScriptEngine(["a", "b", "c"], gate=handed))
    client, client_end = socket.socketpair()
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {"logprobs": 0},
                      "hand_off": True})
        assert channel.recv()["text"] == "a"
        hand_off(channel, client_end)
        client.settimeout(10)
        assert client.recv(10) == b""  # the instance closed the descriptor it did not ask for
        handed.set()
        lines = [channel.recv() for _ in range(3)]
    assert [line.get("text") for line in lines[:2]] == ["b", "c"]
    assert all("logprobs" in line for line in lines[:2])
    assert "handed_off" not in lines[2]["done"]
    assert instance.status()["handed_off_tokens"] == 0
    client.close()


class TellingEngine(ScriptEngine):
    """Notes, when its first send returns, whether the client had said it wrote that text on."""

    def __init__(self, texts, told: threading.Event):
        super().__init__(texts)
        self.told, self.told_when_resumed = told, []

    def generate(self, params, send, cancelled):
        def noting(line):
            send(line)
            self.told_when_resumed.append(self.told.is_set())
        super().generate(params, noting, cancelled)


@pytest.mark.parametrize("how", ["first_written", "hand_off"])
def test_the_next_token_waits_until_the_client_wrote_the_first_on(serve_instance, monkeypatch,
                                                                  how):
    # decoding at once would take the cores from the worker writing the first token
    monkeypatch.setattr("workers.instance.jobs.FIRST_WRITTEN_WAIT", 30.0)
    told = threading.Event()
    engine = TellingEngine(["a", "b"], told)
    instance, path = serve_instance(engine)
    client, client_end = socket.socketpair()
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "first_written": True,
                      "hand_off": how == "hand_off"})
        assert channel.recv() == {"text": "a", "tokens": 1}
        assert channel.recv_ready(0.2) is None  # nothing more until it is told
        told.set()
        if how == "hand_off":
            hand_off(channel, client_end)
        else:
            channel.send({"op": "first_written"})
        rest = [channel.recv() for _ in range(1 if how == "hand_off" else 2)]
    assert engine.told_when_resumed[0] is True
    assert rest[-1]["done"]["completion_tokens"] == 2
    client.close()


def test_a_client_that_never_says_it_wrote_the_first_still_gets_every_token(serve_instance,
                                                                             monkeypatch):
    monkeypatch.setattr("workers.instance.jobs.FIRST_WRITTEN_WAIT", 0.05)
    instance, path = serve_instance(ScriptEngine(["a", "b", "c"]))
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "first_written": True})
        lines = [channel.recv() for _ in range(1)]
        first_came = time.monotonic()
        lines += [channel.recv() for _ in range(3)]
        assert time.monotonic() - first_came >= 0.04  # the second waited out the bound (0.05 s)
    assert [line.get("text") for line in lines[:3]] == ["a", "b", "c"]
    assert lines[3]["done"]["completion_tokens"] == 3


def test_a_cancel_read_together_with_first_written_still_stops_the_generation(serve_instance):
    # a client that leaves right after the first token: both lines can arrive in one read
    instance, path = serve_instance(ScriptEngine(["tick"], keep_going=True))
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "first_written": True})
        assert channel.recv()["text"] == "tick"
        channel.sock.sendall(b'{"op":"first_written"}\n{"op":"cancel"}\n')
        deadline = time.monotonic() + 10
        while "done" not in (line := channel.recv()):
            assert time.monotonic() < deadline, "the cancel was not seen"
    assert line["done"]["stop"] == "cancelled"
