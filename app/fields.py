"""Strict marshmallow fields: a request value of the wrong JSON type is a 400, never coerced.

Fields that accept more than one JSON type say so in the OpenAPI document: each has a
`json_schema()` (a ``oneOf``), which `app.api` puts in place of what apispec would guess.
"""

from __future__ import annotations

import math

from marshmallow import ValidationError, fields


class StrictInteger(fields.Integer):
    """An integer that is really one: 16384 (or 16384.0: JSON, and JSON Schema's "integer",
    do not tell them apart), not 16384.5, "16384" or true."""

    def _validated(self, value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictFloat(fields.Float):
    """A finite JSON number (int or float), not a string or a boolean."""

    def _validated(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictBoolean(fields.Boolean):
    """true or false, not 1, 0, 1.0 or "true" (1 == True in Python, so a set of truthy values
    would let the numbers through)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Alternatives(fields.Field):
    """A field that takes several JSON types; `json_schema()` documents them."""

    def alternatives(self) -> list[dict]:
        raise NotImplementedError

    def json_schema(self) -> dict:
        alternatives = self.alternatives()
        if self.allow_none:
            alternatives.append({"type": "null"})
        return {"oneOf": alternatives}


class StringOrList(Alternatives):
    """A string, or a non-empty list of strings (OpenAI's `stop`, `prompt`, `input`).
    `max_items` bounds the list; `non_empty` refuses empty strings."""

    def __init__(self, max_items: int | None = None, non_empty: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items
        self.non_empty = non_empty

    def alternatives(self) -> list[dict]:
        string = {"type": "string", "minLength": 1} if self.non_empty else {"type": "string"}
        array = {"type": "array", "items": string, "minItems": 1}
        if self.max_items is not None:
            array["maxItems"] = self.max_items
        return [string, array]

    def _deserialize(self, value, attr, data, **kwargs):
        if not (isinstance(value, str) or (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
                and (self.max_items is None or len(value) <= self.max_items))):
            limit = f" of at most {self.max_items}" if self.max_items else ""
            raise ValidationError(f"must be a string or a non-empty list{limit} of strings")
        if self.non_empty and ("" in value if isinstance(value, list) else not value):
            raise ValidationError("must not contain empty strings")
        return value
