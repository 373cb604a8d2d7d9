"""Errors the engine raises, each with the `type` of API.md's error shape.

The engine knows nothing of HTTP: `app.errors` maps each type to its status code.
"""

from __future__ import annotations


class LmhostError(Exception):
    type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(LmhostError):
    type = "invalid_request"


class ModelNotFound(LmhostError, LookupError):
    type = "model_not_found"
