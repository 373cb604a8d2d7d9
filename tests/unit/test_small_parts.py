"""Lenient JSON bodies, llama.cpp failure reasons, state transitions, instance expiry."""

from __future__ import annotations

import json
import threading

import pytest

from app.jsonbody import loads_lenient, strip_trailing_commas
from workers.instance import Instance
from workers.supervisor import TRANSITIONS, State, failure_reason


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


def test_transitions_form_the_documented_diagram():
    assert TRANSITIONS[State.LOADING] == {State.LOADED, State.GONE}
    assert TRANSITIONS[State.LOADED] == {State.UNLOADING, State.GONE}
    assert TRANSITIONS[State.UNLOADING] == {State.GONE}
    assert TRANSITIONS[State.GONE] == set()


class FakeChannel:
    def __init__(self):
        self.sent = []

    def send(self, obj):
        self.sent.append(obj)

    def close(self):
        pass


class BlockingLlm:
    """Stands in for llama_cpp.Llama: a completion that runs until released."""

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()

    def create_completion(self, **params):
        self.started.set()
        self.release.wait(10)
        return {"choices": [{"text": "ok"}]}


def test_expiry_never_cuts_a_running_or_queued_request(tmp_path, monkeypatch):
    llm = BlockingLlm()
    instance = Instance({"instance_id": "x"}, llm, str(tmp_path / "x.sock"), queue_size=1)
    finished = []
    monkeypatch.setattr(instance, "_finish", lambda timeout: finished.append(timeout))
    worker = threading.Thread(target=instance._execute_jobs, daemon=True)
    worker.start()

    assert instance._enqueue({"kind": "completion", "params": {}}, FakeChannel())
    assert llm.started.wait(5)  # running: the queue (size 1) is empty again
    assert instance._enqueue({"kind": "completion", "params": {}}, FakeChannel())  # queued
    refused = FakeChannel()
    assert not instance._enqueue({"kind": "completion", "params": {}}, refused)
    assert refused.sent[0]["error"]["type"] == "overloaded"
    instance.last_used -= 3600  # long ago: only the work in flight keeps it alive
    assert instance.expire(1)["expired"] is False
    status = instance.status()
    assert (status["busy"], status["queued"]) == (True, 1)

    llm.release.set()
    deadline = threading.Event()
    while instance.status()["busy"] or instance.status()["queued"]:
        deadline.wait(0.01)
    assert instance.expire(3600)["expired"] is False  # just used
    instance.last_used -= 3600
    assert instance.expire(1)["expired"] is True
    assert instance.stopping.is_set()
    late = FakeChannel()
    assert not instance._enqueue({"kind": "completion", "params": {}}, late)
    assert late.sent[0]["error"]["type"] == "unavailable"
    instance.jobs.put(None)
    worker.join(5)
