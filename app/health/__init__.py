"""Liveness for monitoring: /healthz answers while the HTTP worker runs (no token needed)."""

from app.health.routes import blp

__all__ = ["blp"]
