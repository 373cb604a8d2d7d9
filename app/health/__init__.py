"""Operations, for monitoring (no token needed): /healthz (liveness), /readyz (readiness:
`workers.readiness`), /metrics (Prometheus: `app.metrics`)."""

from app.health.routes import blp

__all__ = ["blp"]
