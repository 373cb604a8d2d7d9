"""flask-smorest, set up so that the served OpenAPI document (``/openapi.json``) is the contract.

- `Parser` reads bodies as users send them and answers bad input with 400 (not webargs' 422).
- `Blueprint.errors(*types)` documents a route's error answers in the one error shape, and
  `Blueprint.streams(...)` its text/event-stream answer, next to `@blp.response`.
- `Api` documents errors with `app.errors.ErrorSchema` (no catch-all "default" response: every
  route lists the statuses it answers), registers the error handlers, and extends apispec so
  that fields taking several JSON types (`app.fields.Alternatives`) are documented as ``oneOf``
  and marshmallow schemas inside an SSE event's ``contentSchema`` become references.
"""

from __future__ import annotations

import flask_smorest
from apispec.ext import marshmallow as apispec_marshmallow
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import errors, sse
from app.auth import AuthDocs
from app.fields import Alternatives
from app.jsonbody import loads_lenient
from workers.errors import LmhostError

OPENAPI_VERSION = "3.1.0"  # JSON Schema 2020-12: null as a type, const, contentSchema for SSE


class Parser(FlaskParser):
    """webargs' parser, answering bad input with 400 (the contract) instead of 422, and reading
    JSON bodies as `app.jsonbody` does (a trailing comma is fine; so is a missing
    Content-Type header, which curl users often forget)."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        data = req.get_data(cache=True)
        limit = req.max_content_length
        if req.content_length is None and limit and len(data) >= limit and req.input_stream.read(1):
            # werkzeug's LimitedStream cuts a chunked body at the limit without a word; a byte
            # left in the server's own stream (which ends where the body does) means it was
            # over: 413, not a 400 for cut JSON
            raise RequestEntityTooLarge()
        if not data.strip():
            return core.missing
        return loads_lenient(data)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()

    def arguments(self, schema, *args, **kwargs):
        """As flask-smorest's, with one schema instance for every request: given a schema
        class, webargs builds a new instance per request, and marshmallow deep-copies every
        declared field to do it (about 0.2 ms of each request's time to first token)."""
        return super().arguments(schema() if isinstance(schema, type) else schema,
                                 *args, **kwargs)

    def errors(self, *types: str):
        """Document the error answers of a route: one response per status, naming the error
        `type`s it carries and when. Any route may answer 500 `internal_error`."""
        by_status: dict[int, list[str]] = {}
        for type_ in (*types, "internal_error"):
            by_status.setdefault(errors.STATUS_BY_TYPE[type_], []).append(type_)

        def decorate(view):
            for status, types_ in sorted(by_status.items()):
                text = "; ".join(f"`{t}`: {errors.ERRORS[t][1]}" for t in types_)
                view = self.alt_response(status, schema=errors.ErrorSchema, description=text)(view)
            return view
        return decorate

    def streams(self, description: str, *events):
        """Document the text/event-stream form of a route's 200 answer; `events` as in
        `sse.events_schema`."""
        return self.alt_response(200, schema=sse.events_schema(*events), success=True,
                                 content_type=sse.MEDIA_TYPE, description=description)


def _alternatives(converter, field, **kwargs) -> dict:
    """apispec attribute function: a field taking several JSON types documents them itself."""
    return field.json_schema() if isinstance(field, Alternatives) else {}


class _Converter(apispec_marshmallow.OpenAPIConverter):
    def init_attribute_functions(self):
        super().init_attribute_functions()
        self.add_attribute_function(_alternatives)


class _Resolver(apispec_marshmallow.SchemaResolver):
    def resolve_schema_dict(self, schema):
        if isinstance(schema, dict) and "contentSchema" in schema:  # JSON in an SSE event's data
            schema["contentSchema"] = self.resolve_schema_dict(schema["contentSchema"])
        return super().resolve_schema_dict(schema)


class _MarshmallowPlugin(apispec_marshmallow.MarshmallowPlugin):
    Converter = _Converter
    Resolver = _Resolver


class Api(flask_smorest.Api):
    ERROR_SCHEMA = errors.ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # no catch-all: each route documents its statuses

    def __init__(self, app=None, **kwargs):
        spec_kwargs = kwargs.setdefault("spec_kwargs", {})
        spec_kwargs.setdefault("marshmallow_plugin", _MarshmallowPlugin())
        spec_kwargs.setdefault("extra_plugins", [AuthDocs()])  # security, from app.auth's table
        super().__init__(app, **kwargs)

    def _register_pagination_header(self):
        pass  # no route pages its answers: the document has no pagination schema

    def _register_error_handlers(self):
        self._app.register_error_handler(HTTPException, errors.handle_http_exception)
        self._app.register_error_handler(LmhostError, errors.handle_engine_error)
