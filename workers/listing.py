"""The model listing: catalog entries with their loaded instances merged in (seed 004).

The instances come from the instance table, read without a lock (it is replaced atomically);
HTTP workers keep nothing they could not rebuild from it (DESIGN invariant 1).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from workers.catalog import Catalog, Model
from workers.records import LISTED_STATES
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger(__name__)



def describe_model(model: Model, instances: list[dict] = (), failure: dict | None = None) -> dict:
    """Seed 004's fields for one model; `instances` are its rows of the instance listing;
    `failure` the table's latest failure record of the model, if any."""
    quant = model.quantization
    entry = {
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
    if failure is not None:
        entry["last_failure"] = describe_failure(failure)
    return entry


def describe_failure(failure: dict) -> dict:
    """A failure record of the table (an instance that failed to load, crashed or exited
    unasked) as the listing shows it."""
    return {"instance_id": failure["instance_id"],
            "time": datetime.fromtimestamp(failure["time"], timezone.utc).isoformat(timespec="seconds"),
            "exit": failure.get("exit"), "error": failure["error"]}


def describe_instance(row: dict) -> dict:
    """A table row as seed 004's ``loaded_instances`` entry (plus status and ttl)."""
    entry = {"id": row["id"], "config": row["load_config"], "status": row["state"]}
    if row.get("ttl"):
        entry["ttl_seconds"] = row["ttl"]
    return entry


def openai_models(rows: list[dict], with_downloaded: bool) -> list[dict]:
    """/v1/models: every loaded instance by id and, with JIT on, every downloaded model by key
    (a request for it loads it). `rows` are the listing's rows (`ModelListing.rows`)."""
    data, seen = [], set()
    for row in rows:
        for instance in row["loaded_instances"]:
            if instance["status"] == "loaded" and instance["id"] not in seen:
                seen.add(instance["id"])
                data.append({"id": instance["id"], "object": "model", "owned_by": row["publisher"],
                             "type": row["type"]})
    if with_downloaded:
        for row in rows:
            if row["key"] not in seen and row["format"] == "gguf":
                seen.add(row["key"])
                data.append({"id": row["key"], "object": "model", "owned_by": row["publisher"],
                             "type": row["type"]})
    return data


class ModelListing:
    """Listing rows, rebuilt only when the catalog's snapshot or the table changed.

    `rows()` returns the very same list object while nothing changed, so callers can memoize
    work derived from it (the HTTP layer keeps the serialized body) by identity.
    """

    def __init__(self, catalog: Catalog, table: InstanceTable):
        self.catalog = catalog
        self.table = table
        self._lock = threading.Lock()
        self._last: tuple[tuple, list[dict]] = ((None, None), [])

    def rows(self) -> list[dict]:
        models = self.catalog.list_models()
        stamp = self.table.stamp()
        with self._lock:
            (last_models, last_stamp), rows = self._last
            if last_models is not models or last_stamp != stamp:
                rows = self._merge(models)
                self._last = ((models, stamp), rows)
            return rows

    def _merge(self, models: list[Model]) -> list[dict]:
        try:
            table, failures = self.table.snapshot()
        except TableUnreadable as exc:
            log.warning("listing without instances: %s", exc)
            table, failures = [], []
        last_failure = {f["model_key"]: f for f in failures}  # oldest first: the newest wins
        by_model: dict[str, list[dict]] = {}
        for row in sorted(table, key=lambda r: (r.get("created", 0), r["id"])):
            if row.get("state") in LISTED_STATES:
                by_model.setdefault(row["model_key"], []).append(describe_instance(row))
        return [describe_model(model, by_model.get(model.key, ()), last_failure.get(model.key))
                for model in models]
