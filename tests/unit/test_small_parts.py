"""Lenient JSON bodies, llama.cpp failure reasons, an instance's queue and expiry (with a fake
model and an injected clock)."""

from __future__ import annotations

import json
import threading

import pytest

from app.jsonbody import loads_lenient, strip_trailing_commas
from tests.helpers import wait_for
from workers.crashes import failure_reason
from workers.instance.server import Instance


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
