"""One inference request, run on the instance's model by its executor thread.

A job is ``{"op": "run", "kind": "completion"|"chat"|"embedding", "params": {...},
"stream": bool, "model": name}``; the reply is ``{"result": ...}``, or, streaming, one
``{"chunk": ...}`` line per chunk then ``{"done": true}``. Answers carry ``model``: what the
client called the model. A write that fails (the client went away) ends the generation there.
"""

from __future__ import annotations

from workers.protocol import Channel

METHODS = {"completion": "create_completion", "chat": "create_chat_completion",
           "embedding": "create_embedding"}


def run_job(llm, request: dict, channel: Channel) -> None:
    kind, params = request.get("kind"), dict(request.get("params") or {})
    name = request.get("model")
    if kind not in METHODS:
        raise ValueError(f"unknown kind {kind!r}")
    method = getattr(llm, METHODS[kind])
    if kind == "embedding" or not request.get("stream"):
        result = method(**params)
        result["model"] = name or result.get("model")
        channel.send({"result": result})
        return
    chunks = method(stream=True, **params)
    try:
        for chunk in chunks:
            chunk["model"] = name or chunk.get("model")
            channel.send({"chunk": chunk})  # raises when the client is gone
        channel.send({"done": True})
    finally:
        chunks.close()  # stops llama.cpp's generation loop
