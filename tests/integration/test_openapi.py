"""The served OpenAPI document (/openapi.json) is the contract.

A committed snapshot (tests/contract/openapi.json) catches an unintended change of it; every
answer the service really gives, JSON and server-sent events, successes and errors, is checked
against it with schemathesis' validator (real supervisor and instances on the demo models).
The fuzzing of the running service is in tests/e2e/test_schemathesis.py.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
import schemathesis

from lmhost import synthetic
from tests.helpers import break_model

SNAPSHOT = Path(__file__).parents[1] / "contract" / "openapi.json"
CHAT = [{"role": "user", "content": "Hello"}]


def test_the_served_document_is_the_committed_snapshot(client, request):
    served = json.dumps(client.get("/openapi.json").get_json(), indent=2, sort_keys=True) + "\n"
    if request.config.getoption("--update-openapi-snapshot"):
        SNAPSHOT.write_text(served)
    committed = SNAPSHOT.read_text()
    if served != committed:
        diff = difflib.unified_diff(committed.splitlines(True), served.splitlines(True),
                                    "tests/contract/openapi.json", "/openapi.json")
        pytest.fail("the served OpenAPI document is not the committed snapshot. If this change "
                    "of the contract is intended, run `make openapi-snapshot` and commit the "
                    "snapshot with it.\n" + "".join(diff)[:20000], pytrace=False)


def test_every_answer_is_documented_in_the_error_shape(client):
    document = client.get("/openapi.json").get_json()
    error = document["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["code", "message", "param", "type"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "default" not in responses and {"200", "500"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status != "200":
                    assert response["content"] == {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}, (method, path, status)
            if "requestBody" in operation:
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                body = document["components"]["schemas"][ref.rpartition("/")[2]]
                assert body["additionalProperties"] is False, (method, path)


class Contract:
    """Requests through the live app, each answer checked against the served document: its
    status and media type are documented, and its body (every event of a stream) matches."""

    def __init__(self, live):
        self.client = live.client
        self.document = live.client.get("/openapi.json").get_json()
        self.schema = schemathesis.openapi.from_dict(self.document)

    def call(self, method, path, status, body=None, **kwargs):
        response = self.client.open(path, method=method, json=body, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        documented = self.document["paths"][path][method.lower()]["responses"][str(status)]
        assert response.mimetype in documented["content"], (path, status, response.mimetype)
        self.schema[path][method].validate_response(response)
        return response


def test_answers_match_the_document(live):
    contract = Contract(live)
    call = contract.call
    call("GET", "/healthz", 200)
    call("GET", "/api/v1/models", 200)
    call("GET", "/v1/models", 200)

    loaded = call("POST", "/api/v1/models/load", 200,
                  {"model": "tiny-llama", "ttl": 600, "echo_load_config": True}).get_json()
    assert loaded["load_config"]["context_length"] == 2048
    streamed = call("POST", "/api/v1/models/load", 200, {"model": "tiny-embed"},
                    headers={"Accept": "text/event-stream"})
    events = streamed.get_data(as_text=True).split("\n\n")
    assert events[0].startswith("event: progress\n") and events[-2].startswith("event: loaded\n")
    models = call("GET", "/api/v1/models", 200).get_json()["models"]
    assert [len(m["loaded_instances"]) for m in models] == [1, 1, 0]  # embed, llama, moe
    call("GET", "/v1/models", 200)

    call("POST", "/v1/chat/completions", 200, {"model": "tiny-llama", "messages": CHAT,
                                               "max_tokens": 3})
    chat = call("POST", "/v1/chat/completions", 200, {"model": "tiny-llama", "messages": CHAT,
                                                      "max_tokens": 3, "stream": True})
    assert chat.get_data().endswith(b"data: [DONE]\n\n")
    two = call("POST", "/v1/completions", 200, {"model": "tiny-llama", "prompt": ["a", "b"],
                                                "max_tokens": 2}).get_json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    call("POST", "/v1/completions", 200, {"model": "tiny-llama", "prompt": "a", "max_tokens": 2,
                                          "stream": True})
    call("POST", "/v1/completions", 200, {"model": "tiny-llama", "prompt": ["a", "b"],
                                          "max_tokens": 2, "stream": True})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
    # one call (random weights would add calls to the list until max_tokens), seeded
    calls = call("POST", "/v1/chat/completions", 200, {
        "model": "tiny-llama", "messages": CHAT, "tools": tools, "tool_choice": "required",
        "parallel_tool_calls": False, "seed": 1, "max_tokens": 300, "logprobs": True,
        "top_logprobs": 1}).get_json()
    assert calls["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
    streamed_calls = call("POST", "/v1/chat/completions", 200, {
        "model": "tiny-llama", "messages": CHAT, "tools": tools, "tool_choice": "required",
        "parallel_tool_calls": False, "seed": 2, "max_tokens": 300, "stream": True,
        "stream_options": {"include_usage": True}})
    assert b'"tool_calls":[{"index":0' in streamed_calls.get_data()
    call("POST", "/v1/chat/completions", 200, {
        "model": "tiny-llama", "messages": CHAT, "max_tokens": 3, "logprobs": True,
        "top_logprobs": 2, "stream": True})
    call("POST", "/v1/completions", 200, {"model": "tiny-llama", "prompt": "a", "max_tokens": 2,
                                          "logprobs": 2, "echo": True})
    call("POST", "/v1/chat/completions", 400, {
        "model": "tiny-llama", "messages": CHAT, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frob"}}}})
    native = call("POST", "/api/v1/chat", 200, {"model": "tiny-llama", "input": "Hi",
                                                "max_output_tokens": 3}).get_json()
    call("POST", "/api/v1/chat", 200, {"model": "tiny-llama", "input": "Hi", "stream": True,
                                       "previous_response_id": native["response_id"],
                                       "max_output_tokens": 3})
    jit = call("POST", "/api/v1/chat", 200, {"model": "tiny-moe", "input": "Hi", "stream": True,
                                             "max_output_tokens": 3, "store": False})
    names = [line[7:] for line in jit.get_data(as_text=True).splitlines()
             if line.startswith("event: ")]
    assert names[:2] == ["chat.start", "model_load.start"] and names[-1] == "chat.end"
    assert "model_load.end" in names and "message.delta" in names
    call("POST", "/api/v1/chat", 400, {"model": "tiny-llama", "input": "Hi",
                                       "previous_response_id": "resp_nothing"})
    call("POST", "/api/v1/chat", 404, {"model": "nope", "input": "Hi"})
    for encoding in ("float", "base64"):
        call("POST", "/v1/embeddings", 200, {"model": "tiny-embed", "input": ["a", "b"],
                                             "encoding_format": encoding})

    call("POST", "/api/v1/models/load", 400, {"model": "tiny-llama", "reuse_existing": 1})
    call("POST", "/api/v1/models/load", 404, {"model": "nope"})
    call("POST", "/api/v1/models/load", 409, {"model": "tiny-moe", "identifier": "tiny-llama"})
    broken = synthetic.write_dense_llama(live.settings.models_dir / "bad" / "cut-GGUF" / "cut.gguf")
    break_model(broken.path)
    call("POST", "/api/v1/models/load", 422, {"model": "cut"})
    call("POST", "/v1/chat/completions", 400, {"model": "tiny-embed", "messages": CHAT})
    call("POST", "/v1/embeddings", 404, {"model": "nope", "input": "a"})
    call("POST", "/api/v1/models/unload", 200, {"instance_id": "tiny-moe"})
    call("POST", "/api/v1/models/unload", 200, {"instance_id": "tiny-llama"})
    call("POST", "/api/v1/models/unload", 404, {"instance_id": "tiny-llama"})
