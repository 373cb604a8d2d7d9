"""Schemas of the OpenAI-compatible endpoints.

Requests: unknown keys are 400s (API.md); the OpenAI fields lmhost does not implement are not
silently accepted. Answers: the objects llama.cpp makes in OpenAI's format, documented as open
objects (OpenAI's clients ignore fields they do not know, and OpenAI adds fields over time).
"""

from __future__ import annotations

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate

from app.fields import Alternatives, StrictBoolean, StrictFloat, StrictInteger, StringOrList

CHAT_EXAMPLE = {"model": "openai/gpt-oss-20b", "max_tokens": 32,
                "messages": [{"role": "user", "content": "Hello"}]}
COMPLETION_EXAMPLE = {"model": "openai/gpt-oss-20b", "prompt": "Once upon a time",
                      "max_tokens": 32}
EMBEDDING_EXAMPLE = {"model": "nomic-ai/nomic-embed-text-v1.5", "input": ["hello", "world"]}

# -- requests ----------------------------------------------------------------------------------


class Content(Alternatives):
    """A message's content: a string, or OpenAI's list of text parts (joined)."""

    def alternatives(self) -> list[dict]:
        part = {"type": "object", "required": ["type", "text"],
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
        return [{"type": "string"}, {"type": "array", "items": part}]

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
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
    input = StringOrList(required=True, non_empty=True)
    encoding_format = fields.String(validate=validate.OneOf(["float", "base64"]))
    user = fields.String()
    ttl = StrictInteger(validate=validate.Range(min=1))


# -- answers -----------------------------------------------------------------------------------


class OpenObject(Schema):
    class Meta:
        unknown = INCLUDE  # documented as additionalProperties: true


def _object(name: str):
    return fields.String(required=True, validate=validate.OneOf([name]))


def _finish_reason(**kwargs):
    return fields.String(required=True, validate=validate.OneOf(["stop", "length"]), **kwargs)


class AnswerSchema(OpenObject):
    """What every answer and chunk carries."""

    id = fields.String(required=True)
    created = fields.Integer(required=True)
    model = fields.String(required=True, metadata={"description": "the request's `model`"})


class UsageSchema(OpenObject):
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)


class AssistantMessageSchema(OpenObject):
    role = fields.String(required=True, validate=validate.OneOf(["assistant"]))
    content = fields.String(required=True, allow_none=True)


class ChatChoiceSchema(OpenObject):
    index = fields.Integer(required=True)
    message = fields.Nested(AssistantMessageSchema, required=True)
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason()


class ChatCompletionSchema(AnswerSchema):
    object = _object("chat.completion")
    choices = fields.List(fields.Nested(ChatChoiceSchema), required=True)
    usage = fields.Nested(UsageSchema, required=True)


class DeltaSchema(OpenObject):
    role = fields.String(validate=validate.OneOf(["assistant"]))
    content = fields.String(allow_none=True)


class ChatChunkChoiceSchema(OpenObject):
    index = fields.Integer(required=True)
    delta = fields.Nested(DeltaSchema, required=True)
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason(allow_none=True)


class ChatCompletionChunkSchema(AnswerSchema):
    object = _object("chat.completion.chunk")
    choices = fields.List(fields.Nested(ChatChunkChoiceSchema), required=True)


class CompletionChoiceSchema(OpenObject):
    text = fields.String(required=True)
    index = fields.Integer(required=True, metadata={"description": "the prompt's index"})
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason(allow_none=True, metadata={
        "description": "null until a stream's last chunk"})


class CompletionChunkSchema(AnswerSchema):
    object = _object("text_completion")
    choices = fields.List(fields.Nested(CompletionChoiceSchema), required=True)


class CompletionSchema(CompletionChunkSchema):
    usage = fields.Nested(UsageSchema, required=True, metadata={"description": "summed over prompts"})


class Vector(Alternatives):
    def alternatives(self) -> list[dict]:
        return [{"type": "array", "items": {"type": "number"}},
                {"type": "string", "description": "base64 of little-endian float32"}]


class EmbeddingSchema(OpenObject):
    object = _object("embedding")
    embedding = Vector(required=True)
    index = fields.Integer(required=True)


class EmbeddingUsageSchema(OpenObject):
    prompt_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)


class EmbeddingListSchema(OpenObject):
    object = _object("list")
    data = fields.List(fields.Nested(EmbeddingSchema), required=True)
    model = fields.String(required=True)
    usage = fields.Nested(EmbeddingUsageSchema, required=True)


class OpenAIModelSchema(OpenObject):
    id = fields.String(required=True, metadata={"description": "an instance id or a model key"})
    object = _object("model")
    owned_by = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["llm", "embedding"]),
                         metadata={"description": "extension"})


class OpenAIModelListSchema(OpenObject):
    object = _object("list")
    data = fields.List(fields.Nested(OpenAIModelSchema), required=True)
