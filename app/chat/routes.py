"""``POST /api/v1/chat``: the view validates, makes one call into `workers.native_chat`, and
sends the answer as JSON or, with ``stream: true``, as LM Studio's named events."""

from __future__ import annotations

from flask import jsonify

from app.api import Blueprint
from app.chat.schemas import CHAT_EXAMPLE, EVENTS, NativeChatRequestSchema, NativeChatResponseSchema
from app.extensions import engine
from app.sse import direct_text, event_stream

blp = Blueprint("chat", __name__, url_prefix="/api/v1",
                description="LM Studio's native chat (JIT loading, TTL, stored chats)")


@blp.route("/chat", methods=["POST"])
@blp.arguments(NativeChatRequestSchema, example=CHAT_EXAMPLE)
@blp.response(200, NativeChatResponseSchema)
@blp.streams("The answer. With `stream: true`, server-sent events, each event's data with "
             "its name as `type`: `chat.start`; `model_load.*` when this request loads the "
             "model; `prompt_processing.*`; `message.*`; `error` if something fails midway; "
             "`chat.end` with the answer (what was generated, after an error)", *EVENTS)
@blp.errors("invalid_request", "model_not_found", "model_load_failed", "overloaded",
            "insufficient_memory", "unavailable")
def chat(body):
    """Chat with a model: one turn, a stored chat continued with `previous_response_id`."""
    eng = engine()
    answer = eng.chat.chat(body, direct_text(eng.settings.stream_handoff))
    if body.get("stream"):
        return event_stream(answer)
    return jsonify(answer)
