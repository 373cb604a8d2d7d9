"""OpenAI-compatible endpoints. Views validate, make one call into `workers.openai_compat`, and
send the answer as JSON or, with ``stream: true``, as SSE ending with ``data: [DONE]``."""

from __future__ import annotations

from flask import jsonify

from app.errors import Blueprint
from app.extensions import engine
from app.openai.schemas import ChatRequestSchema, CompletionRequestSchema, EmbeddingRequestSchema
from app.sse import event_stream
from workers import openai_compat
from workers.listing import openai_models

blp = Blueprint("openai", __name__, url_prefix="/v1",
                description="OpenAI-compatible inference (JIT loading, TTL, auto-evict)")

DONE = b"[DONE]"


def _send(body: dict, answer):
    if body.get("stream"):
        return event_stream(((None, chunk) for chunk in answer), end=DONE)
    return jsonify(answer)


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
    return _send(body, openai_compat.chat(engine().inference, body))


@blp.route("/completions", methods=["POST"])
@blp.arguments(CompletionRequestSchema)
@blp.response(200)
def completions(body):
    """Text completion; `prompt` may be a list (one choice per prompt, in order)."""
    return _send(body, openai_compat.complete(engine().inference, body))


@blp.route("/embeddings", methods=["POST"])
@blp.arguments(EmbeddingRequestSchema)
@blp.response(200)
def embeddings(body):
    """Embeddings as float lists, or base64 of little-endian float32 (what the openai client
    asks for by default)."""
    return jsonify(openai_compat.embed(engine().inference, body))
