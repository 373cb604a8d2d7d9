"""OpenAI-compatible endpoints. Views validate, call `workers.inference` once, and shape the
answer: the `model` field is the request's `model`, streams are SSE ending with [DONE]."""

from __future__ import annotations

import base64
import json
import struct

from flask import Response, jsonify

from app.errors import Blueprint
from app.extensions import engine
from app.openai.schemas import ChatRequestSchema, CompletionRequestSchema, EmbeddingRequestSchema
from workers.errors import LmhostError, to_wire
from workers.inference import run_all
from workers.listing import openai_models

blp = Blueprint("openai", __name__, url_prefix="/v1",
                description="OpenAI-compatible inference (JIT loading, TTL, auto-evict)")

SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
            "frequency_penalty")


def _sampling(body: dict) -> dict:
    return {k: body[k] for k in SAMPLING if body.get(k) is not None}


def _sse(chunks):
    """OpenAI's stream: one `data:` line per chunk (JSON bytes), then [DONE]; an error
    mid-stream (the instance died) is a last `data: {"error": ...}`, so clients end with an
    error rather than a truncated answer."""
    try:
        for chunk in chunks:
            yield b"data: " + chunk + b"\n\n"
        yield b"data: [DONE]\n\n"
    except LmhostError as error:
        yield b"data: " + json.dumps({"error": to_wire(error)}).encode() + b"\n\n"


def _stream_response(chunks) -> Response:
    return Response(_sse(chunks), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@blp.route("/models")
@blp.response(200)
def list_models():
    """Loaded instances and, with JIT on, every downloaded model."""
    eng = engine()
    return {"object": "list", "data": openai_models(eng.listing.rows(), eng.settings.jit)}


@blp.route("/chat/completions", methods=["POST"])
@blp.arguments(ChatRequestSchema)
@blp.response(200)
def chat_completions(body):
    """Chat with the model's own chat template (from its GGUF)."""
    params = {"messages": [{k: v for k, v in m.items()} for m in body["messages"]],
              **_sampling(body)}
    if body.get("max_completion_tokens") is not None:
        params["max_tokens"] = body["max_completion_tokens"]
    return _answer(body, "chat", params)


@blp.route("/completions", methods=["POST"])
@blp.arguments(CompletionRequestSchema)
@blp.response(200)
def completions(body):
    """Text completion; `prompt` may be a list (one choice per prompt, in order)."""
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    params = {**_sampling(body), "echo": body.get("echo", False)}
    inference, model = engine().inference, body["model"]
    if body.get("stream"):
        first = inference.run(model, "completion", {**params, "prompt": prompts[0]},
                              stream=True, ttl=body.get("ttl"))
        if len(prompts) == 1:
            return _stream_response(first.chunk_bytes())

        def all_prompts():  # several prompts: one after the other, choices renumbered
            for index, prompt in enumerate(prompts):
                reply = first if index == 0 else inference.run(
                    model, "completion", {**params, "prompt": prompt}, stream=True)
                for message in reply.messages():
                    for choice in message.get("chunk", {}).get("choices", []):
                        choice["index"] = index
                    if "chunk" in message:
                        yield json.dumps(message["chunk"]).encode()
        return _stream_response(all_prompts())
    results = [run_all(inference, model, "completion", {**params, "prompt": p}, ttl=body.get("ttl"))
               for p in prompts]
    answer = results[0]
    answer["choices"] = [dict(r["choices"][0], index=i) for i, r in enumerate(results)]
    answer["usage"] = {k: sum(r["usage"][k] for r in results) for k in answer["usage"]}
    return jsonify(answer)


def _answer(body: dict, kind: str, params: dict):
    inference, model = engine().inference, body["model"]
    if body.get("stream"):
        reply = inference.run(model, kind, params, stream=True, ttl=body.get("ttl"))
        return _stream_response(reply.chunk_bytes())
    return jsonify(run_all(inference, model, kind, params, ttl=body.get("ttl")))


@blp.route("/embeddings", methods=["POST"])
@blp.arguments(EmbeddingRequestSchema)
@blp.response(200)
def embeddings(body):
    """Embeddings as float lists, or base64 of little-endian float32 (what the openai client
    asks for by default)."""
    model = body["model"]
    result = run_all(engine().inference, model, "embedding", {"input": body["input"]},
                     ttl=body.get("ttl"))
    if body.get("encoding_format") == "base64":
        for item in result["data"]:
            vector = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return jsonify(result)
