"""The model listing (seed 004): its shape, and its rows — catalog entries with their loaded
instances merged in.

The marshmallow schemas below are the one definition of the listing's shape: the rows are
dumped through them here, and the HTTP layer documents its responses with the same classes.
Fields the seed marks "absent for embedding models" (architecture, capabilities, description)
are left out of an embedding model's row, not set to null.

The instances come from the instance table, read without a lock (it is replaced atomically);
HTTP workers keep nothing they could not rebuild from it (DESIGN invariant 1).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from marshmallow import Schema, fields, missing, post_dump, pre_dump, validate

from workers.catalog import Catalog, Model
from workers.errors import ErrorBodySchema
from workers.records import LISTED_STATES, State
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger(__name__)

LLM_ONLY_FIELDS = ("architecture", "capabilities", "description")
ABSENT_WHEN_NONE = ("last_failure", "file_missing")


class QuantizationSchema(Schema):
    name = fields.String(required=True, allow_none=True)
    bits_per_weight = fields.Integer(required=True, allow_none=True)

    @pre_dump
    def from_pair(self, pair, **kwargs):
        name, bits = pair  # the catalog keeps (name, nominal bits)
        return {"name": name, "bits_per_weight": bits}


class CapabilitiesSchema(Schema):
    vision = fields.Boolean(required=True)
    trained_for_tool_use = fields.Boolean(required=True)


class InstanceConfigSchema(Schema):
    """The load config an instance runs with: only the fields that apply to its model type."""

    context_length = fields.Integer()
    eval_batch_size = fields.Integer()
    flash_attention = fields.Boolean()
    num_experts = fields.Integer()
    offload_kv_cache_to_gpu = fields.Boolean()
    seed = fields.Integer(metadata={"description": "extension: the sampling seed, when the load "
                                                   "set one"})


class LoadedInstanceSchema(Schema):
    """A row of the instance table as a ``loaded_instances`` entry."""

    id = fields.String(required=True)
    config = fields.Nested(InstanceConfigSchema, attribute="load_config", required=True)
    status = fields.String(attribute="state", required=True, validate=validate.OneOf(LISTED_STATES),
                           metadata={"description": "extension"})
    ttl_seconds = fields.Integer(attribute="ttl", metadata={
        "description": "extension: idle seconds before auto-unload; absent when none"})

    @post_dump
    def omit_no_ttl(self, data, **kwargs):
        if not data.get("ttl_seconds"):
            data.pop("ttl_seconds", None)
        return data


class FailureSchema(Schema):
    """A failure record of the table: an instance that failed to load, crashed or exited
    unasked."""

    instance_id = fields.String(required=True)
    time = fields.Method("iso_time", required=True, metadata={
        "type": "string", "description": "when it ended, ISO 8601 UTC"})
    exit = fields.String(required=True, allow_none=True, dump_default=None, metadata={
        "description": 'how the process ended: "SIGILL (illegal instruction)", "exit code 1"'})
    error = fields.Nested(ErrorBodySchema, required=True,
                          metadata={"description": "the error its load or request got"})

    def iso_time(self, failure) -> str:
        return datetime.fromtimestamp(failure["time"], timezone.utc).isoformat(timespec="seconds")


class OfTheSameObject(fields.Nested):
    """A nested object whose fields are read from the object being dumped itself (the catalog
    keeps a model's capabilities as attributes of the model)."""

    def get_value(self, obj, attr, accessor=None, default=missing):
        return obj


class ModelSchema(Schema):
    """Dumps a `ListedModel`."""

    type = fields.String(required=True, validate=validate.OneOf(["llm", "embedding"]))
    publisher = fields.String(required=True)
    key = fields.String(required=True)
    display_name = fields.String(required=True)
    architecture = fields.String(allow_none=True, metadata={"description": "absent for embedding models"})
    quantization = fields.Nested(QuantizationSchema, required=True, allow_none=True)
    size_bytes = fields.Integer(required=True)
    params_string = fields.String(required=True, allow_none=True)
    loaded_instances = fields.List(fields.Nested(LoadedInstanceSchema), required=True)
    max_context_length = fields.Integer(required=True, allow_none=True)
    format = fields.String(required=True, allow_none=True, validate=validate.OneOf(["gguf", "mlx"]))
    capabilities = OfTheSameObject(CapabilitiesSchema, metadata={"description": "absent for embedding models"})
    description = fields.String(allow_none=True, metadata={"description": "absent for embedding models"})
    variants = fields.Method("variant_references", required=True, metadata={
        "type": "array", "items": {"type": "string"}, "description": "extension: key@variant"})
    selected_variant = fields.Method("selected_reference", required=True, metadata={
        "type": "string", "description": "extension: the variant a plain key picks"})
    last_failure = fields.Nested(FailureSchema, metadata={
        "description": "extension: the latest instance of this model that failed to load, "
                       "crashed or exited unasked (absent when none did)"})
    file_missing = fields.Boolean(metadata={
        "description": "extension: true when the model's file was deleted while an instance "
                       "of it is loaded (the instance still serves; absent otherwise)"})

    def variant_references(self, listed) -> list[str]:
        return [f"{listed.key}@{v.name}" for v in listed.variants]

    def selected_reference(self, listed) -> str:
        return f"{listed.key}@{listed.selected.name}"

    @post_dump
    def drop_absent_fields(self, data, **kwargs):
        if data["type"] == "embedding":
            for name in LLM_ONLY_FIELDS:
                data.pop(name, None)
        for name in ABSENT_WHEN_NONE:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema), required=True)


@dataclass(frozen=True)
class ListedModel:
    """A catalog model with its rows of the instance table and its latest failure record:
    what `ModelSchema` dumps."""

    model: Model
    loaded_instances: tuple[dict, ...]
    last_failure: dict | None
    file_missing: bool | None = None

    def __getattr__(self, name):  # every other field is the model's own
        return getattr(self.model, name)


_MODELS = ModelSchema(many=True)


def model_entry(model: Model) -> dict:
    """A model's listing entry with no instances: what an instance's row keeps of its model."""
    entry = ModelSchema().dump(ListedModel(model, (), None))
    del entry["loaded_instances"]
    return entry


def openai_models(rows: list[dict], with_downloaded: bool) -> list[dict]:
    """/v1/models: every loaded instance by id and, with JIT on, every downloaded model by key
    (a request for it loads it). `rows` are the listing's rows (`ModelListing.rows`)."""
    data, seen = [], set()
    for row in rows:
        for instance in row["loaded_instances"]:
            if instance["status"] == State.LOADED and instance["id"] not in seen:
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
    """Listing rows (seed 004's JSON objects, dumped through `ModelSchema`), rebuilt only when
    the catalog's snapshot or the table changed.

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
                by_model.setdefault(row["model_key"], []).append(row)
        listed = _MODELS.dump([ListedModel(model, tuple(by_model.pop(model.key, ())),
                                           last_failure.get(model.key)) for model in models])
        # instances whose model file went away meanwhile: still loaded, still serving
        for rows in by_model.values():
            entry = rows[0].get("model_entry")
            if entry:
                instances = LoadedInstanceSchema(many=True).dump(rows)
                listed.append({**entry, "loaded_instances": instances, "file_missing": True})
        return listed
