"""Text as it is generated, piece by piece: pure helpers of `generation`.

- `Utf8Pieces`: token bytes -> text, holding back an incomplete UTF-8 sequence (a character
  may span tokens), so that no piece ever carries a replacement character by accident.
- `StopStrings`: holds back the tail that may be the start of a stop string, and finds one
  even when it spans pieces; the text before it is all the client ever sees.
- `JsonStringReader`: the decoded content of a JSON string whose raw text arrives piece by
  piece (escapes split across pieces included), up to its closing quote.
"""

from __future__ import annotations

import codecs
import json


class Utf8Pieces:
    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopStrings:
    """`feed(text)` -> (text safe to emit, the stop string found or None). After a stop string
    is found nothing more is emitted; `flush()` gives what was held back at the end."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._held = ""
        self.found: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        if self.found is not None:
            return "", self.found
        if not self.stops:
            return text, None
        buffer = self._held + text
        first = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.found = first[1]
            self._held = ""
            return buffer[:first[0]], self.found
        keep = 0  # the longest tail that is the start of some stop string
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:n]):
                    keep = n
                    break
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[:len(buffer) - keep], None

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.found is not None else held


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsonStringReader:
    """Feed the raw text that follows a JSON string's opening quote; `feed` returns the decoded
    characters complete so far. `closed` turns true at the closing quote (the rest is ignored)."""

    def __init__(self):
        self._pending = ""   # an escape sequence not complete yet
        self._high = ""      # a high surrogate waiting for its low half
        self.closed = False

    def feed(self, raw: str) -> str:
        out = []
        text = self._pending + raw
        self._pending = ""
        i = 0
        while i < len(text) and not self.closed:
            ch = text[i]
            if ch == '"':
                self.closed = True
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(text):
                self._pending = text[i:]
                break
            kind = text[i + 1]
            if kind == "u":
                if i + 6 > len(text):
                    self._pending = text[i:]
                    break
                out.append(self._unicode(text[i:i + 6]))
                i += 6
                continue
            out.append(_ESCAPES.get(kind, kind))
            i += 2
        return "".join(out)

    def _unicode(self, escape: str) -> str:
        try:
            char = json.loads(f'"{escape}"')
        except ValueError:
            return "\ufffd"
        if "\ud800" <= char <= "\udbff":
            self._high = char
            return ""
        if "\udc00" <= char <= "\udfff" and self._high:
            pair, self._high = self._high + char, ""
            return pair.encode("utf-16", "surrogatepass").decode("utf-16")
        return char
