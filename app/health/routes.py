from __future__ import annotations

from marshmallow import Schema, fields

from app.errors import Blueprint

blp = Blueprint("health", __name__, description="Health checks for monitoring")


class HealthSchema(Schema):
    status = fields.String()


@blp.route("/healthz")
@blp.response(200, HealthSchema)
def healthz():
    """200 while this HTTP worker runs."""
    return {"status": "ok"}
