"""The one error shape of API.md, for every error the app can produce.

`{"error": {"type", "message", "code", "param"}}` with the status the contract gives the type.
Every HTTPException (aborts, validation errors, unknown routes and methods, and unhandled
exceptions, which Flask turns into InternalServerError) goes through `handle_http_exception`;
engine errors (`workers.errors.LmhostError`) through `handle_engine_error` (`app.api.Api`
registers both). No path leads to an HTML page or a stack trace. `ErrorSchema` documents the
shape in the OpenAPI document.
"""

from __future__ import annotations

import logging
import uuid

from flask import has_request_context, jsonify, request
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import WebsocketMismatch

from workers.errors import ErrorBodySchema, LmhostError

log = logging.getLogger(__name__)

# API.md's table: type -> (status, when). The OpenAPI document quotes the "when".
ERRORS = {
    "invalid_request": (400, "malformed JSON, a wrong type, an out-of-range value or an unknown "
                             "key (`param` names the field), or a request the model cannot serve"),
    "unauthorized": (401, "no API token, or a wrong one"),
    "forbidden": (403, "the token's scope does not allow this"),
    "model_not_found": (404, "no model matches the reference"),
    "instance_not_found": (404, "no instance has that id"),
    "not_found": (404, "unknown route"),
    "method_not_allowed": (405, "the route does not take this method"),
    "identifier_conflict": (409, "an instance with that identifier exists or is loading"),
    "payload_too_large": (413, "the body is over the configured limit"),
    "model_load_failed": (422, "llama.cpp could not load the file; `message` gives its reason"),
    "overloaded": (429, "the instance's queue is full; retry after `Retry-After` seconds"),
    "internal_error": (500, "a bug; `message` carries a request id that the log has too"),
    "insufficient_memory": (503, "the load does not fit in memory"),
    "unavailable": (503, "the supervisor or the instance cannot be reached; retry shortly"),
}
STATUS_BY_TYPE = {type_: status for type_, (status, _) in ERRORS.items()}

_TYPE_BY_STATUS = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "invalid_request",
    422: "invalid_request", 429: "overloaded", 503: "unavailable",
}


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


def error_response(type_: str, message: str, *, param=None, code=None, status=None, headers=None):
    body = {"error": {"type": type_, "message": message, "code": code, "param": param}}
    response = jsonify(body)
    response.status_code = status or STATUS_BY_TYPE.get(type_, 500)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def first_problem(messages, path=()):
    """(dotted field path, message) of the first validation problem in webargs' nested dict,
    which looks like {"json": {"context_length": ["Not a valid integer."]}}."""
    if isinstance(messages, dict):
        for key in sorted(messages, key=str):
            found = first_problem(messages[key], path + (str(key),))
            if found:
                return found
        return None
    if isinstance(messages, (list, tuple)) and messages:
        if all(isinstance(m, str) for m in messages):
            return ".".join(path), " ".join(messages)
        return first_problem(messages[0], path)
    return None


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    if status >= 500 and status not in _TYPE_BY_STATUS:
        request_id = (has_request_context() and request.environ.get("lmhost.request_id")
                      or uuid.uuid4().hex[:12])  # the request log's id (app.requestlog)
        cause = getattr(error, "original_exception", None) or error
        log.error("internal error, request id %s", request_id, exc_info=cause)
        return error_response("internal_error",
                              f"internal error (request id {request_id})", status=500)
    data = getattr(error, "data", None) or {}
    problem = first_problem(data.get("messages"))
    if problem:
        location_and_field, message = problem
        # "json.context_length" -> param "context_length"; a body-level problem has none.
        field = location_and_field.partition(".")[2] or None
        if field == "_schema":
            field = None
        text = f"{field}: {message}" if field else message
        return error_response("invalid_request", text, param=field, status=400)
    if isinstance(error, WebsocketMismatch):
        return error_response("invalid_request", "this path is a websocket endpoint of LM "
                              "Studio's SDK protocol: connect with a websocket upgrade",
                              status=400)
    if isinstance(error, RequestEntityTooLarge) and has_request_context():
        return error_response("payload_too_large", "the request body is over this server's "
                              f"limit of {request.max_content_length} bytes (LMHOST_MAX_BODY)")
    headers = dict(data.get("headers") or {})
    if getattr(error, "valid_methods", None):  # 405 says what is allowed
        headers["Allow"] = ", ".join(error.valid_methods)
    return error_response(_TYPE_BY_STATUS.get(status, "invalid_request"),
                          error.description or error.name, status=status, headers=headers)


def handle_engine_error(error: LmhostError):
    return error_response(error.type, error.message, param=error.param, code=error.code,
                          headers=getattr(error, "headers", None))
