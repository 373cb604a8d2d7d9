"""A job's fast text lines merged into fewer, on the instance (a ``generate`` request's
``"gather": seconds``: the SDK's prediction fragments, ``LMHOST_SDK_FRAGMENT_MS`` or, for a
client on this machine, ``LMHOST_SDK_LOCAL_FRAGMENT_MS``).

Why here and not in the HTTP worker: a worker woken for every token takes a core from
llama.cpp's threads on a host with no core to spare (on 2 cores, a relaying worker cost 11 % of
the tokens/s for 0.2 ms of CPU per token). Merged here, the worker wakes once per fragment.

The rule: the first text goes at once; a later one is held while the next text is expected
(one step after it, the step being the time since the text before) before `interval` has
passed since the last text went out. Any other line (progress, tool calls, ``done``) and a
text with log-probabilities sends what is held first, then itself. So text is never held past
the interval when tokens come steadily; when a step is suddenly slower than the last (a
grammar's resampling, a stop string's held-back tokens, a busier CPU), what is held waits for
that one step: there is no timer, which would wake a thread of the instance once per interval.
Held text is the instance's: if the instance dies, it is lost with it (the client gets the
error of the lost instance, as it would a moment later anyway).
"""

from __future__ import annotations

import time
from typing import Callable


def gatherable(line: dict) -> bool:
    return "text" in line and "logprobs" not in line


def merged(held: dict | None, line: dict) -> dict:
    if held is None:
        return dict(line)
    return {**held, "text": held["text"] + line["text"], "tokens": held["tokens"] + line["tokens"]}


class Gatherer:
    """Called with each line of a job in place of `send`; `flush()` sends what it holds."""

    def __init__(self, interval: float, send: Callable[[dict], None],
                 clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.send = send
        self.clock = clock
        self.held: dict | None = None
        self.sent_at: float | None = None   # when the last text went out
        self.text_at: float | None = None   # when the last text came

    def __call__(self, line: dict) -> None:
        if not gatherable(line):
            self.flush()
            self.send(line)
            return
        now = self.clock()
        step = None if self.text_at is None else now - self.text_at
        self.text_at = now
        self.held = merged(self.held, line)
        if step is None or self.sent_at is None or now + step >= self.sent_at + self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.held is not None:
            line, self.held = self.held, None
            self.sent_at = self.clock() if now is None else now
            self.send(line)
