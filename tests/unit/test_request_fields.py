"""Request validation says exactly what the OpenAPI document says: the values JSON Schema
calls valid pass, the others are refused (each case here was a disagreement once)."""

from __future__ import annotations

import math

import pytest
from marshmallow import ValidationError

from app.models.schemas import LoadRequestSchema
from app.openai.schemas import CompletionRequestSchema, EmbeddingRequestSchema


def load(**body):
    return LoadRequestSchema().load({"model": "m", **body})


@pytest.mark.parametrize("value", [0, 1, 1.0, "true", None])
def test_a_boolean_is_true_or_false_only(value):
    # 0 == False in Python: a set of falsy values let 0 and 1 through as booleans
    with pytest.raises(ValidationError, match="reuse_existing"):
        load(reuse_existing=value)
    with pytest.raises(ValidationError, match="stream"):
        CompletionRequestSchema().load({"model": "m", "prompt": "x", "stream": value})
    assert load(reuse_existing=False)["reuse_existing"] is False


def test_an_integer_may_be_written_as_one_with_a_zero_fraction():
    # JSON Schema's "integer" (and JSON itself) does not tell 2048 from 2048.0
    assert load(context_length=2048.0)["context_length"] == 2048
    assert type(load(context_length=2048.0)["context_length"]) is int
    for bad in (2048.5, "2048", True, math.inf):
        with pytest.raises(ValidationError, match="context_length"):
            load(context_length=bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_number_is_finite(value):  # Python's json reads NaN and Infinity; JSON has neither
    with pytest.raises(ValidationError, match="temperature"):
        CompletionRequestSchema().load({"model": "m", "prompt": "x", "temperature": value})


@pytest.mark.parametrize("identifier", ["a\nb", "ab\n", "\tab", "a\x7f"])
def test_an_identifier_has_no_control_character_even_at_the_end(identifier):
    # Python's "$" matches before a trailing newline; the documented pattern's does not
    with pytest.raises(ValidationError, match="control characters"):
        load(identifier=identifier)
    assert load(identifier="my model:2")["identifier"] == "my model:2"


def test_string_or_list_fields_take_what_their_oneof_says():
    schema = EmbeddingRequestSchema()
    for good in ("a", ["a", "b"]):
        assert schema.load({"model": "m", "input": good})["input"] == good
    for bad, why in (("", "empty"), (["a", ""], "empty"), ([], "non-empty list"),
                     (None, "null"), ([1], "list")):
        with pytest.raises(ValidationError, match=why):
            schema.load({"model": "m", "input": bad})
    assert CompletionRequestSchema().load({"model": "m", "prompt": ""})["prompt"] == ""
    with pytest.raises(ValidationError, match="prompt"):
        CompletionRequestSchema().load({"model": "m", "prompt": None})
