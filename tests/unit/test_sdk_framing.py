"""The SDK protocol's frames: what a client may send, what lmhost answers (pure)."""

from __future__ import annotations

import json

import pytest

from app.sdk import framing
from app.sdk.framing import BadFrame, SdkError


@pytest.mark.parametrize("frame", [
    {"type": "rpcCall", "endpoint": "listLoaded", "callId": 1},  # Python leaves out "parameter"
    {"type": "rpcCall", "endpoint": "getModelInfo", "callId": 0, "parameter": {"x": 1}},
    {"type": "channelCreate", "endpoint": "loadModel", "channelId": 3, "creationParameter": {}},
    {"type": "channelSend", "channelId": 3, "message": {"type": "cancel"}},
    {"type": "keepAlive"},
    {"type": "communicationWarning", "warning": "w"},
    {"type": "signalSubscribe", "endpoint": "e", "subscribeId": 1, "creationParameter": None},
])
def test_client_frames_are_accepted(frame):
    assert framing.parse_frame(json.dumps(frame)) == frame
    assert framing.parse_frame(json.dumps(frame).encode()) == frame


@pytest.mark.parametrize("text, says", [
    ("not json", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"type": "hello"}', "unknown frame type"),
    ('{"endpoint": "x", "callId": 1}', "unknown frame type"),
    ('{"type": "rpcCall", "callId": 1}', "'endpoint'"),
    ('{"type": "rpcCall", "endpoint": "x", "callId": "1"}', "'callId'"),
    ('{"type": "rpcCall", "endpoint": "x", "callId": true}', "'callId'"),
    ('{"type": "channelCreate", "endpoint": "x"}', "'channelId'"),
    (b"\xff\xfe", "UTF-8"),
])
def test_bad_client_frames_say_what_is_wrong(text, says):
    with pytest.raises(BadFrame, match=says):
        framing.parse_frame(text)


def test_auth_frame():
    frame = {"authVersion": 1, "clientIdentifier": "guest:abc", "clientPasskey": "p"}
    assert framing.parse_auth(json.dumps(frame)) == frame
    for bad in ('{"type": "keepAlive"}', "nope", '{"authVersion": 2, "clientIdentifier": "a", '
                '"clientPasskey": "b"}'):
        with pytest.raises(BadFrame, match="authentication frame"):
            framing.parse_auth(bad)
    assert framing.auth_result() == {"success": True}
    assert framing.auth_result("no") == {"success": False, "error": "no"}  # TS wants a string


def test_void_rpc_results_carry_no_result_key():
    # "result": null fails the TypeScript client's z.void() and the call never resolves
    assert framing.rpc_result(4) == {"type": "rpcResult", "callId": 4}
    assert framing.rpc_result(4, None) == {"type": "rpcResult", "callId": 4}
    assert framing.rpc_result(4, []) == {"type": "rpcResult", "callId": 4, "result": []}


def test_errors_travel_as_objects():
    error = SdkError("boom", cause="why", display_data={"code": "generic.specificModelUnloaded"})
    for frame in (framing.rpc_error(1, error), framing.channel_error(2, error),
                  framing.signal_error("signal", 3, error)):
        assert frame["error"] == {"title": "boom", "rootTitle": "boom", "cause": "why",
                                  "displayData": {"code": "generic.specificModelUnloaded"}}
    assert framing.signal_error("writableSignal", 3, error)["type"] == "writableSignalError"
    assert str(error) == "boom"


def test_not_found_errors_carry_the_code_both_clients_know():
    error = framing.no_model_matching({"identifier": "x"}, [f"m{i}" for i in range(12)], "no x")
    assert error.display_data == {"code": "generic.noModelMatchingQuery", "query": {"identifier": "x"},
                                  "loadedModelsSample": [f"m{i}" for i in range(10)],
                                  "totalLoadedModels": 12}
    unsupported = framing.not_supported("llm", "endpoint", "predict")
    assert "'predict'" in unsupported.title and "not supported" in unsupported.title
