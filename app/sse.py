"""Server-sent events: the one helper that streams them, and the schema that documents them.

Both streaming routes use it: a load with ``Accept: text/event-stream`` (named events:
``progress``, ``loaded``, ``error``) and OpenAI's ``stream: true`` (unnamed events ending with
``data: [DONE]``). An engine error raised mid-stream (the load failed, the instance died) ends
the stream with one last event carrying the error body, so that a client ends with an error
rather than a truncated answer.
"""

from __future__ import annotations

import json
from typing import Iterable

from flask import Response

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
    return (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + data + b"\n\n"


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
