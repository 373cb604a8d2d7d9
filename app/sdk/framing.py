"""The LM Studio SDK protocol's frames: parsing what a client sends, building what we answer.

Every frame is one JSON object in a websocket text message (reference: LMSTUDIO-SDK-WIRE.md;
the clients' own schemas are the spec). Errors travel as *objects* (`SdkError.to_wire`): the
TypeScript client drops a frame whose ``error`` is a string and then waits forever.

Pure: no sockets, no Flask. Unit-tested in tests/unit/test_sdk_framing.py.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

# Fields each client frame type must carry, and their JSON types. ``parameter`` and
# ``creationParameter`` may be absent: the Python client leaves them out when empty.
_REQUIRED = {
    "rpcCall": {"endpoint": str, "callId": int},
    "channelCreate": {"endpoint": str, "channelId": int},
    "channelSend": {"channelId": int},
    "channelAck": {"channelId": int, "ackId": int},
    "keepAlive": {},
    "communicationWarning": {"warning": str},
    "signalSubscribe": {"endpoint": str, "subscribeId": int},
    "signalUnsubscribe": {"subscribeId": int},
    "writableSignalSubscribe": {"endpoint": str, "subscribeId": int},
    "writableSignalUnsubscribe": {"subscribeId": int},
    "writableSignalUpdate": {"subscribeId": int},
}


class BadFrame(ValueError):
    """A client frame that is not JSON, not an object, or misses a field its type needs."""


@dataclass(eq=False)
class SdkError(Exception):
    """An error as the SDKs' ``SerializedLMSExtendedError``: the title is what users read.
    ``display_data`` with a known ``code`` makes the clients raise a specific error
    (``generic.noModelMatchingQuery`` -> Python's ``LMStudioModelNotFoundError``)."""

    title: str
    cause: str | None = None
    suggestion: str | None = None
    display_data: dict | None = None
    error_data: dict | None = field(default=None)

    def __str__(self) -> str:
        return self.title

    def to_wire(self) -> dict:
        wire = {"title": self.title, "rootTitle": self.title}
        for key, value in (("cause", self.cause), ("suggestion", self.suggestion),
                           ("displayData", self.display_data), ("errorData", self.error_data)):
            if value is not None:
                wire[key] = value
        return wire


def parse_frame(text: str | bytes) -> dict:
    """The client frame in `text`, checked for the fields its type needs. (Its size is bounded
    before it gets here: the socket closes on a message of more than ``LMHOST_MAX_BODY``
    characters.)"""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadFrame("frame is not UTF-8 text") from None
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadFrame(f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadFrame("frame is not a JSON object")
    kind = frame.get("type")
    if kind not in _REQUIRED:
        raise BadFrame(f"unknown frame type {kind!r}")
    for name, wanted in _REQUIRED[kind].items():
        value = frame.get(name)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise BadFrame(f"{kind} frame needs {name!r} ({wanted.__name__})")
    return frame


def parse_auth(text: str | bytes) -> dict:
    """The first frame of a socket: ``{"authVersion": 1, "clientIdentifier", "clientPasskey"}``."""
    try:
        frame = json.loads(text)
    except ValueError:
        raise BadFrame("the first frame must be the authentication frame (JSON)") from None
    if (not isinstance(frame, dict) or frame.get("authVersion") != 1
            or not isinstance(frame.get("clientIdentifier"), str)
            or not isinstance(frame.get("clientPasskey"), str)):
        raise BadFrame("the first frame must be the authentication frame {\"authVersion\": 1, "
                       "\"clientIdentifier\", \"clientPasskey\"}")
    return frame


def dumps(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"))


# -- server frames ------------------------------------------------------------------------------

_VOID = object()


def rpc_result(call_id: int, result=_VOID) -> dict:
    """A void result has no ``result`` key at all: ``"result": null`` fails the TS client's
    ``z.void()`` check and the call never resolves."""
    frame = {"type": "rpcResult", "callId": call_id}
    if result is not _VOID and result is not None:
        frame["result"] = result
    return frame


def rpc_error(call_id: int, error: SdkError) -> dict:
    return {"type": "rpcError", "callId": call_id, "error": error.to_wire()}


def channel_send(channel_id: int, message: dict) -> dict:
    return {"type": "channelSend", "channelId": channel_id, "message": message}


def channel_close(channel_id: int) -> dict:
    return {"type": "channelClose", "channelId": channel_id}


def channel_error(channel_id: int, error: SdkError) -> dict:
    return {"type": "channelError", "channelId": channel_id, "error": error.to_wire()}


def signal_error(kind: str, subscribe_id: int, error: SdkError) -> dict:
    """`kind`: "signal" or "writableSignal"."""
    return {"type": f"{kind}Error", "subscribeId": subscribe_id, "error": error.to_wire()}


def keep_alive_ack() -> dict:
    return {"type": "keepAliveAck"}


def communication_warning(warning: str) -> dict:
    return {"type": "communicationWarning", "warning": warning}


def auth_result(error: str | None = None, frame: dict | None = None) -> dict:
    """The answer to the authentication frame `frame`. A refusal's ``error`` is a string, which
    the TypeScript client requires, except to the Python client (``lmstudio`` 1.5, known by its
    identifier: a UUID), which builds its exception from an error object and fails on a string."""
    if error is None:
        return {"success": True}
    if frame is not None and _is_uuid(frame.get("clientIdentifier")):
        return {"success": False, "error": {"title": error, "rootTitle": error}}
    return {"success": False, "error": error}


def _is_uuid(value) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


# -- errors -------------------------------------------------------------------------------------

def not_supported(namespace: str, what: str, name: str) -> SdkError:
    """An endpoint (or a whole namespace) lmhost does not serve (yet)."""
    return SdkError(
        title=f"{what} {name!r} of the {namespace!r} namespace is not supported by lmhost (yet)",
        suggestion="See the SDK section of lmhost's README for what is served.")


def no_model_matching(query: dict, loaded_ids: list[str], title: str) -> SdkError:
    """The error both clients turn into their model-not-found error."""
    return SdkError(title=title, display_data={
        "code": "generic.noModelMatchingQuery",
        "query": query,
        "loadedModelsSample": loaded_ids[:10],
        "totalLoadedModels": len(loaded_ids),
    })
