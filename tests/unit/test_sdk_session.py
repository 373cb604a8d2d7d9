"""One SDK socket's loop over a fake websocket: auth, dispatch, channels, refusals (no processes)."""

from __future__ import annotations

import json
import queue
import threading

from simple_websocket import ConnectionClosed

from app.sdk import session as session_module
from app.sdk.framing import SdkError
from app.sdk.registry import SocketRegistry
from app.auth import AuthRefused
from app.sdk.session import Namespace, Session
from tests.helpers import wait_for
from workers.errors import InvalidRequest

AUTH = {"authVersion": 1, "clientIdentifier": "guest:abc", "clientPasskey": "xyz"}


class FakeWs:
    """simple-websocket's Server as a Session uses it: frames come from a queue; None in the
    queue (or a close) ends the connection."""

    def __init__(self):
        self.incoming: queue.Queue = queue.Queue()
        self.sent: list[dict] = []
        self.event = threading.Event()
        self.closed: tuple | None = None

    def feed(self, *frames):
        for frame in frames:
            self.incoming.put(frame if isinstance(frame, str) or frame is None else json.dumps(frame))

    def receive(self, timeout=None):
        if self.closed:
            raise ConnectionClosed()
        try:
            item = self.incoming.get(timeout=5 if timeout is None else timeout)
        except queue.Empty:
            if timeout is None:
                raise AssertionError("the session waited for a frame the test never sent")
            return None
        if item is None or self.closed:
            raise ConnectionClosed()
        return item

    def send(self, text):
        if self.closed:
            raise ConnectionClosed()
        self.sent.append(json.loads(text))

    def close(self, reason=None, message=None):
        if self.closed:
            raise ConnectionClosed()
        self.closed = (reason, message)
        self.incoming.put(None)


def echo(params):
    return params


def blocking_channel(params, channel):
    channel.send({"type": "started"})
    assert channel.cancelled.wait(5), "cancel never reached the channel"
    channel.send({"type": "saw cancel"})


def two_messages(params, channel):
    channel.send({"type": "one"})
    channel.send({"type": "two"})


def invalid(params, channel=None):
    raise InvalidRequest("context_length: too big", param="context_length")


def buggy(params):
    raise KeyError("a bug")


NAMESPACE = Namespace(
    name="llm", rpc={"echo": echo, "void": lambda params: None, "invalid": invalid, "buggy": buggy},
    channels={"block": blocking_channel, "two": two_messages, "invalid": invalid},
    convert=lambda error: SdkError(f"converted: {error.message}"))


def run_session(*frames, registry=None, namespace=NAMESPACE, gate=None):
    ws = FakeWs()
    ws.feed(*frames)
    registry = registry or SocketRegistry(10)
    done = threading.Thread(target=Session(ws, namespace, registry, gate).run)
    done.start()
    return ws, done


def frames_of(ws, count):
    wait_for(lambda: len(ws.sent) >= count, timeout=5, what=f"{count} frames")
    return ws.sent


def test_auth_then_keep_alive_and_rpc_results():
    ws, done = run_session(AUTH, {"type": "keepAlive"},
                           {"type": "rpcCall", "endpoint": "echo", "callId": 1, "parameter": [1]},
                           {"type": "rpcCall", "endpoint": "void", "callId": 2})
    sent = frames_of(ws, 4)
    assert sent[0] == {"success": True} and sent[1] == {"type": "keepAliveAck"}
    assert {"type": "rpcResult", "callId": 1, "result": [1]} in sent
    assert {"type": "rpcResult", "callId": 2} in sent  # void: no "result" key
    ws.feed(None)
    done.join(5)
    assert not done.is_alive()


def test_a_bad_auth_frame_is_refused_with_a_string_and_closed():
    ws, done = run_session({"type": "keepAlive"})
    done.join(5)
    assert ws.sent == [{"success": False, "error": ws.sent[0]["error"]}]
    assert "authentication frame" in ws.sent[0]["error"] and ws.closed[0] == 1008


