from __future__ import annotations

from app.errors import Blueprint
from app.extensions import engine
from app.models.schemas import ModelListSchema

blp = Blueprint("models", __name__, url_prefix="/api/v1/models",
                description="Models on disk and their loaded instances (LM Studio REST v1)")

_LIST_SCHEMA = ModelListSchema()


@blp.route("")
@blp.response(200, ModelListSchema)
def list_models():
    """List downloaded models with their loaded instances (seed 004)."""
    eng = engine()
    return eng.listing_body.response(eng.listing.rows(), _LIST_SCHEMA, lambda rows: {"models": rows})
