"""Server-sent events: the one helper that streams them, and the schema that documents them.

Both streaming routes use it: a load with ``Accept: text/event-stream`` (named events:
``progress``, ``loaded``, ``error``) and OpenAI's ``stream: true`` (unnamed events ending with
``data: [DONE]``). An engine error raised mid-stream (the load failed, the instance died) ends
the stream with one last event carrying the error body, so that a client ends with an error
rather than a truncated answer.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Iterable

from flask import Response, request

from workers.errors import LmhostError, to_wire

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer


def event_stream(events: Iterable[tuple[str | None, bytes]], *, end: bytes | None = None,
                 error_event: str | None = None) -> Response:
    """A streamed response of `events`, (event name or None, JSON bytes of its data) pairs,
    then `end` as a last unnamed event; an `LmhostError` becomes an `error_event` event."""
    def frames():
        try:
            for name, data in events:
                yield _frame(name, data)
            if end is not None:
                yield _frame(None, end)
        except LmhostError as error:
            yield _frame(error_event, json.dumps({"error": to_wire(error)}).encode())
        finally:
            close = getattr(events, "close", None)
            if close:  # the client went away: close the source now (it stops a generation)
                close()
    return Response(frames(), mimetype=MEDIA_TYPE, headers=HEADERS)


def _frame(name: str | None, data: bytes) -> bytes:
    return _head(name) + data + b"\n\n"


def _head(name: str | None) -> bytes:
    return (b"event: " + name.encode() + b"\n" if name else b"") + b"data: "


@dataclass(frozen=True)
class DirectText:
    """The client's connection, for the instance to write a stream's further text events on
    itself (`workers.inference.Reply.messages`, once the response head and the events before
    are written): the events `event_stream` would write, each as the HTTP chunk gunicorn
    would frame it."""
    sock: socket.socket

    @staticmethod
    def around(template: tuple[bytes, bytes], event: str | None = None) -> tuple[bytes, bytes]:
        """What the instance writes before and after a text's JSON: an event named `event`
        whose data is `template`'s prefix + the text as JSON + its suffix."""
        prefix, suffix = template
        return _head(event) + prefix, suffix + b"\n\n"


def direct_text(enabled: bool) -> DirectText | None:
    """A `DirectText` for this request, when the instance can write on its connection:
    `enabled` (``LMHOST_STREAM_HANDOFF``), gunicorn's plain socket (not TLS) and HTTP/1.1,
    whose body gunicorn sends chunked. Else None: the worker relays every event."""
    sock = request.environ.get("gunicorn.socket")
    if (not enabled or type(sock) is not socket.socket
            or request.environ.get("SERVER_PROTOCOL") != "HTTP/1.1"):
        return None
    return DirectText(sock)


def events_schema(*events: tuple[str | None, object]) -> dict:
    """JSON Schema of one event of a stream, read as an object: ``event`` (its name; a client
    reads an unnamed one as "message") and ``data``. `events` are (name or None, what the data
    holds): a marshmallow schema of the JSON it carries, or a literal string like "[DONE]"."""
    variants = []
    for name, data in events:
        if isinstance(data, str):
            data_schema = {"type": "string", "const": data}
        else:
            data_schema = {"type": "string", "contentMediaType": "application/json",
                           "contentSchema": data}
        variant = {"type": "object", "properties": {"data": data_schema}, "required": ["data"]}
        if name is not None:
            variant["properties"]["event"] = {"type": "string", "const": name}
            variant["required"].append("event")
        variants.append(variant)
    return {"oneOf": variants}
