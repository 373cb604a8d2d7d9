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
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOP_LOGPROBS = 20
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


class Strict(Schema):
    class Meta:
        unknown = RAISE


class FunctionCallSchema(Strict):
    name = fields.String(required=True)
    arguments = fields.String(required=True, metadata={"description": "JSON text"})


class ToolCallSchema(Strict):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["function"]))
    function = fields.Nested(FunctionCallSchema, required=True)


class MessageSchema(Strict):
    role = fields.String(required=True,
                         validate=validate.OneOf(["system", "developer", "user", "assistant", "tool"]))
    content = Content(allow_none=True)
    name = fields.String()
    tool_call_id = fields.String(metadata={"description": "role `tool`: the call it answers"})
    tool_calls = fields.List(fields.Nested(ToolCallSchema),
                             metadata={"description": "role `assistant`: the calls it made"})


class FunctionSchema(Strict):
    name = fields.String(required=True, validate=validate.Regexp(TOOL_NAME))
    description = fields.String()
    parameters = fields.Dict(metadata={"description": "JSON schema of the arguments"})
    strict = StrictBoolean(metadata={"description": "arguments always match `parameters` "
                                                    "(lmhost enforces it either way)"})


class ToolSchema(Strict):
    type = fields.String(required=True, validate=validate.OneOf(["function"]))
    function = fields.Nested(FunctionSchema, required=True)


