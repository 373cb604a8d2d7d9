"""LM Studio's native chat: POST /api/v1/chat."""

from app.chat.routes import blp

__all__ = ["blp"]
