from __future__ import annotations

import itertools
import json

from flask import request

from app.errors import Blueprint
from app.extensions import engine
from app.models.schemas import (LoadRequestSchema, LoadResponseSchema, ModelListSchema,
                                UnloadRequestSchema, UnloadResponseSchema)
from app.sse import MEDIA_TYPE, event_stream

blp = Blueprint("models", __name__, url_prefix="/api/v1/models",
                description="Models on disk and their loaded instances (LM Studio REST v1)")

_LOADED = LoadResponseSchema()


@blp.route("")
@blp.response(200, ModelListSchema)
def list_models():
    """List downloaded models with their loaded instances (seed 004)."""
    eng = engine()
    return eng.listing_body.response(eng.listing.rows(), lambda rows: {"models": rows})


@blp.route("/load", methods=["POST"])
@blp.arguments(LoadRequestSchema)
@blp.response(200, LoadResponseSchema)
def load_model(load_request):
    """Load a model instance (seed 000). With ``Accept: text/event-stream`` the answer is SSE:
    ``progress`` events, then ``loaded`` (the JSON body) or ``error``."""
    messages = engine().supervisor.load(load_request)
    # The first message comes once the supervisor has validated the request: an unknown model,
    # a taken identifier or a bad config still gets its own HTTP status, even for SSE.
    messages = itertools.chain([next(messages)], messages)
    if request.accept_mimetypes.best == MEDIA_TYPE:
        return event_stream(map(_load_event, messages), error_event="error")
    for message in messages:
        if "result" in message:
            return message["result"]


def _load_event(message: dict) -> tuple[str, bytes]:
    if "result" in message:
        return "loaded", json.dumps(_LOADED.dump(message["result"])).encode()
    return "progress", json.dumps({"progress": message["progress"]}).encode()


@blp.route("/unload", methods=["POST"])
@blp.arguments(UnloadRequestSchema)
@blp.response(200, UnloadResponseSchema)
def unload_model(unload_request):
    """Unload an instance, after the request in flight on it (bounded)."""
    return engine().supervisor.unload(unload_request["instance_id"])
