"""SDK load config <-> the REST load request: one mapping each way.

The SDKs send a ``loadConfigStack`` of KV fields (``llm.load.contextLength``,
``llm.load.llama.acceleration.offloadRatio``, ...). `load_request` turns it, with the call's
model, identifier and TTL, into the very request dict ``POST /api/v1/models/load`` builds and
validates it with the same schema, so that the supervisor's `plan_load` sees one kind of
request whatever the wire. Every error names the SDK's key. `kv_fields` is the way back, for
``getLoadConfig``.

A key lmhost cannot honour is an error, never silently dropped — except those whose value
asks for what lmhost does anyway (``load.gpuSplitConfig`` with the default even split,
``*.autoFit: false``), which the official clients send along with other settings.
"""

from __future__ import annotations

from marshmallow import ValidationError

from app.errors import first_problem
from app.models.schemas import LoadRequestSchema
from app.sdk.framing import SdkError

# KV key after "<namespace>.load." -> field of the REST load request
_FIELDS = {
    "contextLength": "context_length",
    "llama.acceleration.offloadRatio": "gpu_offload",
    "llama.flashAttention": "flash_attention",
    "llama.evalBatchSize": "eval_batch_size",
    "numExperts": "num_experts",
    "offloadKVCacheToGpu": "offload_kv_cache_to_gpu",
    "seed": "seed",
}
_NAMESPACE_KEYS = {
    "llm": set(_FIELDS),
    "embedding": {"contextLength", "llama.acceleration.offloadRatio"},
}
_CHECKBOX = {"seed"}  # sent as {"checked": bool, "value": ...}
_AUTO_FIT = {"llama.autoFit", "mlx.autoFit", "yuzu.autoFit"}
GPU_SPLIT_KEY = "load.gpuSplitConfig"
_DEFAULT_GPU_SPLIT = {"strategy": "evenly", "disabledGpus": [], "priority": [], "customRatio": []}

# request fields the call itself sets (not the config), as the SDKs name them
_CALL_FIELDS = {"model": "modelKey", "identifier": "identifier", "ttl": "ttlMs"}


def sdk_key(namespace: str, field: str | None) -> str | None:
    """The SDK's name for a REST load request field (for error messages)."""
    if field in _CALL_FIELDS:
        return _CALL_FIELDS[field]
    for suffix, name in _FIELDS.items():
        if name == field:
            return f"{namespace}.load.{suffix}"
    return field


def config_fields(stack) -> list[tuple[str, object]]:
    """The (key, value) pairs of a ``loadConfigStack``, later layers overriding earlier ones."""
    if stack is None:
        return []
    if not isinstance(stack, dict) or not isinstance(stack.get("layers", []), list):
        raise SdkError("loadConfigStack: must be {\"layers\": [{\"layerName\", \"config\": {\"fields\"}}]}")
    merged: dict[str, object] = {}
    for layer in stack.get("layers", []):
        fields = (layer.get("config") or {}).get("fields", []) if isinstance(layer, dict) else None
        if not isinstance(fields, list):
            raise SdkError("loadConfigStack: each layer needs config.fields, a list")
        for kv in fields:
            if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
                raise SdkError("loadConfigStack: each field needs a string \"key\"")
            merged[kv["key"]] = kv.get("value")
    return list(merged.items())


def _config_to_fields(namespace: str, stack) -> dict:
    request = {}
    prefix = f"{namespace}.load."
    for key, value in config_fields(stack):
        if key == GPU_SPLIT_KEY:
            if value != _DEFAULT_GPU_SPLIT:
                raise SdkError(f"{key}: lmhost splits layers evenly over every GPU; only the "
                               f"default split is accepted, got {value!r}")
            continue
        suffix = key[len(prefix):] if key.startswith(prefix) else None
        if suffix in _AUTO_FIT and namespace == "llm":
            if value is not False:
                raise SdkError(f"{key}: lmhost does not auto-fit a load to memory; give "
                               "contextLength and gpu.ratio instead")
            continue
        if suffix not in _NAMESPACE_KEYS[namespace]:
            raise SdkError(f"{key}: not a load setting lmhost supports for {namespace} models",
                           suggestion="Supported: " + ", ".join(
                               prefix + k for k in sorted(_NAMESPACE_KEYS[namespace])))
        if suffix in _CHECKBOX:
            if not (isinstance(value, dict) and isinstance(value.get("checked"), bool)):
                raise SdkError(f"{key}: must be {{\"checked\": true|false, \"value\": ...}}, "
                               f"got {value!r}")
            if not value["checked"]:
                continue
            value = value.get("value")
        request[_FIELDS[suffix]] = value
    return request


def load_request(namespace: str, stack, **call) -> dict:
    """The validated REST load request for an SDK load in `namespace` ("llm" | "embedding").
    `call`: the fields the call sets (model, identifier, ttl, reuse_existing). Raises
    `SdkError` naming the offending key."""
    request = {**_config_to_fields(namespace, stack),
               **{k: v for k, v in call.items() if v is not None}}
    try:
        return LoadRequestSchema().load(request)
    except ValidationError as exc:
        field, message = first_problem(exc.messages) or (None, "invalid load request")
        key = sdk_key(namespace, field)
        raise SdkError(f"{key}: {message}" if key else message) from None


def ttl_seconds(ttl_ms) -> int | None:
    """A TTL in milliseconds (the wire) as the whole seconds REST uses, rounded up."""
    if ttl_ms is None:
        return None
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1:
        raise SdkError(f"ttlMs: must be a positive integer, got {ttl_ms!r}")
    return -(-ttl_ms // 1000)


def kv_fields(namespace: str, load_config: dict) -> list[dict]:
    """An instance's applied load config (a table row's ``load_config``) as KV fields."""
    fields = []
    for suffix, name in _FIELDS.items():
        if name in load_config and suffix in _NAMESPACE_KEYS[namespace]:
            value = load_config[name]
            if suffix in _CHECKBOX:
                value = {"checked": True, "value": value}
            fields.append({"key": f"{namespace}.load.{suffix}", "value": value})
    return fields
