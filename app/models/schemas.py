"""Marshmallow schemas of the models resource. The listing's shape (seed 004) is defined once,
next to the listing, in `workers.listing`; load and unload (seed 000) are defined here."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from app.fields import Alternatives, StrictBoolean, StrictInteger
from app.resources.schemas import LoadEstimateSchema
from workers.listing import InstanceConfigSchema, ModelListSchema

__all__ = ["GpuOffload", "LoadEstimateSchema", "LoadProgressSchema", "LoadRequestSchema",
           "LoadResponseSchema", "ModelListSchema", "UnloadRequestSchema", "UnloadResponseSchema"]

LOAD_EXAMPLE = {"model": "openai/gpt-oss-20b", "context_length": 16384, "flash_attention": True,
                "echo_load_config": True}  # seed 000's own example
UNLOAD_EXAMPLE = {"instance_id": "openai/gpt-oss-20b"}


class GpuOffload(Alternatives):
    """A share of layers on the GPU: a number 0..1, or "max" / "off"."""

    def alternatives(self) -> list[dict]:
        return [{"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "enum": ["max", "off"]}]

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("max", "off"):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValidationError('must be a number from 0 to 1, "max" or "off"')
        return float(value)


class FullMatch(validate.Regexp):
    """A regular expression the whole value must match: Python's ``$`` also matches before a
    trailing newline, JSON Schema's (the documented pattern) does not."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class LoadRequestSchema(Schema):
    """Seed 000's fields plus API.md's extensions; unknown keys are rejected (400)."""

    class Meta:
        unknown = RAISE

    model = fields.String(required=True, validate=validate.Length(min=1, max=512))
    context_length = StrictInteger(validate=validate.Range(min=1))
    eval_batch_size = StrictInteger(validate=validate.Range(min=1, max=1 << 20))
    flash_attention = StrictBoolean()
    num_experts = StrictInteger(validate=validate.Range(min=1))
    offload_kv_cache_to_gpu = StrictBoolean()
    echo_load_config = StrictBoolean()
    identifier = fields.String(validate=[validate.Length(min=1, max=256),
                                         FullMatch(r"^[^\x00-\x1f\x7f]+$",
                                                   error="must not contain control characters")])
    ttl = StrictInteger(validate=validate.Range(min=1))
    reuse_existing = StrictBoolean()
    gpu_offload = GpuOffload()
    seed = StrictInteger(validate=validate.Range(min=0, max=2**32 - 1))
    estimate_only = StrictBoolean(metadata={
        "description": "answer with the memory estimate and whether it fits now; load nothing"})


class LoadResponseSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["llm", "embedding"]))
    model_instance_id = fields.String(required=True)
    instance_id = fields.String(required=True, metadata={"description": "LM Studio's newer name"})
    load_time_seconds = fields.Float(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["loaded"]))
    load_config = fields.Nested(InstanceConfigSchema,
                                metadata={"description": "with `echo_load_config`"})
    reused = fields.Boolean(required=True, metadata={
        "description": "extension: get-or-load returned an existing instance"})


class LoadProgressSchema(Schema):
    progress = fields.Float(required=True, validate=validate.Range(min=0, max=1))


class UnloadRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    instance_id = fields.String(required=True, validate=validate.Length(min=1, max=512))


class UnloadResponseSchema(Schema):
    instance_id = fields.String(required=True)
