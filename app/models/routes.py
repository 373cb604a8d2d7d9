from __future__ import annotations

import itertools
import json

from flask import Response, request, stream_with_context

from app.errors import Blueprint
from app.extensions import engine
from app.models.schemas import (LoadRequestSchema, LoadResponseSchema, ModelListSchema,
                                UnloadRequestSchema, UnloadResponseSchema)
from workers.errors import LmhostError, to_wire

blp = Blueprint("models", __name__, url_prefix="/api/v1/models",
                description="Models on disk and their loaded instances (LM Studio REST v1)")


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
    events = engine().supervisor.load(load_request)
    # The first message comes once the supervisor has validated the request: an unknown model,
    # a taken identifier or a bad config still gets its own HTTP status, even for SSE.
    first = next(events)
    if request.accept_mimetypes.best == "text/event-stream":
        return Response(stream_with_context(_sse(itertools.chain([first], events))),
                        mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    for message in itertools.chain([first], events):
        if "result" in message:
            return message["result"]


def _sse(events):
    try:
        for message in events:
            if "result" in message:
                yield _sse_event("loaded", LoadResponseSchema().dump(message["result"]))
            else:
                yield _sse_event("progress", {"progress": message["progress"]})
    except LmhostError as error:
        yield _sse_event("error", {"error": to_wire(error)})


def _sse_event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@blp.route("/unload", methods=["POST"])
@blp.arguments(UnloadRequestSchema)
@blp.response(200, UnloadResponseSchema)
def unload_model(unload_request):
    """Unload an instance, after the request in flight on it (bounded)."""
    return engine().supervisor.unload(unload_request["instance_id"])
