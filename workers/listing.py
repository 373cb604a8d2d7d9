"""The model listing: catalog entries with their loaded instances merged in (seed 004)."""

from __future__ import annotations

import threading

from workers.catalog import Catalog, Model


def describe_model(model: Model, instances: list[dict] = ()) -> dict:
    """Seed 004's fields for one model; `instances` are its rows of the instance listing."""
    quant = model.quantization
    return {
        "type": model.type,
        "publisher": model.publisher,
        "key": model.key,
        "display_name": model.display_name,
        "architecture": model.architecture,
        "quantization": {"name": quant[0], "bits_per_weight": quant[1]} if quant else None,
        "size_bytes": model.size_bytes,
        "params_string": model.params_string,
        "loaded_instances": list(instances),
        "max_context_length": model.max_context_length,
        "format": model.format,
        "capabilities": {"vision": model.vision,
                         "trained_for_tool_use": model.trained_for_tool_use},
        "description": model.description,
        "variants": [f"{model.key}@{v.name}" for v in model.variants],
        "selected_variant": f"{model.key}@{model.selected.name}",
    }


class ModelListing:
    """Listing rows, rebuilt only when the catalog's snapshot changed.

    `rows()` returns the very same list object while nothing changed, so callers can memoize
    work derived from it (the HTTP layer keeps the serialized body) by identity.
    """

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._lock = threading.Lock()
        self._last: tuple[list[Model] | None, list[dict]] = (None, [])

    def rows(self) -> list[dict]:
        models = self.catalog.list_models()
        with self._lock:
            source, rows = self._last
            if source is not models:
                rows = [describe_model(model) for model in models]
                self._last = (models, rows)
            return rows
