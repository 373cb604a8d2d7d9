"""Inference semantics with a real supervisor and real instances (Flask test client): JIT
get-or-load under concurrency, TTL rules, unloads and evictions that never cut a request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import wait_for
from workers.protocol import Channel


def complete(client, model="tiny-llama", **body):
    return client.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 2, **body})


def status(row):
    with Channel.connect(row["socket"], 5) as channel:
        channel.send({"op": "status"})
        return channel.recv()


def row(live, ident):
    return next(r for r in live.table() if r["id"] == ident)


def test_concurrent_first_requests_load_the_model_once(live):
    # 9 at once: one runs and 8 (LMHOST_QUEUE_SIZE) wait, so none may be refused
    with ThreadPoolExecutor(9) as pool:
        responses = list(pool.map(lambda _: complete(live.app.test_client()), range(9)))
    assert [r.status_code for r in responses] == [200] * 9
    assert [(r["id"], r["jit"], r["ttl"]) for r in live.table()] == [("tiny-llama", True, 3600)]


def test_request_ttl_applies_only_when_the_request_loads(live):
    assert complete(live.client, ttl=100).status_code == 200
    assert complete(live.client, ttl=5).status_code == 200
    assert row(live, "tiny-llama")["ttl"] == 100


def test_requests_reset_the_idle_timer(live):
    assert complete(live.client, ttl=2).status_code == 200
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # busy for longer than the TTL, a request each 0.5 s
        assert complete(live.client).status_code == 200, "expired while in use"
        time.sleep(0.5)
    wait_for(lambda: live.table() == [], timeout=6, what="the TTL to expire once idle")


def _stream(client, body):
    response = client.post("/v1/completions", json={**body, "stream": True}, buffered=False)
    return response, (line for chunk in response.response for line in chunk.decode().splitlines() if line)


# the unload timeout bounds how long the stream may take: generous, for a busy machine
@pytest.mark.parametrize("live", [{"unload_timeout": 120}], indirect=True)
def test_unload_waits_for_the_request_in_flight(live):
    live.load(model="tiny-llama")
    # 1900 tokens is more than the socket buffers hold: while the test does not read, the
    # instance is mid-generation
    response, lines = _stream(live.app.test_client(), {"model": "tiny-llama", "prompt": "x", "max_tokens": 1900})
    first = next(lines)
    assert first.startswith("data: {")
    assert status(row(live, "tiny-llama"))["busy"]
    unloaded = {}
    unloader = threading.Thread(target=lambda: unloaded.update(live.unload("tiny-llama").get_json()))
    unloader.start()
    wait_for(lambda: row(live, "tiny-llama")["state"] == "unloading", timeout=5,
             what="the unload to be waiting for the request")
    rest = list(lines)
    unloader.join(30)
    assert rest[-1] == "data: [DONE]"
    last_chunk = json.loads(rest[-2].removeprefix("data: "))
    assert last_chunk["choices"][0]["finish_reason"] == "length"  # it ran to the end
    assert len([l for l in [first, *rest] if l.startswith("data: {")]) >= 1900
    assert unloaded == {"instance_id": "tiny-llama"} and live.table() == []


def test_auto_evict_never_picks_a_busy_instance(live):
    assert complete(live.client).status_code == 200  # tiny-llama, JIT
    response, lines = _stream(live.app.test_client(), {"model": "tiny-llama", "prompt": "x", "max_tokens": 1900})
    next(lines)
    assert status(row(live, "tiny-llama"))["busy"]
    embed = live.client.post("/v1/embeddings", json={"model": "tiny-embed", "input": "x"})
    assert embed.status_code == 200
    assert sorted(r["id"] for r in live.table()) == ["tiny-embed", "tiny-llama"]  # busy: kept
    response.close()


def test_a_loaded_model_serves_from_the_table_when_its_file_is_gone(live):
    """The hot path names a loaded model without a scan of the models dir: the instance serves
    even when its file, or the whole models dir, is gone, and the listing says so."""
    assert live.load(model="tiny-llama").status_code == 200
    models_dir = live.settings.models_dir
    models_dir.rename(models_dir.with_name("away"))
    try:
        assert complete(live.client).status_code == 200
        listed = live.client.get("/api/v1/models").get_json()["models"]
        assert [(m["key"], m["file_missing"], [i["id"] for i in m["loaded_instances"]])
                for m in listed] == [("tiny-llama", True, ["tiny-llama"])]
        assert listed[0]["display_name"] == "Tiny Llama" and listed[0]["format"] == "gguf"
        assert complete(live.client, model="lmhost/tiny-llama@f16").status_code == 200
        missing = complete(live.client, model="tiny-moe")  # not loaded: JIT needs the file
        assert missing.status_code == 404
        assert live.unload("tiny-llama").status_code == 200
        assert live.client.get("/api/v1/models").get_json()["models"] == []
    finally:
        models_dir.with_name("away").rename(models_dir)
