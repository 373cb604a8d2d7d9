"""OpenAI-compatible endpoints. Views validate, make one call into `workers.openai_compat`, and
send the answer as JSON or, with ``stream: true``, as SSE ending with ``data: [DONE]``."""

from __future__ import annotations

from flask import jsonify

from app.api import Blueprint
from app.errors import ErrorSchema
from app.extensions import engine
from app.openai.schemas import (CHAT_EXAMPLE, COMPLETION_EXAMPLE, EMBEDDING_EXAMPLE,
                                ChatCompletionChunkSchema, ChatCompletionSchema,
                                ChatRequestSchema, CompletionChunkSchema, CompletionRequestSchema,
                                CompletionSchema, EmbeddingListSchema, EmbeddingRequestSchema,
                                OpenAIModelListSchema)
from app.sse import direct_text, event_stream
from workers import openai_compat
from workers.listing import openai_models

blp = Blueprint("openai", __name__, url_prefix="/v1",
                description="OpenAI-compatible inference (JIT loading, TTL, auto-evict)")

INFERENCE_ERRORS = ("invalid_request", "model_not_found", "model_load_failed", "overloaded",
                    "insufficient_memory", "unavailable")
DONE = b"[DONE]"


def _stream_doc(chunk_schema):
    return ("The answer. With `stream: true`, server-sent events: one per chunk, then "
            "`[DONE]`; an error mid-stream (the instance stopped) is a last event with the "
            "error body",
            (None, chunk_schema), (None, ErrorSchema), (None, DONE.decode()))


def _send(body: dict, answer):
    if body.get("stream"):
        return event_stream(((None, chunk) for chunk in answer), end=DONE)
    return jsonify(answer)


@blp.route("/models")
@blp.response(200, OpenAIModelListSchema)
@blp.errors()
def list_models():
    """Loaded instances and, with JIT on, every downloaded model."""
    eng = engine()
    return {"object": "list", "data": openai_models(eng.listing.rows(), eng.settings.jit)}


@blp.route("/chat/completions", methods=["POST"])
@blp.arguments(ChatRequestSchema, example=CHAT_EXAMPLE)
@blp.response(200, ChatCompletionSchema)
@blp.streams(*_stream_doc(ChatCompletionChunkSchema))
@blp.errors(*INFERENCE_ERRORS)
def chat_completions(body):
    """Chat with the model's own chat template (from its GGUF)."""
    eng = engine()
    return _send(body, openai_compat.chat(eng.inference, body,
                                          direct_text(eng.settings.stream_handoff)))


@blp.route("/completions", methods=["POST"])
@blp.arguments(CompletionRequestSchema, example=COMPLETION_EXAMPLE)
@blp.response(200, CompletionSchema)
@blp.streams(*_stream_doc(CompletionChunkSchema))
@blp.errors(*INFERENCE_ERRORS)
def completions(body):
    """Text completion; `prompt` may be a list (one choice per prompt, in order)."""
    eng = engine()
    return _send(body, openai_compat.complete(eng.inference, body,
                                              direct_text(eng.settings.stream_handoff)))


@blp.route("/embeddings", methods=["POST"])
@blp.arguments(EmbeddingRequestSchema, example=EMBEDDING_EXAMPLE)
@blp.response(200, EmbeddingListSchema)
@blp.errors(*INFERENCE_ERRORS)
def embeddings(body):
    """Embeddings as float lists, or base64 of little-endian float32 (what the openai client
    asks for by default)."""
    return jsonify(openai_compat.embed(engine().inference, body))
