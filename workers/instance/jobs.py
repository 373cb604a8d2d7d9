"""One inference request, run on the instance's model by its executor thread; the job protocol
that every wire's request becomes (`workers.inference` sends it, `generation` does the work).

Requests, one JSON line on a fresh connection to the instance's socket:

- ``{"op": "run", "kind": "generate", "params": P}``: text generation. P holds either
  ``messages`` (a chat, OpenAI's message shape: ``role``, ``content``, ``tool_calls``,
  ``tool_call_id``, ``name``; formatted with the model's chat template, or with ``template``
  ``{"jinja", "bos_token", "eos_token"}``) or ``prompt`` (raw text, ``add_bos`` default true);
  sampling: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
  ``repeat_penalty``, ``presence_penalty``, ``frequency_penalty``, ``seed``, ``stop`` (list);
  structured output, one of ``json_schema`` (a schema), ``json_object`` (true), ``gbnf``;
  tools: ``tools`` (``[{"name", "description", "parameters"}]``), ``tool_choice``
  (``"auto"`` | ``"none"`` | ``"required"`` | ``{"name"}``), ``parallel_tool_calls``;
  ``logprobs`` (N: each token's log-probability and its N most likely alternatives);
  ``progress`` (true: report prompt processing).
- ``{"op": "run", "kind": "embedding", "params": {"input": str | [str]}}``.

While a job runs, the client may send ``{"op": "cancel"}`` on the same connection; closing
the connection cancels too. Either stops a generation before its next token. A ``generate``
request with ``"hand_off": true`` is answered as below up to its first ``text`` line; the
client then sends ``{"op": "hand_off", "before", "after"}`` with its HTTP client's socket,
and the instance writes every further text itself (`workers.instance.handoff`).

A ``generate`` request with ``"gather": seconds`` (not with a hand-off) has its fast text lines
merged into fewer, each ``tokens`` the sum (`workers.instance.gathering`).

A ``generate`` request with ``"first_written": true`` promises ``{"op": "first_written"}`` (or
the hand-off) once the client has written the first text on to its own client: the instance
waits for it, at most `FIRST_WRITTEN_WAIT`, before it decodes the next token. On a host with
as many cores as llama.cpp has threads, decoding at once would make the worker's write of the
first token wait for a core (0.5 to 1.5 ms of time to first token, measured on 2 cores); the
wait delays the stream's second token by the worker's write instead, once per request.

Answers, JSON lines: an ``{"error": {"type", "message", "param"}}`` line instead of anything
else when the request cannot be served (bad schema, prompt too long, ...). Otherwise, for
``generate``:

- ``{"prompt": {"tokens", "cached", "processed"}}``: prompt processing (``progress`` only):
  once before (``processed == cached``), then after each batch;
- ``{"text": str, "tokens": n}``: the next piece of the answer and how many tokens it took
  (held-back text comes with a later line), with ``"logprobs": [{"token", "logprob",
  "bytes", "top": [...]}]`` when asked;
- ``{"tool_calls": [{"id", "name", "arguments"}]}``: the calls, ``arguments`` as JSON text;
- ``{"done": {"stop", "prompt_tokens", "cached_tokens", "completion_tokens", "ttft",
  "seconds", "tokens_per_second", "stop_string"?}}`` last; ``stop`` is ``eos``, ``length``
  (``max_tokens``), ``context`` (the context is full), ``stop_string``, ``tool_calls`` or
  ``cancelled``; times in seconds from when the job started running; ``handed_off``: the text
  the instance wrote on the client's socket itself.

``embedding`` answers ``{"result": <llama-cpp-python's create_embedding answer>}``.

`on_tokens(n, handed_off)` hears of generated tokens as they come (the instance's
``generated_tokens`` and ``handed_off_tokens``, for ``/metrics``): each ``text`` line's
``tokens``, and whether the instance wrote them on the client's connection.
"""

from __future__ import annotations

import threading
from typing import Callable

from workers.instance.gathering import Gatherer
from workers.instance.handoff import Handoff
from workers.protocol import Channel

FIRST_WRITTEN_WAIT = 0.1  # seconds the next token waits for the client to write the first


def run_job(engine, request: dict, channel: Channel, cancelled: threading.Event,
            on_tokens: Callable[[int, bool], None] = lambda n, handed_off: None,
            handoff: Handoff | None = None,
            first_written: threading.Event | None = None) -> None:
    """`handoff`: the job's, when its request asked for one. `first_written`: set when the
    client says it wrote the first text on (or hands off, or goes away), when it promised to."""
    kind, params = request.get("kind"), dict(request.get("params") or {})
    if kind == "generate":
        texts = 0

        def send(line: dict) -> None:  # raises when the client is gone
            nonlocal texts
            texts += "text" in line
            if handoff is not None:
                if "text" in line and texts > 1:  # the first goes to the worker, which then
                    on_tokens(line.get("tokens", 0), handoff.write_text(line["text"]))  # hands over
                    return
                if "done" in line:
                    line = {"done": {**line["done"], "handed_off": handoff.close()}}
            if line.get("tokens"):
                on_tokens(line["tokens"], False)
            channel.send(line)
            if texts == 1 and "text" in line and first_written is not None:
                first_written.wait(FIRST_WRITTEN_WAIT)
        gather = request.get("gather")
        gatherer = Gatherer(gather, send) if handoff is None and _seconds(gather) else None
        try:
            engine.generate(params, gatherer or send, cancelled)
        finally:
            if gatherer is not None:  # what it holds goes before anything after (an error line)
                try:
                    gatherer.flush()
                except OSError:
                    pass  # the client is gone: the executor says nothing more to it either
            if handoff is not None:
                handoff.close()
    elif kind == "embedding":
        result = engine.llm.create_embedding(params.get("input", ""))
        result["model"] = request.get("model") or result.get("model")
        channel.send({"result": result})
    else:
        raise ValueError(f"unknown kind {kind!r}")


def _seconds(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
