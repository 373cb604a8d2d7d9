"""Lenient JSON bodies, llama.cpp failure reasons, an instance's queue and expiry (with a fake
model and an injected clock), the Unix socket server's quick path for whole requests, and an
instance process's environment."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from app.jsonbody import loads_lenient, strip_trailing_commas
from tests.helpers import wait_for
from workers.crashes import failure_reason
from workers.instance.server import Instance
from workers.protocol import Channel, UnixServer, call
from workers.supervisor.processes import OPENMP_SPIN_COUNT, instance_environment


def test_trailing_commas_are_dropped_outside_strings_only():
    seed = b'{\n  "model": "openai/gpt-oss-20b",\n  "context_length": 16384,\n  "echo_load_config": true,\n}'
    assert loads_lenient(seed)["context_length"] == 16384
    assert strip_trailing_commas('{"a": "x,}", "b": [1, 2 , ] ,}') == '{"a": "x,}", "b": [1, 2  ] }'
    assert loads_lenient(b'{"s": "quote \\" ,}"}') == {"s": 'quote " ,}'}
    for bad in (b"{'a': 1}", b'{"a": 1 /* c */}', b'{"a": }', b"[,]"):
        with pytest.raises(json.JSONDecodeError):
            loads_lenient(bad)


def test_failure_reason_quotes_llama_cpp_not_our_own_lines():
    tail = "\n".join([
        "2026 [instance abc] INFO loading /m/x.gguf for instance 'x'",
        "llama_model_loader: loaded meta data with 20 key-value pairs",
        "llama_model_load: error loading model: tensor 'blk.0.w' data is not within the file bounds",
        "llama_model_load_from_file_impl: failed to load model",
    ])
    reason = failure_reason(tail, "fallback")
    assert reason.startswith("llama_model_load: error loading model: tensor")
    assert "failed to load model" in reason and "[instance" not in reason
    assert failure_reason("nothing useful here", "exit code 1") == "exit code 1"


class FakeChannel:
    def __init__(self):
        self.sent = []

    def send(self, obj):
        self.sent.append(obj)

    def close(self):
        pass


class BlockingEngine:
    """Stands in for the instance's generation engine: a generation that runs until released."""

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()

    def generate(self, params, send, cancelled):
        self.started.set()
        self.release.wait(10)
        send({"done": {"stop": "eos"}})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_expiry_never_cuts_a_running_or_queued_request(tmp_path):
    llm, clock = BlockingEngine(), Clock()
    instance = Instance({"instance_id": "x"}, llm, str(tmp_path / "x.sock"), queue_size=1,
                        clock=clock)
    exits = []
    instance.exit = lambda: exits.append(True)  # instead of ending the test process
    worker = threading.Thread(target=instance.execute_jobs, daemon=True)
    worker.start()

    assert instance.enqueue({"kind": "generate", "params": {}}, FakeChannel())
    assert llm.started.wait(5)  # running: the queue (size 1) is empty again
    assert instance.enqueue({"kind": "generate", "params": {}}, FakeChannel())  # queued
    refused = FakeChannel()
    assert instance.enqueue({"kind": "generate", "params": {}}, refused) is None
    assert refused.sent[0]["error"]["type"] == "overloaded"
    clock.now += 3600  # long after the last request began: only the work in flight keeps it
    assert instance.expire(1)["expired"] is False
    status = instance.status()
    assert (status["busy"], status["queued"]) == (True, 1)

    llm.release.set()
    wait_for(lambda: not (instance.status()["busy"] or instance.status()["queued"]), timeout=10,
             what="both jobs to finish")
    assert instance.expire(3600)["expired"] is False  # just used
    assert instance.expire(1) == {"expired": False, "last_used_ago": 0.0}
    clock.now += 1
    assert instance.expire(1)["expired"] is True
    assert instance.stopping.is_set()
    late = FakeChannel()
    assert instance.enqueue({"kind": "generate", "params": {}}, late) is None
    assert late.sent[0]["error"]["type"] == "unavailable"
    wait_for(lambda: exits, timeout=10, what="the instance to exit once idle")
    instance.jobs.put(None)
    worker.join(5)


