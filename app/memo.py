"""Serialized responses memoized by the identity of the data they were made from.

The engine hands out the same immutable list while nothing changed (`workers.listing`), so a
listing of 1,000 models is encoded as JSON once per change, not once per request.
"""

from __future__ import annotations

import json

from flask import Response


class JsonMemo:
    def __init__(self):
        self._last: tuple[object, bytes] | None = None  # (source object, body); one tuple swap

    def response(self, source, wrap) -> Response:
        """`wrap(source)` as JSON, reused while `source` is the same object. The source is kept
        referenced so its identity cannot be reused."""
        last = self._last
        if last is None or last[0] is not source:
            last = (source, json.dumps(wrap(source), separators=(",", ":")).encode())
            self._last = last
        return Response(last[1], mimetype="application/json")
