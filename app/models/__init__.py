"""The models resource: LM Studio's /api/v1/models (seed 004)."""

from app.models.routes import blp

__all__ = ["blp"]
