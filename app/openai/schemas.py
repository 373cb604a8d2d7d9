"""Request schemas of the OpenAI-compatible endpoints. Unknown keys are 400s (API.md); the
OpenAI fields lmhost does not implement are not silently accepted."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.fields import StrictBoolean, StrictFloat, StrictInteger, StringOrList


class Content(fields.Field):
    """A message's content: a string, or OpenAI's list of text parts (joined)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                           and isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
        raise ValidationError("must be a string or a list of text parts "
                              '({"type": "text", "text": ...}); this server runs text models')


class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    role = fields.String(required=True,
                         validate=validate.OneOf(["system", "developer", "user", "assistant", "tool"]))
    content = Content(allow_none=True)
    name = fields.String()
    tool_call_id = fields.String()
    tool_calls = fields.List(fields.Dict())


class SamplingSchema(Schema):
    class Meta:
        unknown = RAISE

    model = fields.String(required=True, validate=validate.Length(min=1, max=512))
    max_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    temperature = StrictFloat(validate=validate.Range(min=0, max=2))
    top_p = StrictFloat(validate=validate.Range(min=0, max=1))
    stop = StringOrList(max_items=4, allow_none=True)
    seed = StrictInteger(allow_none=True)
    presence_penalty = StrictFloat(validate=validate.Range(min=-2, max=2))
    frequency_penalty = StrictFloat(validate=validate.Range(min=-2, max=2))
    stream = StrictBoolean()
    n = StrictInteger(validate=validate.Equal(1, error="only n=1 is supported"))
    user = fields.String()
    ttl = StrictInteger(validate=validate.Range(min=1),
                        metadata={"description": "extension: TTL if this request loads the model"})


class ChatRequestSchema(SamplingSchema):
    messages = fields.List(fields.Nested(MessageSchema), required=True,
                           validate=validate.Length(min=1))
    max_completion_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))


class CompletionRequestSchema(SamplingSchema):
    prompt = StringOrList(required=True)
    echo = StrictBoolean()


class EmbeddingRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    model = fields.String(required=True, validate=validate.Length(min=1, max=512))
    input = StringOrList(required=True)
    encoding_format = fields.String(validate=validate.OneOf(["float", "base64"]))
    user = fields.String()
    ttl = StrictInteger(validate=validate.Range(min=1))

    @validates_schema
    def no_empty_strings(self, data, **kwargs):
        texts = [data["input"]] if isinstance(data.get("input"), str) else data.get("input", [])
        if any(not t for t in texts):
            raise ValidationError("must not contain empty strings", "input")
