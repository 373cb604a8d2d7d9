"""`Gatherer`: an instance merges a job's fast text lines into fewer (the SDK's prediction
fragments, ``LMHOST_SDK_FRAGMENT_MS`` / ``LMHOST_SDK_LOCAL_FRAGMENT_MS``): the first at
once, none held past the interval while tokens come steadily, every other line in its
place. A fake clock; then once through the real instance server with a scripted engine."""

from __future__ import annotations

import socket

import pytest

from tests.unit.scripted_instance import AFTER, BEFORE, ScriptEngine, hand_off, read_chunks
from workers.instance.gathering import Gatherer
from workers.protocol import Channel

INTERVAL = 0.040


def text(t: str, tokens: int = 1) -> dict:
    return {"text": t, "tokens": tokens}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gathered():
    """(gatherer, lines it sent as (time, line), clock)"""
    clock, sent = Clock(), []
    gatherer = Gatherer(INTERVAL, lambda line: sent.append((round(clock.now - 100, 4), line)),
                        clock)
    return gatherer, sent, clock


def feed(gatherer, clock, lines_at: list[tuple[float, dict]]) -> None:
    for at, line in lines_at:
        clock.now = 100 + at
        gatherer(line)


def test_the_first_text_goes_at_once_and_steady_fast_ones_go_together(gathered):
    gatherer, sent, clock = gathered
    # a token every 10 ms: the 4th is the last whose next is not expected within 40 ms
    feed(gatherer, clock, [(0.000, text("a")), (0.010, text("b")), (0.020, text("c", 2)),
                           (0.030, text("d")), (0.040, text("e")), (0.050, text("f"))])
    assert sent == [(0.0, text("a")), (0.03, text("bcd", 4))]
    assert gatherer.held == text("ef", 2)


def test_no_text_is_held_past_the_interval_when_tokens_come_steadily(gathered):
    gatherer, sent, clock = gathered
    step, pieces = 0.013, [chr(0x100 + i) for i in range(40)]  # one character each
    feed(gatherer, clock, [(i * step, text(piece)) for i, piece in enumerate(pieces)])
    feed(gatherer, clock, [(40 * step, {"done": {}})])
    came = {piece: i * step for i, piece in enumerate(pieces)}
    for at, line in sent[:-1]:
        assert all(at - came[piece] <= INTERVAL + 1e-9 for piece in line["text"]), line
    assert "".join(line.get("text", "") for _, line in sent) == "".join(pieces)
    assert sum(line.get("tokens", 0) for _, line in sent) == 40
    assert 8 <= len(sent) <= 16  # about 3 tokens a fragment, not one each


def test_slow_tokens_go_one_by_one(gathered):
    gatherer, sent, clock = gathered
    feed(gatherer, clock, [(0.0, text("a")), (0.05, text("b")), (0.10, text("c"))])
    assert [line for _, line in sent] == [text("a"), text("b"), text("c")]


def test_any_other_line_sends_the_held_text_first(gathered):
    gatherer, sent, clock = gathered
    calls = {"tool_calls": [{"name": "f"}]}
    logprobs = {"text": "e", "tokens": 1, "logprobs": [{"token": "e"}]}
    feed(gatherer, clock, [(0.0, {"prompt": {"tokens": 3}}), (0.001, text("a")),
                           (0.002, text("b")), (0.003, text("c")), (0.004, calls),
                           (0.005, text("d")), (0.006, logprobs), (0.007, {"done": {}})])
    assert [line for _, line in sent] == [
        {"prompt": {"tokens": 3}}, text("a"), text("bc", 2), calls, text("d"), logprobs,
        {"done": {}}]


def test_after_a_suddenly_slow_step_the_held_text_goes_with_the_next_line(gathered):
    # no timer: what is held waits for the slow step (README: "The SDK's fragments")
    gatherer, sent, clock = gathered
    feed(gatherer, clock, [(0.0, text("a")), (0.010, text("b")), (0.020, text("c"))])
    assert sent == [(0.0, text("a"))]
    feed(gatherer, clock, [(0.300, text("d"))])
    assert sent == [(0.0, text("a")), (0.3, text("bcd", 3))]


def test_flush_sends_what_is_held_once(gathered):
    gatherer, sent, clock = gathered
    feed(gatherer, clock, [(0.0, text("a")), (0.001, text("b"))])
    gatherer.flush()
    gatherer.flush()
    assert [line for _, line in sent] == [text("a"), text("b")]


def run_lines(path: str, request: dict) -> list[dict]:
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", **request})
        lines = [channel.recv()]
        while "done" not in lines[-1]:
            lines.append(channel.recv())
    return lines


def test_an_instance_merges_the_text_of_a_job_that_asks(serve_instance):
    instance, path = serve_instance(ScriptEngine([str(i) for i in range(50)]))
    plain = run_lines(path, {"params": {}})
    merged = run_lines(path, {"params": {}, "gather": 60.0})
    assert len(plain) == 51
    # the scripted engine's tokens come at once: all but the first are merged, until done
    assert merged == [text("0"), text("".join(str(i) for i in range(1, 50)), 49), plain[-1]]
    assert instance.status()["generated_tokens"] == 100  # merged lines count every token
    with_logprobs = run_lines(path, {"params": {"logprobs": 1}, "gather": 60.0})
    assert len(with_logprobs) == 51  # each line's log-probabilities stay with its text


class FailingEngine(ScriptEngine):
    """Sends its texts, then fails as a bug in the engine would (or, `ends_quietly`, returns
    without its ``done`` line)."""

    def __init__(self, texts, ends_quietly=False):
        super().__init__(texts)
        self.ends_quietly = ends_quietly

    def generate(self, params, send, cancelled):
        for piece in self.texts:
            send(text(piece))
        if not self.ends_quietly:
            raise RuntimeError("the engine broke")


def test_text_held_when_the_engine_fails_goes_before_the_error(serve_instance):
    _, path = serve_instance(FailingEngine(["a", "b", "c"]))
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "gather": 60.0})
        lines = [channel.recv(), channel.recv(), channel.recv()]
    assert lines[:2] == [text("a"), text("bc", 2)]
    assert "the engine broke" in lines[2]["error"]["message"]


def test_text_held_when_the_engine_returns_without_done_still_goes(serve_instance):
    _, path = serve_instance(FailingEngine(["a", "b", "c"], ends_quietly=True))
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "gather": 60.0})
        assert [channel.recv(), channel.recv()] == [text("a"), text("bc", 2)]


def test_a_job_handed_off_is_not_merged(serve_instance):
    # the instance writes a handed-off stream's text itself, one HTTP chunk a line: the
    # worker's hand-off and a merge do not go together (the worker never asks for both)
    _, path = serve_instance(ScriptEngine(["a", "b", "c"]))
    client, client_end = socket.socketpair()
    with Channel.connect(path, 10) as channel:
        channel.send({"op": "run", "kind": "generate", "params": {}, "hand_off": True,
                      "gather": 60.0})
        assert channel.recv() == text("a")
        hand_off(channel, client_end)
        done = channel.recv()
    assert done["done"]["handed_off"] == "bc"
    assert read_chunks(client) == [BEFORE + b'"b"' + AFTER, BEFORE + b'"c"' + AFTER]
    client.close()
