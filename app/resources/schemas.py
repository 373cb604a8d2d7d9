"""Shapes of memory in the API: a load's estimate by part (``estimate_only`` loads, instance
rows), what a process uses, and ``GET /api/v1/resources``. The engine writes them
(`workers.estimate.Estimate.to_json`, `workers.memory.ProcessUse.to_json`,
`workers.supervisor.resources.report`); these schemas document them and dump them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from workers.listing import InstanceConfigSchema

MODES = ("cpu", "gpu")
GUARDRAILS = ("strict", "evict", "off")


def _bytes(description: str | None = None, required: bool = True, **kwargs):
    metadata = {"description": description} if description else {}
    return fields.Integer(required=required, validate=validate.Range(min=0), metadata=metadata,
                          **kwargs)


class EstimatePartsSchema(Schema):
    weights_bytes = _bytes("the tensor data (from the tensor table)")
    kv_cache_bytes = _bytes("n_ctx × layers × (K + V widths) × bytes per element")
    compute_bytes = _bytes("llama.cpp's compute buffers for one micro-batch")
    overhead_bytes = _bytes("the instance process (and a CUDA context per GPU)")


class EstimateSchema(EstimatePartsSchema):
    total_bytes = _bytes()
    ram_bytes = _bytes("of the total, in RAM")
    gpu_bytes = _bytes("of the total, on the GPUs (0 in CPU mode)")
    on_gpu = fields.Nested(EstimatePartsSchema, required=True,
                           metadata={"description": "each part's share on the GPUs"})


class AvailableSchema(Schema):
    ram_bytes = _bytes("what a load may take from RAM now")
    gpu_bytes = _bytes("what a load may take from the GPUs now (GPU mode only)",
                       required=False)


class LoadEstimateSchema(Schema):
    """The answer of a load with ``estimate_only: true``: nothing is loaded."""

    model_key = fields.String(required=True)
    variant = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["llm", "embedding"]))
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    estimate = fields.Nested(EstimateSchema, required=True)
    available = fields.Nested(AvailableSchema, required=True)
    fits = fields.Boolean(required=True, metadata={
        "description": "it fits now, without unloading anything"})
    guardrail = fields.String(required=True, validate=validate.OneOf(GUARDRAILS))
    passes_guardrail = fields.Boolean(required=True, metadata={
        "description": "a load now would go ahead: it fits, or the guardrail evicts idle "
                       "instances enough, or it is off"})
    load_config = fields.Nested(InstanceConfigSchema, required=True)


class ProcessUseSchema(Schema):
    ram_bytes = _bytes("resident (RSS)")
    gpu_bytes = _bytes("on the GPUs (NVML)")
    total_bytes = _bytes()
    ram_peak_bytes = _bytes("the highest RSS so far")


class GpuSchema(Schema):
    index = fields.Integer(required=True)
    name = fields.String(required=True)
    total_bytes = _bytes()
    free_bytes = _bytes()
    used_bytes = _bytes()
    driver_reserved_bytes = _bytes("the driver's own reserve (NVML's v2 memory info)")


class RamSchema(Schema):
    total_bytes = _bytes()
    available_bytes = _bytes("MemAvailable")


class PoolSchema(Schema):
    pool = fields.String(required=True, validate=validate.OneOf(["ram", "gpu"]))
    total_bytes = _bytes()
    free_bytes = _bytes("free by the reading (RAM: less the models mapped by instances)")
    reserved_bytes = _bytes("what instances will still take: loads in flight, buffers not "
                            "touched yet")
    instances_bytes = _bytes("what instances account for against the limit")
    limit_bytes = _bytes("LMHOST_MEMORY_LIMIT, on the pool models live in", allow_none=True)
    available_bytes = _bytes("what a new load may take")


class InstanceMemorySchema(Schema):
    id = fields.String(required=True)
    model_key = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(["loading", "loaded",
                                                                  "unloading"]))
    jit = fields.Boolean(required=True)
    estimate = fields.Nested(EstimateSchema, required=True, allow_none=True)
    measured = fields.Nested(ProcessUseSchema, required=True, allow_none=True, metadata={
        "description": "right after its load (CPU: compute buffers are resident only once "
                       "used)"})
    in_use = fields.Nested(ProcessUseSchema, required=True, allow_none=True,
                           metadata={"description": "now"})
    reserved_bytes = _bytes()


class ResourcesSchema(Schema):
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    cpu_mode_reason = fields.String(required=True, allow_none=True)
    guardrail = fields.String(required=True, validate=validate.OneOf(GUARDRAILS))
    evict_explicit = fields.Boolean(required=True)
    limit_bytes = _bytes("LMHOST_MEMORY_LIMIT", allow_none=True)
    gpus = fields.List(fields.Nested(GpuSchema), required=True)
    ram = fields.Nested(RamSchema, required=True)
    pools = fields.List(fields.Nested(PoolSchema), required=True)
    instances = fields.List(fields.Nested(InstanceMemorySchema), required=True)