def test_unknown_endpoints_signals_and_bad_frames_get_error_frames_not_silence():
    ws, done = run_session(AUTH, {"type": "rpcCall", "endpoint": "predictSomething", "callId": 7},
                           {"type": "channelCreate", "endpoint": "predict", "channelId": 0,
                            "creationParameter": {}},
                           {"type": "signalSubscribe", "endpoint": "e", "subscribeId": 3},
                           "{not json", {"type": "keepAlive"})
    sent = frames_of(ws, 6)
    assert sent[1]["type"] == "rpcError" and sent[1]["callId"] == 7
    assert "'predictSomething'" in sent[1]["error"]["title"]
    assert sent[2]["type"] == "channelError" and "'predict'" in sent[2]["error"]["title"]
    assert sent[3]["type"] == "signalError" and sent[3]["subscribeId"] == 3
    assert sent[4]["type"] == "communicationWarning" and sent[5] == {"type": "keepAliveAck"}
    ws.feed(None)
    done.join(5)


def test_channels_end_with_close_or_error_and_see_cancel():
    ws, done = run_session(AUTH, {"type": "channelCreate", "endpoint": "two", "channelId": 1},
                           {"type": "channelCreate", "endpoint": "invalid", "channelId": 2},
                           {"type": "rpcCall", "endpoint": "buggy", "callId": 3},
                           {"type": "channelCreate", "endpoint": "block", "channelId": 4})
    wait_for(lambda: {"type": "channelSend", "channelId": 4, "message": {"type": "started"}} in ws.sent,
             what="the blocking channel to start")
    ws.feed({"type": "channelSend", "channelId": 4, "message": {"type": "cancel"}, "ackId": 9})
    wait_for(lambda: {"type": "channelClose", "channelId": 4} in ws.sent, what="channel 4 to close")
    by_channel = lambda cid: [f for f in ws.sent if f.get("channelId") == cid]  # noqa: E731
    assert [f["message"]["type"] for f in by_channel(1)[:2]] == ["one", "two"]
    assert by_channel(1)[2] == {"type": "channelClose", "channelId": 1}
    assert by_channel(2) == [{"type": "channelError", "channelId": 2,
                              "error": {"title": "converted: context_length: too big",
                                        "rootTitle": "converted: context_length: too big"}}]
    buggy_error = next(f for f in ws.sent if f.get("callId") == 3)
    assert buggy_error["type"] == "rpcError"
    assert buggy_error["error"]["title"].startswith("internal error (request id ")
    assert [f["message"]["type"] for f in by_channel(4) if f["type"] == "channelSend"] == [
        "started", "saw cancel"]
    assert {"type": "channelAck", "channelId": 4, "ackId": 9} in ws.sent
    ws.feed(None)
    done.join(5)


def test_calls_in_flight_on_one_socket_are_bounded(monkeypatch):
    monkeypatch.setattr(session_module, "MAX_IN_FLIGHT", 1)
    ws, done = run_session(AUTH, {"type": "channelCreate", "endpoint": "block", "channelId": 1})
    frames_of(ws, 2)
    ws.feed({"type": "rpcCall", "endpoint": "echo", "callId": 2, "parameter": 1})
    error = frames_of(ws, 3)[2]
    assert error["type"] == "rpcError" and "in flight" in error["error"]["title"]
    ws.feed({"type": "channelSend", "channelId": 1, "message": {"type": "cancel"}}, None)
    done.join(5)


def test_a_socket_over_the_limit_gets_its_first_call_answered_with_an_error_then_closed():
    registry = SocketRegistry(1)
    first, first_done = run_session(AUTH, registry=registry)
    frames_of(first, 1)
    wait_for(lambda: registry.count() == 1, what="the first socket to be admitted")
    second, second_done = run_session(AUTH, {"type": "rpcCall", "endpoint": "echo", "callId": 1},
                                      registry=registry)
    second_done.join(5)
    assert second.sent[0] == {"success": True}
    assert second.sent[1]["type"] == "rpcError"
    assert "LMHOST_SDK_MAX_SOCKETS" in second.sent[1]["error"]["title"]
    assert second.closed[0] == 1013
    # stopping the worker closes the sockets still open, and admits no new one
    assert registry.close_all("stopping") == 1
    first_done.join(5)
    assert not first_done.is_alive() and first.closed[0] == 1001
    assert registry.count() == 0 and not registry.admit(object())


