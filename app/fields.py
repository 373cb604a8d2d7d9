"""Strict marshmallow fields: a request value of the wrong JSON type is a 400, never coerced."""

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


class StringOrList(fields.Field):
    """A string, or a non-empty list of strings (OpenAI's `stop`, `prompt`, `input`)."""

    def __init__(self, max_items: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if (isinstance(value, list) and value and all(isinstance(v, str) for v in value)
                and (self.max_items is None or len(value) <= self.max_items)):
            return value
        limit = f" of at most {self.max_items}" if self.max_items else ""
        raise ValidationError(f"must be a string or a non-empty list{limit} of strings")