class EchoServer:
    """A `UnixServer` whose `take` and `handle` note which thread served each request."""

    def __init__(self, path):
        self.taken, self.handled = [], []
        self.server = UnixServer(path, self.handle, take=self.take)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def take(self, channel, request):
        self.taken.append((request, threading.current_thread()))
        return lambda: channel.send({"echo": request, "via": "take"})

    def handle(self, channel):
        request = channel.recv()
        self.handled.append(request)
        channel.send({"echo": request, "via": "handle"})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_request_that_arrives_with_its_connection_is_taken_on_the_accepting_thread(tmp_path):
    echo = EchoServer(tmp_path / "e.sock")
    try:
        assert call(tmp_path / "e.sock", {"n": 1}) == {"echo": {"n": 1}, "via": "take"}
        assert echo.taken[0][1] is echo.thread  # queued before any connection thread exists

        # A client that stays silent past the accepting thread's short wait is read by its
        # connection's thread, and does not hold up the clients after it.
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.settimeout(10)
        silent.connect(str(tmp_path / "e.sock"))
        assert call(tmp_path / "e.sock", {"n": 2}, timeout=5)["echo"] == {"n": 2}
        time.sleep(0.05)  # well past TAKE_WAIT: this request comes in two late pieces
        silent.sendall(b'{"n":')
        time.sleep(0.05)
        silent.sendall(b' 3}\n')
        late = Channel(silent)
        assert late.recv() == {"echo": {"n": 3}, "via": "handle"}
        late.close()

        # Not JSON: the connection is closed, and the server goes on.
        bad = Channel.connect(tmp_path / "e.sock", 5)
        bad.sock.sendall(b"not json\n")
        assert bad.sock.recv(10) == b""
        bad.close()
        assert call(tmp_path / "e.sock", {"n": 4})["echo"] == {"n": 4}
    finally:
        echo.close()


def test_an_instance_queues_a_job_from_its_socket_and_answers_other_ops(tmp_path):
    llm = BlockingEngine()
    llm.release.set()
    path = str(tmp_path / "i.sock")
    instance = Instance({"instance_id": "x"}, llm, path, queue_size=1)
    instance.exit = lambda: None
    instance.listen()
    threading.Thread(target=instance.serve, daemon=True).start()
    try:
        with Channel.connect(path, 10) as channel:
            channel.send({"op": "run", "kind": "generate", "params": {}})
            assert channel.recv() == {"done": {"stop": "eos"}}
        assert call(path, {"op": "info"})["instance_id"] == "x"
        with Channel.connect(path, 10) as channel:  # a JSON line that is not a request
            channel.send(["op", "info"])
            with pytest.raises(ConnectionError):
                channel.recv()
        assert call(path, {"op": "status"})["busy"] is False
    finally:
        instance.server.shutdown()
        instance.server.server_close()
        instance.jobs.put(None)


def test_instances_get_a_short_openmp_spin_unless_the_operator_chose_one():
    env = instance_environment({"PATH": "/bin"})
    assert env["GOMP_SPINCOUNT"] == OPENMP_SPIN_COUNT and env["PATH"] == "/bin"
    assert env["GGML_NO_BACKTRACE"] == "1"
    assert instance_environment({"GOMP_SPINCOUNT": "300000"})["GOMP_SPINCOUNT"] == "300000"
    assert "GOMP_SPINCOUNT" not in instance_environment({"OMP_WAIT_POLICY": "active"})


def test_an_eviction_is_answered_before_the_instance_begins_to_exit(tmp_path):
    instance = Instance({"instance_id": "x"}, BlockingEngine(), str(tmp_path / "x.sock"),
                        queue_size=1)
    order = []
    instance.exit = lambda: order.append("exit")

    def slow_reply(answer):  # the asker's answer is on its way while the process would exit
        time.sleep(0.2)
        order.append(answer)

    assert instance.evict(reply=slow_reply) == {"evicted": True}
    wait_for(lambda: "exit" in order, timeout=10, what="the instance to exit")
    assert order == [{"evicted": True}, "exit"]
