"""The resources resource: memory per GPU (or RAM), per instance, and admission's view of it."""

from app.resources.routes import blp

__all__ = ["blp"]
