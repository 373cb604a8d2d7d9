"""One inference request, run on the instance's model by its executor thread.

A job is ``{"op": "run", "kind": "completion"|"chat"|"embedding", "params": {...},
"stream": bool, "model": name}``; the reply is ``{"result": ...}``, or, streaming, one
``{"chunk": ...}`` line per chunk then ``{"done": true}``. Answers carry ``model``: what the
client called the model. A write that fails (the client went away) ends the generation there.

`on_tokens(n)` hears of generated tokens as they come (the instance's ``generated_tokens``,
for ``/metrics``): the usage of an answer, or one per streamed chunk that carries text
(llama.cpp streams a token a chunk).
"""

from __future__ import annotations

from typing import Callable

from workers.protocol import Channel

METHODS = {"completion": "create_completion", "chat": "create_chat_completion",
           "embedding": "create_embedding"}


def run_job(llm, request: dict, channel: Channel,
            on_tokens: Callable[[int], None] = lambda n: None) -> None:
    kind, params = request.get("kind"), dict(request.get("params") or {})
    name = request.get("model")
    if kind not in METHODS:
        raise ValueError(f"unknown kind {kind!r}")
    method = getattr(llm, METHODS[kind])
    if kind == "embedding" or not request.get("stream"):
        result = method(**params)
        result["model"] = name or result.get("model")
        on_tokens((result.get("usage") or {}).get("completion_tokens") or 0)
        channel.send({"result": result})
        return
    chunks = method(stream=True, **params)
    try:
        for chunk in chunks:
            chunk["model"] = name or chunk.get("model")
            if any(c.get("text") or (c.get("delta") or {}).get("content")
                   for c in chunk.get("choices") or ()):
                on_tokens(1)
            channel.send({"chunk": chunk})  # raises when the client is gone
        channel.send({"done": True})
    finally:
        chunks.close()  # stops llama.cpp's generation loop
