"""`Reply.messages(gather=...)`: text lines that come close together are given as one (the SDK's
prediction fragments, ``LMHOST_SDK_FRAGMENT_MS``), with nothing held back longer than the
interval and every other line in its place. An instance is played by the other end of a
socket pair."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from workers.errors import LmhostError
from workers.inference import Reply
from workers.protocol import Channel

LONG = 60.0  # an interval no test waits out: what it gathers comes from lines already sent


def text(t: str, tokens: int = 1) -> dict:
    return {"text": t, "tokens": tokens}


DONE = {"done": {"stop": "length"}}


def reply_with(lines: list[dict]) -> tuple[Reply, socket.socket]:
    """A reply whose first line is `lines[0]`, the rest already sent by the 'instance'."""
    ours, theirs = socket.socketpair()
    theirs.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in lines[1:]))
    lost = lambda: LmhostError("the instance stopped answering")  # noqa: E731
    return Reply(Channel(ours), lines[0], lost, "i1"), theirs


def test_without_gather_every_line_comes_as_sent():
    lines = [text("a"), text("b"), text("c"), DONE]
    reply, _ = reply_with(lines)
    assert list(reply.messages()) == lines


def test_the_first_text_comes_at_once_and_the_next_ones_together_before_done():
    reply, _ = reply_with([{"prompt": {"tokens": 3}}, text("a"), text("b", 2), text("c"), DONE])
    assert list(reply.messages(gather=LONG)) == [
        {"prompt": {"tokens": 3}}, text("a"), text("bc", 3), DONE]


def test_another_line_flushes_the_gathered_text_first():
    calls = {"tool_calls": [{"name": "f"}]}
    logprobs = {"text": "d", "tokens": 1, "logprobs": [{"token": "d"}]}
    reply, _ = reply_with([text("a"), text("b"), text("c"), calls, text("d"), logprobs, DONE])
    assert list(reply.messages(gather=LONG)) == [
        text("a"), text("bc", 2), calls, text("d"), logprobs, DONE]


def test_an_error_after_gathered_text_gives_the_text_then_raises():
    reply, _ = reply_with([text("a"), text("b"), {"error": {"type": "internal_error",
                                                            "message": "boom"}}])
    messages = reply.messages(gather=LONG)
    assert [next(messages), next(messages)] == [text("a"), text("b")]
    with pytest.raises(LmhostError, match="boom"):
        next(messages)


def test_gathered_text_waits_no_longer_than_the_interval():
    # the 'instance' sends "b" and then nothing: "b" must come without a further line
    reply, theirs = reply_with([text("a"), text("b")])
    messages = reply.messages(gather=0.05)
    assert next(messages) == text("a")
    got = []
    reader = threading.Thread(target=lambda: got.append(next(messages)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert got == [text("b")], "the gathered text waited for a line that never came"
    theirs.sendall(json.dumps(DONE).encode() + b"\n")
    assert list(messages) == [DONE]


def test_an_instance_gone_while_text_is_gathered_is_the_lost_error():
    reply, theirs = reply_with([text("a"), text("b")])
    messages = reply.messages(gather=LONG)
    assert next(messages) == text("a")
    theirs.close()
    assert next(messages) == text("b")
    with pytest.raises(LmhostError, match="stopped answering"):
        next(messages)


@pytest.mark.parametrize("gather", [0.0, LONG])
def test_the_instance_hears_once_the_first_text_was_taken_and_more_is_asked(gather):
    reply, theirs = reply_with([{"prompt": {"tokens": 3}}, text("a"), text("b"), DONE])
    theirs.settimeout(10)
    messages = reply.messages(gather=gather)
    assert next(messages) == {"prompt": {"tokens": 3}}
    assert next(messages) == text("a")
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):  # not yet: the caller may still be writing "a"
        theirs.recv(100)
    theirs.setblocking(True)
    assert list(messages) == [text("b"), DONE]
    assert theirs.recv(100) == b'{"op":"first_written"}\n'  # once
