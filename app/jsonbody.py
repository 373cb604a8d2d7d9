"""Request bodies as users really send them.

LM Studio's own documented example (seed 000) ends its JSON object with a trailing comma, and the
contract says that example must work verbatim; so a body that is valid JSON once trailing commas
before ``}`` or ``]`` are dropped is accepted. Nothing else is relaxed: comments, single quotes
or bare keys are still 400 errors.
"""

from __future__ import annotations

import json


def strip_trailing_commas(text: str) -> str:
    """Remove commas that are followed (after white space) by ``}`` or ``]``, outside strings."""
    out = []
    in_string = escaped = False
    pending_comma = None  # index in `out` of a comma that may turn out to be trailing
    last = ""  # the last significant character outside strings
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                last = '"'
            continue
        if ch in "}]" and pending_comma is not None:
            out[pending_comma] = ""
        if ch == ",":
            # only a comma after a value can be trailing: "[,]" and "{,}" stay invalid
            pending_comma = len(out) if last not in ("", "[", "{", ",") else None
        elif not ch.isspace():
            pending_comma = None
        if not ch.isspace():
            last = ch
        if ch == '"':
            in_string = True
        out.append(ch)
    return "".join(out)


def loads_lenient(data: bytes):
    text = data.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        try:
            return json.loads(strip_trailing_commas(text))
        except json.JSONDecodeError:
            raise error from None
