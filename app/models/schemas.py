"""Marshmallow schemas of the models resource: seed 004's listing, field for field.

Fields the seed marks "absent for embedding models" (architecture, capabilities, description,
and the LLM-only instance config) are left out of the output, not set to null.
"""

from __future__ import annotations

from marshmallow import Schema, fields, post_dump

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


class LoadedInstanceSchema(Schema):
    id = fields.String()
    config = fields.Nested(InstanceConfigSchema)
    status = fields.String(metadata={"description": "extension: 'loading' or 'loaded'"})


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

    @post_dump
    def drop_llm_only_fields(self, data, **kwargs):
        if data.get("type") == "embedding":
            for name in LLM_ONLY_FIELDS:
                data.pop(name, None)
        return data


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
