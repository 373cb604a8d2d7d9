"""`Reply.messages()`: an instance's lines as it sent them, an error line raised, an instance
gone mid-reply the lost error, and the instance told once the first text was taken. An
instance is played by the other end of a socket pair."""

from __future__ import annotations

import json
import socket

import pytest

from workers.errors import LmhostError
from workers.inference import Reply
from workers.protocol import Channel


def text(t: str, tokens: int = 1) -> dict:
    return {"text": t, "tokens": tokens}


DONE = {"done": {"stop": "length"}}


def reply_with(lines: list[dict]) -> tuple[Reply, socket.socket]:
    """A reply whose first line is `lines[0]`, the rest already sent by the 'instance'."""
    ours, theirs = socket.socketpair()
    theirs.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in lines[1:]))
    lost = lambda: LmhostError("the instance stopped answering")  # noqa: E731
    return Reply(Channel(ours), lines[0], lost, "i1"), theirs


def test_every_line_comes_as_sent():
    lines = [text("a"), text("b"), text("c"), DONE]
    reply, _ = reply_with(lines)
    assert list(reply.messages()) == lines


def test_an_error_line_raises_after_the_lines_before_it():
    reply, _ = reply_with([text("a"), text("b"), {"error": {"type": "internal_error",
                                                            "message": "boom"}}])
    messages = reply.messages()
    assert [next(messages), next(messages)] == [text("a"), text("b")]
    with pytest.raises(LmhostError, match="boom"):
        next(messages)


def test_an_instance_gone_mid_reply_is_the_lost_error():
    reply, theirs = reply_with([text("a"), text("b")])
    messages = reply.messages()
    assert next(messages) == text("a")
    assert next(messages) == text("b")
    theirs.close()
    with pytest.raises(LmhostError, match="stopped answering"):
        next(messages)


def test_the_instance_hears_once_the_first_text_was_taken_and_more_is_asked():
    reply, theirs = reply_with([{"prompt": {"tokens": 3}}, text("a"), text("b"), DONE])
    theirs.settimeout(10)
    messages = reply.messages()
    assert next(messages) == {"prompt": {"tokens": 3}}
    assert next(messages) == text("a")
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):  # not yet: the caller may still be writing "a"
        theirs.recv(100)
    theirs.setblocking(True)
    assert list(messages) == [text("b"), DONE]
    assert theirs.recv(100) == b'{"op":"first_written"}\n'  # once
