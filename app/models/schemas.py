"""Marshmallow schemas of the models resource: seed 004's listing, field for field.

Fields the seed marks "absent for embedding models" (architecture, capabilities, description,
and the LLM-only instance config) are left out of the output, not set to null.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, post_dump, validate

from app.fields import StrictBoolean, StrictInteger

LLM_ONLY_FIELDS = ("architecture", "capabilities", "description")


class QuantizationSchema(Schema):
    name = fields.String(allow_none=True)
    bits_per_weight = fields.Integer(allow_none=True)


class CapabilitiesSchema(Schema):
    vision = fields.Boolean()
    trained_for_tool_use = fields.Boolean()


class InstanceConfigSchema(Schema):
    context_length = fields.Integer()
    eval_batch_size = fields.Integer()
    flash_attention = fields.Boolean()
    num_experts = fields.Integer()
    offload_kv_cache_to_gpu = fields.Boolean()
    seed = fields.Integer(metadata={"description": "extension: the sampling seed, when the load set one"})


class LoadedInstanceSchema(Schema):
    id = fields.String()
    config = fields.Nested(InstanceConfigSchema)
    status = fields.String(metadata={"description": "extension: \"loading\" or \"loaded\""})
    ttl_seconds = fields.Integer(metadata={"description": "extension: idle seconds before auto-unload"})


class ErrorBodySchema(Schema):
    type = fields.String()
    message = fields.String()
    code = fields.String(allow_none=True)
    param = fields.String(allow_none=True)


class FailureSchema(Schema):
    instance_id = fields.String()
    time = fields.String(metadata={"description": "when it ended, ISO 8601 UTC"})
    exit = fields.String(allow_none=True,
                         metadata={"description": 'how the process ended: "SIGILL (illegal '
                                                  'instruction)", "exit code 1"'})
    error = fields.Nested(ErrorBodySchema,
                          metadata={"description": "the error its load or request got"})


class ModelSchema(Schema):
    type = fields.String(metadata={"description": '"llm" | "embedding"'})
    publisher = fields.String()
    key = fields.String()
    display_name = fields.String()
    architecture = fields.String(allow_none=True)
    quantization = fields.Nested(QuantizationSchema, allow_none=True)
    size_bytes = fields.Integer()
    params_string = fields.String(allow_none=True)
    loaded_instances = fields.List(fields.Nested(LoadedInstanceSchema))
    max_context_length = fields.Integer(allow_none=True)
    format = fields.String(allow_none=True, metadata={"description": '"gguf" | "mlx" | null'})
    capabilities = fields.Nested(CapabilitiesSchema)
    description = fields.String(allow_none=True)
    variants = fields.List(fields.String(), metadata={"description": "extension: key@variant"})
    selected_variant = fields.String(metadata={"description": "extension: the default variant"})
    last_failure = fields.Nested(FailureSchema, metadata={
        "description": "extension: the latest instance of this model that failed to load, "
                       "crashed or exited unasked (absent when none did)"})

    @post_dump
    def drop_llm_only_fields(self, data, **kwargs):
        if data.get("type") == "embedding":
            for name in LLM_ONLY_FIELDS:
                data.pop(name, None)
        return data


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))


class GpuOffload(fields.Field):
    """A share of layers on the GPU: a number 0..1, or "max" / "off"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("max", "off"):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValidationError('must be a number from 0 to 1, "max" or "off"')
        return float(value)


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
                                         validate.Regexp(r"^[^\x00-\x1f\x7f]+$",
                                                         error="must not contain control characters")])
    ttl = StrictInteger(validate=validate.Range(min=1))
    reuse_existing = StrictBoolean()
    gpu_offload = GpuOffload()
    seed = StrictInteger(validate=validate.Range(min=0, max=2**32 - 1))


class LoadResponseSchema(Schema):
    type = fields.String()
    model_instance_id = fields.String()
    instance_id = fields.String()
    load_time_seconds = fields.Float()
    status = fields.String()
    load_config = fields.Nested(InstanceConfigSchema)
    reused = fields.Boolean(metadata={"description": "extension: get-or-load returned an existing instance"})


class UnloadRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    instance_id = fields.String(required=True, validate=validate.Length(min=1, max=512))


class UnloadResponseSchema(Schema):
    instance_id = fields.String()
