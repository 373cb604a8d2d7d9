"""Serialized responses memoized by the identity of the data they were made from.

The engine hands out the same immutable list while nothing changed (`workers.listing`), so a
listing of 1,000 models is dumped through its schema once per change, not once per request.
"""

from __future__ import annotations

import json

from flask import Response


class DumpMemo:
    def __init__(self):
        self._last: tuple[object, bytes] | None = None  # (source object, body); one tuple swap

    def response(self, source, schema, wrap) -> Response:
        """`wrap(source)` dumped through `schema` as JSON, reused while `source` is the same
        object. The source is kept referenced so its identity cannot be reused."""
        last = self._last
        if last is None or last[0] is not source:
            body = json.dumps(schema.dump(wrap(source)), separators=(",", ":")).encode()
            last = (source, body)
            self._last = last
        return Response(last[1], mimetype="application/json")
