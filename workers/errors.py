"""Errors the engine raises, each with the `type` of API.md's error shape.

The engine knows nothing of HTTP: `app.errors` maps each type to its status code.
"""

from __future__ import annotations

from marshmallow import Schema, fields


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


class InstanceNotFound(LmhostError, LookupError):
    type = "instance_not_found"


class IdentifierConflict(LmhostError):
    type = "identifier_conflict"


class ModelLoadFailed(LmhostError):
    type = "model_load_failed"


class Unavailable(LmhostError):
    type = "unavailable"


class InsufficientMemory(LmhostError):
    """A load that does not fit in memory (503); the message gives needed vs available bytes."""

    type = "insufficient_memory"


class InstanceCrashed(LmhostError):
    """An instance died unasked (a signal, an unexpected exit) while loaded or serving; the
    message names the signal and quotes its stderr (`workers.crashes`). A 500: the engine,
    not the request, failed; code ``instance_crashed`` tells it from other internal errors."""

    type = "internal_error"


ERRORS_BY_TYPE = {cls.type: cls for cls in (
    LmhostError, InvalidRequest, ModelNotFound, InstanceNotFound, IdentifierConflict,
    ModelLoadFailed, Unavailable, InsufficientMemory)}


class ErrorBodySchema(Schema):
    """The body of API.md's error shape, as `to_wire` writes it."""

    type = fields.String(required=True)
    message = fields.String(required=True)
    code = fields.String(required=True, allow_none=True)
    param = fields.String(required=True, allow_none=True,
                          metadata={"description": "the request field at fault, if one is"})


def to_wire(error: LmhostError) -> dict:
    """The error as the body of API.md's error shape (for RPC replies and SSE events)."""
    return {"type": error.type, "message": error.message, "code": error.code, "param": error.param}


def from_wire(body: dict) -> LmhostError:
    cls = ERRORS_BY_TYPE.get(body.get("type"), LmhostError)
    error = cls(body.get("message") or "error", param=body.get("param"), code=body.get("code"))
    error.type = body.get("type") or cls.type
    return error


class Overloaded(LmhostError):
    """Every instance that could serve the request has a full queue (429, Retry-After)."""

    type = "overloaded"
    headers = {"Retry-After": "1"}


ERRORS_BY_TYPE[Overloaded.type] = Overloaded
