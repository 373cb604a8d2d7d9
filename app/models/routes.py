from __future__ import annotations

import itertools
import json

from flask import jsonify, request

from app.api import Blueprint
from app.errors import ErrorSchema
from app.extensions import engine
from app.models.schemas import (LOAD_EXAMPLE, UNLOAD_EXAMPLE, LoadEstimateSchema,
                                LoadProgressSchema, LoadRequestSchema, LoadResponseSchema,
                                ModelListSchema, UnloadRequestSchema, UnloadResponseSchema)
from app.sse import MEDIA_TYPE, event_stream

blp = Blueprint("models", __name__, url_prefix="/api/v1/models",
                description="Models on disk and their loaded instances (LM Studio REST v1)")

_LOADED = LoadResponseSchema()
_ESTIMATE = LoadEstimateSchema()


@blp.route("")
@blp.response(200, ModelListSchema)
@blp.errors()
def list_models():
    """List downloaded models with their loaded instances (seed 004)."""
    eng = engine()
    return eng.listing_body.response(eng.listing.rows(), lambda rows: {"models": rows})


@blp.route("/load", methods=["POST"])
@blp.arguments(LoadRequestSchema, example=LOAD_EXAMPLE)
@blp.response(200, {"oneOf": [LoadResponseSchema, LoadEstimateSchema]},
              description="The instance, loaded (`LoadResponse`); with `estimate_only: true`, "
                          "the memory estimate and whether it fits now, nothing loaded "
                          "(`LoadEstimate`, always JSON)")
@blp.streams("The instance, loaded (or found, with `reuse_existing`). With `Accept: "
             "text/event-stream`, server-sent events: `progress` (0.0 to 1.0, monotonic, ending "
             "at 1.0), then `loaded` with the JSON answer, or `error` with the error body",
             ("progress", LoadProgressSchema), ("loaded", LoadResponseSchema),
             ("error", ErrorSchema))
@blp.errors("invalid_request", "model_not_found", "identifier_conflict", "model_load_failed",
            "insufficient_memory", "unavailable")
def load_model(load_request):
    """Load a model instance (seed 000)."""
    if load_request.get("estimate_only"):
        return jsonify(_ESTIMATE.dump(engine().supervisor.estimate(load_request)))
    messages = engine().supervisor.load(load_request)
    # The first message comes once the supervisor has validated the request: an unknown model,
    # a taken identifier or a bad config still gets its own HTTP status, even for SSE.
    messages = itertools.chain([next(messages)], messages)
    if request.accept_mimetypes.best == MEDIA_TYPE:
        return event_stream(map(_load_event, messages), error_event="error")
    for message in messages:
        if "result" in message:
            return jsonify(_LOADED.dump(message["result"]))


def _load_event(message: dict) -> tuple[str, bytes]:
    if "result" in message:
        return "loaded", json.dumps(_LOADED.dump(message["result"])).encode()
    return "progress", json.dumps({"progress": message["progress"]}).encode()


@blp.route("/unload", methods=["POST"])
@blp.arguments(UnloadRequestSchema, example=UNLOAD_EXAMPLE)
@blp.response(200, UnloadResponseSchema)
@blp.errors("invalid_request", "instance_not_found", "unavailable")
def unload_model(unload_request):
    """Unload an instance, after the request in flight on it (bounded)."""
    return engine().supervisor.unload(unload_request["instance_id"])