def test_nothing_is_served_before_authentication():
    ws, done = run_session({"type": "rpcCall", "endpoint": "echo", "callId": 1})
    done.join(5)
    assert ws.sent[0]["success"] is False and len(ws.sent) == 1


class NeverReadWs(FakeWs):
    """A client that stopped reading: once authenticated, every send times out (SO_SNDTIMEO)."""

    def send(self, text):
        if self.sent:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        super().send(text)


def test_a_client_that_does_not_read_is_closed_not_waited_for():
    ws = NeverReadWs()
    ws.feed(AUTH, {"type": "keepAlive"})
    done = threading.Thread(target=Session(ws, NAMESPACE, SocketRegistry(10)).run)
    done.start()
    done.join(5)
    assert not done.is_alive() and ws.sent == [{"success": True}]
    assert ws.closed == (session_module.POLICY_VIOLATION, "the client does not read")


def test_a_socket_that_drops_cancels_its_channels():
    ws, done = run_session(AUTH, {"type": "channelCreate", "endpoint": "block", "channelId": 1,
                                  "creationParameter": {}})
    frames_of(ws, 2)  # {"success": true}, then "started"
    ws.feed(None)  # the client is gone
    done.join(5)
    wait_for(lambda: any(f.get("message", {}).get("type") == "saw cancel" for f in ws.sent),
             timeout=5, what="the channel to see its cancel")


# -- API tokens on the socket -------------------------------------------------------------------

MANAGEMENT = Namespace(name="llm", rpc={"unloadModel": echo, "listLoaded": echo,
                                        "requestShutdown": echo},
                       channels={"loadModel": two_messages, "getOrLoad": two_messages})


def scoped_gate(scope):
    def gate(frame):
        if frame["clientPasskey"] != "right":
            raise AuthRefused("lmhost needs an API token")
        return scope
    return gate


def test_a_refused_token_gets_the_gates_message_as_a_string_then_close():
    ws, done = run_session(AUTH, {"type": "rpcCall", "endpoint": "echo", "callId": 1},
                           gate=scoped_gate("admin"))
    done.join(5)
    assert ws.sent == [{"success": False, "error": "lmhost needs an API token"}]
    assert ws.closed[0] == 1008


def test_an_inference_token_may_use_and_get_or_load_but_not_load_or_unload():
    ws, done = run_session(
        {**AUTH, "clientPasskey": "right"},
        {"type": "rpcCall", "endpoint": "listLoaded", "callId": 1, "parameter": "ok"},
        {"type": "rpcCall", "endpoint": "unloadModel", "callId": 2, "parameter": "x"},
        {"type": "channelCreate", "endpoint": "loadModel", "channelId": 3},
        {"type": "channelCreate", "endpoint": "getOrLoad", "channelId": 4},
        {"type": "rpcCall", "endpoint": "requestShutdown", "callId": 5},  # not in the table
        namespace=MANAGEMENT, gate=scoped_gate("inference"))
    wait_for(lambda: {"type": "channelClose", "channelId": 4} in ws.sent, what="getOrLoad")
    wait_for(lambda: len([f for f in ws.sent if f.get("type") in ("rpcError", "rpcResult")]) == 3,
             what="three RPC answers")
    assert ws.sent[0] == {"success": True}
    assert {"type": "rpcResult", "callId": 1, "result": "ok"} in ws.sent
    refused = [f for f in ws.sent if f.get("type") in ("rpcError", "channelError")]
    assert [(f.get("callId"), f.get("channelId")) for f in refused] == [(2, None), (None, 3),
                                                                        (5, None)]
    assert all("scope is inference" in f["error"]["title"] for f in refused)
    ws.feed(None)
    done.join(5)


def test_an_admin_token_may_load_and_unload():
    ws, done = run_session({**AUTH, "clientPasskey": "right"},
                           {"type": "rpcCall", "endpoint": "unloadModel", "callId": 2,
                            "parameter": "x"},
                           {"type": "channelCreate", "endpoint": "loadModel", "channelId": 3},
                           namespace=MANAGEMENT, gate=scoped_gate("admin"))
    wait_for(lambda: {"type": "channelClose", "channelId": 3} in ws.sent, what="loadModel")
    wait_for(lambda: {"type": "rpcResult", "callId": 2, "result": "x"} in ws.sent, what="unload")
    ws.feed(None)
    done.join(5)
