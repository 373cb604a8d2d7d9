"""Schemas of ``POST /api/v1/chat`` (LM Studio's docs ``chat.md``, ``streaming-events.md``).

Requests: the documented fields lmhost implements, unknown keys refused (``integrations``,
LM Studio's plugins and MCP servers, are not served). Answers and every streamed event as LM
Studio documents them.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from app.errors import ErrorSchema
from app.fields import Alternatives, StrictBoolean, StrictFloat, StrictInteger
from workers.errors import ErrorBodySchema

CHAT_EXAMPLE = {"model": "openai/gpt-oss-20b", "input": "Hello", "max_output_tokens": 32}


class Input(Alternatives):
    """A string, or a list of items: text (``{"type": "message" | "text", "content"}``) or an
    image (``{"type": "image", "data_url"}``, refused: lmhost serves text models)."""

    def alternatives(self) -> list[dict]:
        text = {"type": "object", "additionalProperties": False, "required": ["type", "content"],
                "properties": {"type": {"enum": ["message", "text"]},
                               "content": {"type": "string"}}}
        image = {"type": "object", "additionalProperties": False, "required": ["type", "data_url"],
                 "properties": {"type": {"const": "image"}, "data_url": {"type": "string"}}}
        return [{"type": "string"},
                {"type": "array", "minItems": 1, "items": {"oneOf": [text, image]}}]

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(_item_ok(item) for item in value):
            return value
        raise ValidationError('must be a string or a non-empty list of {"type": "message", '
                              '"content": ...} (or {"type": "image", "data_url": ...}) items')


def _item_ok(item) -> bool:
    if not isinstance(item, dict):
        return False
    if item.get("type") in ("message", "text"):
        return set(item) == {"type", "content"} and isinstance(item["content"], str)
    return (item.get("type") == "image" and set(item) == {"type", "data_url"}
            and isinstance(item["data_url"], str))


class NativeChatRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    model = fields.String(required=True, validate=validate.Length(min=1, max=512))
    input = Input(required=True)
    system_prompt = fields.String()
    stream = StrictBoolean()
    temperature = StrictFloat(validate=validate.Range(min=0, max=2))
    top_p = StrictFloat(validate=validate.Range(min=0, max=1))
    top_k = StrictInteger(validate=validate.Range(min=0))
    min_p = StrictFloat(validate=validate.Range(min=0, max=1))
    repeat_penalty = StrictFloat(validate=validate.Range(min=0, max=10))
    max_output_tokens = StrictInteger(validate=validate.Range(min=1))
    reasoning = fields.String(validate=validate.OneOf(["off", "low", "medium", "high", "on"]),
                              metadata={"description": "only `off` for models without reasoning "
                                                       "(400 otherwise)"})
    context_length = StrictInteger(validate=validate.Range(min=1), metadata={
        "description": "the context length if this request loads the model"})
    store = StrictBoolean(metadata={"description": "store the chat (default true): the answer "
                                                   "has a `response_id`"})
    previous_response_id = fields.String(validate=validate.Regexp(r"^resp_"), metadata={
        "description": "continue a stored chat"})
    ttl = StrictInteger(validate=validate.Range(min=1),
                        metadata={"description": "extension: TTL if this request loads the model"})


class NativeChatOutputSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["message"]))
    content = fields.String(required=True)


class NativeChatStatsSchema(Schema):
    input_tokens = fields.Integer(required=True)
    total_output_tokens = fields.Integer(required=True)
    reasoning_output_tokens = fields.Integer(required=True)
    tokens_per_second = fields.Float(required=True)
    time_to_first_token_seconds = fields.Float(required=True)
    model_load_time_seconds = fields.Float(metadata={
        "description": "present when this request loaded the model"})


class NativeChatResponseSchema(Schema):
    model_instance_id = fields.String(required=True)
    output = fields.List(fields.Nested(NativeChatOutputSchema), required=True)
    stats = fields.Nested(NativeChatStatsSchema, required=True)
    response_id = fields.String(metadata={"description": "when `store` is true"})


# -- streamed events: each event's data carries its name as `type` --------------------------

def _event(name: str, **more) -> type[Schema]:
    attrs = {"type": fields.String(required=True, validate=validate.OneOf([name])), **more}
    return type(f"Event_{name.replace('.', '_')}", (Schema,), attrs)


def _progress():
    return fields.Float(required=True, validate=validate.Range(min=0, max=1))


EVENTS = (
    ("chat.start", _event("chat.start", model_instance_id=fields.String(required=True))),
    ("model_load.start", _event("model_load.start", model_instance_id=fields.String(required=True))),
    ("model_load.progress", _event("model_load.progress", progress=_progress(),
                                   model_instance_id=fields.String(required=True))),
    ("model_load.end", _event("model_load.end", model_instance_id=fields.String(required=True),
                              load_time_seconds=fields.Float(required=True))),
    ("prompt_processing.start", _event("prompt_processing.start")),
    ("prompt_processing.progress", _event("prompt_processing.progress", progress=_progress())),
    ("prompt_processing.end", _event("prompt_processing.end")),
    ("message.start", _event("message.start")),
    ("message.delta", _event("message.delta", content=fields.String(required=True))),
    ("message.end", _event("message.end")),
    ("error", _event("error", error=fields.Nested(ErrorBodySchema, required=True))),
    ("chat.end", _event("chat.end", result=fields.Nested(NativeChatResponseSchema, required=True))),
)

__all__ = ["CHAT_EXAMPLE", "NativeChatRequestSchema", "NativeChatResponseSchema", "EVENTS", "ErrorSchema"]
