from __future__ import annotations

from flask import Response, current_app
from marshmallow import Schema, fields, validate

from app.api import Blueprint
from app.auth import auth_of
from app.errors import error_response
from app.extensions import engine
from workers import readiness

blp = Blueprint("health", __name__, description="Health checks and metrics for monitoring "
                                                "(no token needed)")

METRICS_MEDIA_TYPE = "text/plain"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready"]))
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "each check's name and `ok`"})


@blp.route("/healthz")
@blp.response(200, HealthSchema)
@blp.errors()
def healthz():
    """200 while this HTTP worker runs."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.response(200, ReadySchema)
@blp.errors("unavailable")
def readyz():
    """200 when the supervisor answers and the state and models dirs are usable; else 503
    `unavailable`, whose message names each failed check (`param`: the first one)."""
    checks = readiness.check_all(engine().settings)
    problem = auth_of(current_app).problem
    if problem:
        checks.append(readiness.Check("api_tokens", problem))
    failed = [c for c in checks if not c.ok]
    if failed:
        return error_response("unavailable", "not ready: " + "; ".join(
            f"{c.name}: {c.problem}" for c in failed), param=failed[0].name, code="not_ready")
    return {"status": "ready", "checks": {c.name: "ok" for c in checks}}


@blp.route("/metrics")
@blp.response(200, {"type": "string"}, content_type=METRICS_MEDIA_TYPE,
              description="Prometheus' text exposition format; every series is named "
                          "`lmhost_…` (README \"Metrics\")")
@blp.errors()
def metrics():
    """Prometheus metrics of the whole service (every HTTP worker, the supervisor)."""
    return Response(current_app.extensions["lmhost_metrics"].exposition(),
                    content_type=METRICS_CONTENT_TYPE)
