from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.api import Blueprint

blp = Blueprint("health", __name__, description="Health checks for monitoring")


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


@blp.route("/healthz")
@blp.response(200, HealthSchema)
@blp.errors()
def healthz():
    """200 while this HTTP worker runs."""
    return {"status": "ok"}