def _object_schema(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


class ToolChoice(Alternatives):
    """``none``, ``auto``, ``required``, or ``{"type": "function", "function": {"name"}}``."""

    def alternatives(self) -> list[dict]:
        named = _object_schema({"type": {"const": "function"}, "function": _object_schema(
            {"name": {"type": "string"}}, ["name"])}, ["type", "function"])
        return [{"type": "string", "enum": ["none", "auto", "required"]}, named]

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if (isinstance(value, dict) and set(value) == {"type", "function"}
                and value["type"] == "function" and isinstance(value["function"], dict)
                and set(value["function"]) == {"name"}
                and isinstance(value["function"]["name"], str)):
            return value
        raise ValidationError('must be "none", "auto", "required" or {"type": "function", '
                              '"function": {"name": ...}}')


class ResponseFormat(Alternatives):
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema",
    "json_schema": {"name", "schema", "strict", "description"}}``."""

    SCHEMA_KEYS = {"name": str, "description": str, "schema": dict, "strict": bool}

    def alternatives(self) -> list[dict]:
        json_schema = _object_schema({
            "name": {"type": "string"}, "description": {"type": "string"},
            "schema": {"type": "object", "description": "the JSON schema the answer follows"},
            "strict": {"type": "boolean"}}, ["name"])
        return [_object_schema({"type": {"const": "text"}}, ["type"]),
                _object_schema({"type": {"const": "json_object"}}, ["type"]),
                _object_schema({"type": {"const": "json_schema"}, "json_schema": json_schema},
                               ["type", "json_schema"])]

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict) and value.get("type") in ("text", "json_object") and len(value) == 1:
            return value
        if isinstance(value, dict) and value.get("type") == "json_schema" and set(value) == {
                "type", "json_schema"} and isinstance(value["json_schema"], dict):
            spec = value["json_schema"]
            if "name" in spec and all(k in self.SCHEMA_KEYS and type(v) is self.SCHEMA_KEYS[k]
                                      for k, v in spec.items()):
                return value
        raise ValidationError('must be {"type": "text"}, {"type": "json_object"} or {"type": '
                              '"json_schema", "json_schema": {"name", "schema", "strict", '
                              '"description"}}')


class StreamOptionsSchema(Strict):
    include_usage = StrictBoolean(metadata={"description": "a last chunk with `usage` and no "
                                                           "choices"})


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
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    n = StrictInteger(validate=validate.Equal(1, error="only n=1 is supported"))
    user = fields.String()
    ttl = StrictInteger(validate=validate.Range(min=1),
                        metadata={"description": "extension: TTL if this request loads the model"})
    top_k = StrictInteger(validate=validate.Range(min=0),
                          metadata={"description": "extension: top-k sampling (0: off)"})
    min_p = StrictFloat(validate=validate.Range(min=0, max=1),
                        metadata={"description": "extension: min-p sampling"})
    repeat_penalty = StrictFloat(validate=validate.Range(min=0, max=10),
                                 metadata={"description": "extension: 1 is no penalty"})


class ChatRequestSchema(SamplingSchema):
    messages = fields.List(fields.Nested(MessageSchema), required=True,
                           validate=validate.Length(min=1))
    max_completion_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    response_format = ResponseFormat(metadata={
        "description": "`json_object` or `json_schema`: the answer is enforced by a grammar "
                       "made from the schema, so it always parses and validates"})
    tools = fields.List(fields.Nested(ToolSchema), validate=validate.Length(max=128))
    tool_choice = ToolChoice()
    parallel_tool_calls = StrictBoolean()
    logprobs = StrictBoolean()
    top_logprobs = StrictInteger(validate=validate.Range(min=0, max=MAX_TOP_LOGPROBS))


class CompletionRequestSchema(SamplingSchema):
    prompt = StringOrList(required=True)
    echo = StrictBoolean()
    logprobs = StrictInteger(allow_none=True, validate=validate.Range(min=0, max=MAX_TOP_LOGPROBS),
                             metadata={"description": "log-probabilities of the generated "
                                                      "tokens and this many alternatives"})


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
    return fields.String(required=True, validate=validate.OneOf(["stop", "length", "tool_calls"]),
                         **kwargs)


class AnswerSchema(OpenObject):
    """What every answer and chunk carries."""

    id = fields.String(required=True)
    created = fields.Integer(required=True)
    model = fields.String(required=True, metadata={"description": "the request's `model`"})


class UsageSchema(OpenObject):
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)


class AnswerToolCallSchema(OpenObject):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["function"]))
    function = fields.Nested(FunctionCallSchema, required=True)


class AssistantMessageSchema(OpenObject):
    role = fields.String(required=True, validate=validate.OneOf(["assistant"]))
    content = fields.String(required=True, allow_none=True,
                            metadata={"description": "null when the answer is tool calls"})
    tool_calls = fields.List(fields.Nested(AnswerToolCallSchema))


class ChatChoiceSchema(OpenObject):
    index = fields.Integer(required=True)
    message = fields.Nested(AssistantMessageSchema, required=True)
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason()


class ChatCompletionSchema(AnswerSchema):
    object = _object("chat.completion")
    choices = fields.List(fields.Nested(ChatChoiceSchema), required=True)
    usage = fields.Nested(UsageSchema, required=True)


class ToolCallDeltaSchema(AnswerToolCallSchema):
    index = fields.Integer(required=True)


class DeltaSchema(OpenObject):
    role = fields.String(validate=validate.OneOf(["assistant"]))
    content = fields.String(allow_none=True)
    tool_calls = fields.List(fields.Nested(ToolCallDeltaSchema))


class ChatChunkChoiceSchema(OpenObject):
    index = fields.Integer(required=True)
    delta = fields.Nested(DeltaSchema, required=True)
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason(allow_none=True)


class ChatCompletionChunkSchema(AnswerSchema):
    object = _object("chat.completion.chunk")
    choices = fields.List(fields.Nested(ChatChunkChoiceSchema), required=True,
                          metadata={"description": "empty in the usage chunk"})
    usage = fields.Nested(UsageSchema, metadata={
        "description": "the last chunk's, with `stream_options.include_usage`"})


class CompletionChoiceSchema(OpenObject):
    text = fields.String(required=True)
    index = fields.Integer(required=True, metadata={"description": "the prompt's index"})
    logprobs = fields.Dict(allow_none=True)
    finish_reason = _finish_reason(allow_none=True, metadata={
        "description": "null until a stream's last chunk"})


class CompletionChunkSchema(AnswerSchema):
    object = _object("text_completion")
    choices = fields.List(fields.Nested(CompletionChoiceSchema), required=True)
    usage = fields.Nested(UsageSchema, metadata={
        "description": "the last chunk's, with `stream_options.include_usage`"})


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
