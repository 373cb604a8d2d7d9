from __future__ import annotations

from app.errors import Blueprint
from app.extensions import engine
from app.models.schemas import ModelListSchema
from workers import listing

blp = Blueprint("models", __name__, url_prefix="/api/v1/models",
                description="Models on disk and their loaded instances (LM Studio REST v1)")


@blp.route("")
@blp.response(200, ModelListSchema)
def list_models():
    """List downloaded models with their loaded instances (seed 004)."""
    return {"models": listing.list_models(engine().catalog)}
