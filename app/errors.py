"""The one error shape of API.md, for every error the app can produce.

`{"error": {"type", "message", "code", "param"}}` with the status the contract gives the type.
flask-smorest routes every HTTPException (aborts, validation errors, unknown routes and
methods, and unhandled exceptions, which Flask turns into InternalServerError) through one
handler; `Api` below replaces that handler. Engine errors (`workers.errors.LmhostError`) get a
handler of their own. No path leads to an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
import uuid

import flask_smorest
from flask import jsonify
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from app.jsonbody import loads_lenient
from workers.errors import LmhostError

log = logging.getLogger(__name__)

STATUS_BY_TYPE = {
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "model_not_found": 404,
    "instance_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "identifier_conflict": 409,
    "payload_too_large": 413,
    "model_load_failed": 422,
    "overloaded": 429,
    "internal_error": 500,
    "insufficient_memory": 503,
    "unavailable": 503,
}

_TYPE_BY_STATUS = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "invalid_request",
    422: "invalid_request", 429: "overloaded", 503: "unavailable",
}


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


class Parser(FlaskParser):
    """webargs' parser, answering bad input with 400 (the contract) instead of 422, and reading
    JSON bodies as `app.jsonbody` does (a trailing comma is fine; so is a missing
    Content-Type header, which curl users often forget)."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        data = req.get_data(cache=True)
        if not data.strip():
            return core.missing
        return loads_lenient(data)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()


class Api(flask_smorest.Api):
    def _register_error_handlers(self):
        super()._register_error_handlers()
        self._app.register_error_handler(LmhostError, handle_engine_error)

    def handle_http_exception(self, error: HTTPException):
        status = error.code or 500
        if status >= 500 and status not in _TYPE_BY_STATUS:
            request_id = uuid.uuid4().hex[:12]
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
        headers = dict(data.get("headers") or {})
        if getattr(error, "valid_methods", None):  # 405 says what is allowed
            headers["Allow"] = ", ".join(error.valid_methods)
        return error_response(_TYPE_BY_STATUS.get(status, "invalid_request"),
                              error.description or error.name, status=status, headers=headers)


def handle_engine_error(error: LmhostError):
    return error_response(error.type, error.message, param=error.param, code=error.code,
                          headers=getattr(error, "headers", None))
