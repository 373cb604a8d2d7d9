"""The OpenAI-compatible API through real gunicorn, with the real `openai` client (issue
"Inference through instances"): chat, completions, embeddings, models, streaming, JIT, TTL,
auto-evict, routing over several instances, queue limits, a killed instance, cancellation."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time

import openai
import pytest
import requests

from tests.e2e.conftest import clean_env
from tests.helpers import wait_for
from lmhost import synthetic
from workers.protocol import Channel
from workers.table import InstanceTable

CHAT = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def demo_models(short_tmp):
    synthetic.write_demo_models(short_tmp / "models")
    return short_tmp / "models"


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0,
                         timeout=60)


def rows(server) -> dict:
    return {r["id"]: r for r in InstanceTable(server.state_dir).read()}


def test_openai_client_chat_completions_embeddings_models(demo_models, serve):
    server = serve(demo_models)
    client = client_for(server)
    assert {m.id for m in client.models.list().data} == {"tiny-llama", "tiny-moe", "tiny-embed"}

    chat = client.chat.completions.create(model="tiny-llama", messages=CHAT, max_tokens=8,
                                          temperature=0.7, top_p=0.9, seed=3)
    assert chat.model == "tiny-llama" and chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 8 and chat.choices[0].message.content.strip()
    again = client.chat.completions.create(model="tiny-llama", messages=CHAT, max_tokens=8,
                                           temperature=0.7, top_p=0.9, seed=3)
    assert again.choices[0].message.content == chat.choices[0].message.content  # seeded

    stream = client.chat.completions.create(model="lmhost/tiny-llama", messages=CHAT,
                                            max_tokens=6, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 6

    completion = client.completions.create(model="tiny-llama@f16", prompt=["One", "Two"],
                                           max_tokens=4, stop=["\n"])
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.usage.completion_tokens == 8
    streamed = client.completions.create(model="tiny-llama", prompt="Once", max_tokens=5, stream=True)
    assert sum(1 for c in streamed for _ in c.choices) >= 5

    embedded = client.embeddings.create(model="tiny-embed", input=["hello world", "good night"])
    assert [len(d.embedding) for d in embedded.data] == [128, 128]  # base64 by default, decoded
    floats = requests.post(server.url + "/v1/embeddings", timeout=30, json={
        "model": "tiny-embed", "input": "hello world", "encoding_format": "float"}).json()
    assert floats["data"][0]["embedding"] == pytest.approx(embedded.data[0].embedding, rel=1e-6)
    assert floats["usage"]["prompt_tokens"] > 0

    # every model above was JIT-loaded with the default TTL; auto-evict kept the last one only
    (jit,) = rows(server).values()
    assert (jit["id"], jit["jit"], jit["ttl"]) == ("tiny-embed", True, 3600)


def test_errors_in_the_contract_shape(demo_models, serve):
    server = serve(demo_models)
    url = server.url

    def post(path, body):
        response = requests.post(url + path, json=body, timeout=30)
        return response.status_code, response.json()["error"]

    status, error = post("/v1/chat/completions", {"model": "nope", "messages": CHAT})
    assert (status, error["type"], error["param"]) == (404, "model_not_found", "model")
    status, error = post("/v1/chat/completions", {"model": "tiny-llama", "messages": CHAT,
                                                  "max_tokens": "8"})
    assert (status, error["param"]) == (400, "max_tokens")
    status, error = post("/v1/chat/completions", {"model": "tiny-llama", "messages": CHAT,
                                                  "logit_bias": {}})
    assert (status, error["param"]) == (400, "logit_bias")
    status, error = post("/v1/chat/completions", {"model": "tiny-llama", "messages": []})
    assert (status, error["param"]) == (400, "messages")
    status, error = post("/v1/chat/completions", {"model": "tiny-embed", "messages": CHAT})
    assert status == 400 and "embedding model" in error["message"]
    status, error = post("/v1/embeddings", {"model": "tiny-llama", "input": "x"})
    assert status == 400 and "needs an embedding model" in error["message"]
    status, error = post("/v1/completions", {"model": "tiny-llama"})
    assert (status, error["param"]) == (400, "prompt")
    assert requests.get(url + "/v1/nope", timeout=5).status_code == 404
    assert rows(server) == {}  # none of these loaded anything


def test_jit_ttl_from_the_request_and_jit_off(demo_models, serve, short_tmp):
    server = serve(demo_models)
    client_for(server).completions.create(model="tiny-moe", prompt="x", max_tokens=2,
                                          extra_body={"ttl": 1})
    assert rows(server)["tiny-moe"]["ttl"] == 1
    wait_for(lambda: rows(server) == {}, timeout=6, what="the request's TTL to unload it")

    from tests.e2e.conftest import clean_env
    off = serve(demo_models, env=clean_env(LMHOST_JIT="0"))
    response = requests.post(off.url + "/v1/completions", timeout=30,
                             json={"model": "tiny-llama", "prompt": "x"})
    assert response.status_code == 400
    assert "POST /api/v1/models/load" in response.json()["error"]["message"]
    assert client_for(off).models.list().data == []
    requests.post(off.url + "/api/v1/models/load", json={"model": "tiny-llama"}, timeout=30)
    assert [m.id for m in client_for(off).models.list().data] == ["tiny-llama"]
    assert client_for(off).completions.create(model="tiny-llama", prompt="x", max_tokens=2).choices


def test_auto_evict_spares_explicit_loads_and_can_be_turned_off(demo_models, serve):
    server = serve(demo_models)
    client = client_for(server)
    requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-moe"}, timeout=30)
    client.completions.create(model="tiny-llama", prompt="x", max_tokens=2)
    client.embeddings.create(model="tiny-embed", input="x")
    assert sorted(rows(server)) == ["tiny-embed", "tiny-moe"]  # tiny-llama (JIT, idle) evicted

    from tests.e2e.conftest import clean_env
    keep = serve(demo_models, env=clean_env(LMHOST_AUTO_EVICT="0"))
    client = client_for(keep)
    client.completions.create(model="tiny-llama", prompt="x", max_tokens=2)
    client.embeddings.create(model="tiny-embed", input="x")
    assert sorted(rows(keep)) == ["tiny-embed", "tiny-llama"]


def hold_busy(instance_row, max_tokens=1900):
    """Keep an instance busy for as long as the test wants: a streamed completion that nobody
    reads blocks the instance once the socket buffer is full."""
    channel = Channel.connect(instance_row["socket"], 10)
    channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    channel.send({"op": "run", "kind": "generate",
                  "params": {"prompt": "x", "max_tokens": max_tokens}})
    return channel


def instance_status(row):
    with Channel.connect(row["socket"], 5) as channel:
        channel.send({"op": "status"})
        return channel.recv()


def test_full_queue_is_429_with_retry_after(demo_models, serve):
    from tests.e2e.conftest import clean_env
    server = serve(demo_models, env=clean_env(LMHOST_QUEUE_SIZE="0"))
    requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-llama"}, timeout=30)
    row = rows(server)["tiny-llama"]
    held = hold_busy(row)
    try:
        wait_for(lambda: instance_status(row)["busy"], timeout=5, what="the instance to be busy")
        response = requests.post(server.url + "/v1/completions", timeout=30,
                                 json={"model": "tiny-llama", "prompt": "x", "max_tokens": 2})
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "overloaded"
        assert response.headers["Retry-After"] == "1"
    finally:
        held.close()
    wait_for(lambda: not instance_status(row)["busy"], timeout=10,
             what="the abandoned generation to stop")
    response = requests.post(server.url + "/v1/completions", timeout=30,
                             json={"model": "tiny-llama", "prompt": "x", "max_tokens": 2})
    assert response.status_code == 200


def test_two_instances_serve_two_streams_at_once(demo_models, serve):
    from tests.e2e.conftest import clean_env
    # one llama.cpp thread each: two instances of two threads would fight over 2 cores
    server = serve(demo_models, env=clean_env(LMHOST_INSTANCE_THREADS="1"))
    for ident in ("a", "b"):
        requests.post(server.url + "/api/v1/models/load", timeout=30,
                      json={"model": "tiny-llama", "identifier": ident})
    assert set(rows(server)) == {"a", "b"}
    spans, sent = {}, []
    # both requests leave together (a client's construction can take longer than a stream)
    start = threading.Barrier(2, timeout=30)

    def stream(name):
        client = client_for(server)
        start.wait()
        sent.append(time.monotonic())
        chunks = client.completions.create(model="tiny-llama", prompt="Go", max_tokens=1500,
                                           stream=True)
        times = [time.monotonic() for _ in chunks]
        spans[name] = (times[0], times[-1])

    threads = [threading.Thread(target=stream, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(spans) == {"x", "y"}, "a stream did not finish within 60 s"
    (x0, x1), (y0, y1) = spans["x"], spans["y"]
    assert x0 < y1 and y0 < x1, f"streams did not overlap: {spans}"  # both progressed at once
    # and each instance served one: both were last used after the requests were sent (an idle
    # one would still show its load time). CLOCK_MONOTONIC is one clock for every process.
    used = [instance_status(r)["last_used"] for r in rows(server).values()]
    assert all(u >= min(sent) for u in used), (used, sent, spans)


def test_killed_instance_ends_the_stream_with_an_error_then_jit_reloads(demo_models, serve):
    server = serve(demo_models)
    client = client_for(server)
    client.completions.create(model="tiny-llama", prompt="x", max_tokens=1)  # JIT load
    pid = rows(server)["tiny-llama"]["pid"]
    stream = client.completions.create(model="tiny-llama", prompt="x", max_tokens=1900, stream=True)
    iterator = iter(stream)
    next(iterator)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(openai.APIError):
        for _ in iterator:
            pass
    assert time.monotonic() - killed < 10  # the stream ends with an error, it does not hang
    wait_for(lambda: "tiny-llama" not in rows(server) or rows(server)["tiny-llama"]["pid"] != pid,
             timeout=10, what="the dead instance's row to go")
    answer = client.completions.create(model="tiny-llama", prompt="x", max_tokens=3)
    assert answer.usage.completion_tokens == 3
    assert rows(server)["tiny-llama"]["pid"] != pid


def test_a_client_that_goes_away_stops_its_generation(demo_models, serve):
    server = serve(demo_models)
    requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-llama"}, timeout=30)
    row = rows(server)["tiny-llama"]
    response = requests.post(server.url + "/v1/completions", stream=True, timeout=30, json={
        "model": "tiny-llama", "prompt": "x", "max_tokens": 1900, "stream": True})
    lines = response.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: {")
    assert instance_status(row)["busy"]
    response.close()  # the client goes away mid-stream
    wait_for(lambda: not instance_status(row)["busy"], timeout=5,
             what="the generation to stop after the client left")
    answer = requests.post(server.url + "/v1/completions", timeout=30,
                           json={"model": "tiny-llama", "prompt": "x", "max_tokens": 2}).json()
    assert answer["usage"]["completion_tokens"] == 2


def sse_events(response) -> list[tuple[str | None, dict | str]]:
    """(event name, data) of each event of an http.client response, read to its end."""
    events, name = [], None
    for raw in response.read().decode().split("\n"):
        if raw.startswith("event: "):
            name = raw[7:]
        elif raw.startswith("data: "):
            data = raw[6:]
            events.append((name, data if data == "[DONE]" else json.loads(data)))
            name = None
    return events


@pytest.mark.parametrize("handoff", ["1", "0"])
def test_streams_read_the_same_whether_the_instance_or_the_worker_writes_them(
        demo_models, serve, handoff):
    """With LMHOST_STREAM_HANDOFF on (the default) the instance writes a stream's text after
    the first on the client's connection; the client reads the same events either way, and the
    connection stays usable for its next request (keep-alive)."""
    server = serve(demo_models, env=clean_env(LMHOST_STREAM_HANDOFF=handoff))
    requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-llama"}, timeout=30)
    row = rows(server)["tiny-llama"]
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)

    def post(path, body):
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        return response

    sampling = {"model": "tiny-llama", "max_tokens": 40, "temperature": 0}
    handed = instance_status(row)["handed_off_tokens"]
    events = sse_events(post("/v1/completions", {**sampling, "prompt": "Once", "stream": True,
                                                 "stream_options": {"include_usage": True}}))
    assert events[-1] == (None, "[DONE]")
    streamed = "".join(c["choices"][0]["text"] for _, c in events[:-1] if c["choices"])
    tokens = events[-2][1]["usage"]["completion_tokens"]
    whole = json.loads(post("/v1/completions", {**sampling, "prompt": "Once"}).read())
    assert streamed == whole["choices"][0]["text"] and tokens == 40
    handed_now = instance_status(row)["handed_off_tokens"] - handed
    assert 0 < handed_now < tokens if handoff == "1" else handed_now == 0

    events = sse_events(post("/v1/chat/completions", {**sampling, "messages": CHAT,
                                                      "stream": True}))
    deltas = "".join(c["choices"][0]["delta"].get("content") or "" for _, c in events[:-1])
    whole = json.loads(post("/v1/chat/completions", {**sampling, "messages": CHAT}).read())
    assert deltas == whole["choices"][0]["message"]["content"] and deltas

    events = sse_events(post("/api/v1/chat", {"model": "tiny-llama", "input": "Hi",
                                              "max_output_tokens": 30, "temperature": 0,
                                              "stream": True}))
    deltas = "".join(data["content"] for name, data in events if name == "message.delta")
    end = [data for name, data in events if name == "chat.end"][0]["result"]
    assert deltas and end["output"][0]["content"] == deltas  # the instance's text, told back

    handed = instance_status(row)["handed_off_tokens"]
    events = sse_events(post("/v1/completions", {**sampling, "prompt": "Once", "stream": True,
                                                 "logprobs": 1}))
    assert all(c["choices"][0]["logprobs"] for _, c in events[:-2])  # the worker wrote them
    assert instance_status(row)["handed_off_tokens"] == handed
    conn.close()
