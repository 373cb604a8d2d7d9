"""The SDK's ``ModelInfo`` and instance info, built from catalog models and instance-table rows.

The TypeScript client drops (with only a warning) any result that misses a field its zod schema
requires, and then waits forever: every required field is always present here, optional ones
are left out rather than set to null (``paramsString``, ``architecture``, ``quantization``),
and ``deviceIdentifier`` is present and null. Pure functions over plain data.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.catalog import Model, Variant

# lmhost's catalog format -> the SDKs' ModelCompatibilityType
_FORMATS = {"gguf": "gguf", "mlx": "safetensors"}


def relative_path(models_dir: Path, path: str | os.PathLike) -> str:
    """A model file as LM Studio names it: relative to the models dir, with forward slashes."""
    try:
        return Path(path).relative_to(models_dir).as_posix()
    except ValueError:
        return Path(path).name


def model_info(model: Model, models_dir: Path, default_context_length: int,
               variant: Variant | None = None) -> dict:
    """``ModelInfo`` (``LlmInfo`` / ``EmbeddingModelInfo``) of a model on disk."""
    variant = variant or model.selected
    facts = variant.facts
    path = relative_path(models_dir, variant.files[0])
    info = {
        "type": model.type,
        "modelKey": model.key,
        "format": _FORMATS.get(model.format, "gguf"),
        "displayName": model.display_name,
        "publisher": model.publisher,
        "path": path,
        "sizeBytes": int(variant.size_bytes),
        "indexedModelIdentifier": path,
        "deviceIdentifier": None,
        "maxContextLength": int(facts.context_length or default_context_length),
    }
    params = facts.size_label or model.params_string
    if params:
        info["paramsString"] = params
    if facts.architecture:
        info["architecture"] = facts.architecture
    if facts.quantization and facts.quantization[1] is not None:
        info["quantization"] = {"name": facts.quantization[0], "bits": int(facts.quantization[1])}
    if len(model.variants) > 1:
        info["variants"] = [f"{model.key}@{v.name}" for v in model.variants]
        info["selectedVariant"] = f"{model.key}@{variant.name}"
    if model.type == "llm":
        info["vision"] = bool(model.vision)
        info["trainedForToolUse"] = bool(facts.tool_use)
    return info


def instance_info(row: dict, model: Model | None, models_dir: Path,
                  default_context_length: int) -> dict:
    """Instance info (``LlmInstanceInfo`` / ``EmbeddingModelInstanceInfo``) of a table row.
    `model`: the row's model in the catalog, or None when its files are gone since it loaded."""
    if model is not None:
        variant = next((v for v in model.variants if v.name == row["variant"]), model.selected)
        info = model_info(model, models_dir, default_context_length, variant)
    else:
        path = relative_path(models_dir, row["path"])
        info = {"type": row["type"], "modelKey": row["model_key"], "format": "gguf",
                "displayName": row["model_key"], "publisher": row["model_key"].partition("/")[0],
                "path": path, "sizeBytes": 0, "indexedModelIdentifier": path,
                "deviceIdentifier": None, "maxContextLength": default_context_length}
        if row["type"] == "llm":
            info.update(vision=False, trainedForToolUse=False)
    context_length = row["load_config"].get("context_length") or info["maxContextLength"]
    info.update({
        "identifier": row["id"],
        # stable for the instance's life: its handle names its process's socket
        "instanceReference": row.get("handle") or row["id"],
        "ttlMs": row["ttl"] * 1000 if row.get("ttl") else None,
        "lastUsedTime": int(row["last_used"] * 1000) if row.get("last_used") else None,
        "contextLength": int(context_length),
    })
    return info
