"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from app.openai.routes import blp

__all__ = ["blp"]
