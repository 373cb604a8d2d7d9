"""Model management, shared by the ``llm`` and ``embedding`` namespaces.

RPCs ``listLoaded``, ``getModelInfo``, ``getLoadConfig``, ``unloadModel``,
``estimateModelUsage`` (the REST load's ``estimate_only`` answer, in the SDK's shape); channels
``loadModel`` (always a new instance) and ``getOrLoad``. Thin: they read the same instance
table as ``GET /api/v1/models`` and call the same supervisor operations as the REST load and
unload views, with the request the REST view would build (`app.sdk.loadconfig.load_request`).
``getOrLoad`` is the JIT path of ``/v1`` (``Inference.target`` / ``_jit_load``): an instance
named by its identifier is used as is, otherwise the supervisor's atomic get-or-load
(``reuse_existing``, ``jit``) with the call's TTL, or ``LMHOST_JIT_TTL``, for a new load.
"""

from __future__ import annotations

import time

from app.extensions import Engine
from app.sdk import loadconfig, shapes
from app.sdk.framing import SdkError, no_model_matching
from app.sdk.session import Channel, Namespace
from config import ADMIN
from workers import policy
from workers.catalog import Model, Variant
from workers.records import State
from workers.errors import (IdentifierConflict, InstanceNotFound, InvalidRequest, LmhostError,
                            ModelLoadFailed, ModelNotFound)
from workers.table import TableUnreadable


class ModelHandlers:
    def __init__(self, eng: Engine, type_: str):
        self.eng = eng
        self.type = type_  # "llm" | "embedding": also the namespace's name

    def namespace(self, extra_rpc: dict | None = None,
                  extra_channels: dict | None = None) -> Namespace:
        return Namespace(
            name=self.type,
            rpc={"listLoaded": self.list_loaded, "getModelInfo": self.get_model_info,
                 "getLoadConfig": self.get_load_config, "unloadModel": self.unload_model,
                 "estimateModelUsage": self.estimate_model_usage, **(extra_rpc or {})},
            channels={"loadModel": self.load_model, "getOrLoad": self.get_or_load,
                      **(extra_channels or {})},
            convert=self.convert)

    # -- reading the table and the catalog ---------------------------------------------------

    def _rows(self, states=(State.LOADED,)) -> list[dict]:
        """This namespace's instances in the table, oldest first."""
        try:
            rows = self.eng.listing.table.read()
        except TableUnreadable:
            rows = []
        return sorted((r for r in rows if r.get("type") == self.type and r.get("state") in states),
                      key=lambda r: (r.get("created", 0), r["id"]))

    def _models(self) -> dict[str, Model]:
        return {m.key: m for m in self.eng.listing.catalog.list_models()}

    def _instance_info(self, row: dict, models: dict[str, Model] | None = None) -> dict:
        models = self._models() if models is None else models
        return shapes.instance_info(row, models.get(row["model_key"]), self.eng.settings.models_dir,
                                    self.eng.settings.context_length)

    def _model_info(self, model: Model, variant: Variant) -> dict:
        return shapes.model_info(model, self.eng.settings.models_dir,
                                 self.eng.settings.context_length, variant)

    def _not_found(self, query: dict, title: str) -> SdkError:
        return no_model_matching({k: v for k, v in query.items() if v}, [r["id"] for r in self._rows()],
                                 title)

    def _resolve(self, reference: str) -> tuple[str, Model, Variant]:
        """A model reference as the SDKs send it (key, ``publisher/key``, ``key@variant`` or the
        model file's path relative to the models dir) -> (REST reference, model, variant)."""
        catalog = self.eng.listing.catalog
        try:
            model, variant = catalog.resolve(reference)
        except ModelNotFound as exc:
            found = self._by_path(reference)
            if found is None:
                raise self._not_found({"identifier": reference}, str(exc)) from None
            model, variant = found
            reference = f"{model.key}@{variant.name}"
        if model.type != self.type:
            other = "client.embedding" if model.type == "embedding" else "client.llm"
            raise SdkError(f"{model.key!r} is an {'embedding model' if model.type == 'embedding' else 'LLM'}, "
                           f"not a model of the {self.type!r} namespace",
                           suggestion=f"Use {other} for it.",
                           display_data={"code": "generic.domainMismatch", "path": model.key,
                                         "actualDomain": model.type, "expectedDomain": self.type})
        return reference, model, variant

    def _by_path(self, path: str) -> tuple[Model, Variant] | None:
        for model in self._models().values():
            for variant in model.variants:
                if shapes.relative_path(self.eng.settings.models_dir, variant.files[0]) == path:
                    return model, variant
        return None

    def _find(self, specifier) -> tuple[dict | None, dict]:
        """The loaded instance a model specifier names, and the query (for not-found errors).
        A query's ``identifier`` names an instance, or else a model key of a loaded instance;
        an empty query means any loaded instance (the TS client's ``model()``)."""
        if not isinstance(specifier, dict):
            raise SdkError("specifier: must be {\"type\": \"query\" | \"instanceReference\", ...}")
        rows = self._rows()
        if specifier.get("type") == "instanceReference":
            ref = specifier.get("instanceReference")
            row = next((r for r in rows if (r.get("handle") or r["id"]) == ref), None)
            return row, {}
        query = specifier.get("query")
        if specifier.get("type") != "query" or not isinstance(query, dict):
            raise SdkError("specifier: must be {\"type\": \"query\" | \"instanceReference\", ...}")
        if query.get("domain") not in (None, self.type):
            return None, query
        wanted = query.get("identifier")
        path = query.get("path")
        candidates = rows
        if wanted is not None:
            candidates = ([r for r in rows if r["id"] == wanted]
                          or [r for r in rows if r["model_key"] == str(wanted).lower()])
        if path is not None:
            models_dir = self.eng.settings.models_dir
            candidates = [r for r in candidates
                          if shapes.relative_path(models_dir, r["path"]) == path
                          or r["model_key"] == str(path).lower()]
        return (candidates[0] if candidates else None), query

    # -- RPCs --------------------------------------------------------------------------------

    def list_loaded(self, _params=None) -> list[dict]:
        models = self._models()
        return [self._instance_info(row, models) for row in self._rows()]

    def get_model_info(self, params) -> dict | None:
        params = _object(params, "getModelInfo")
        row, query = self._find(params.get("specifier"))
        if row is None:
            if params.get("throwIfNotFound"):
                raise self._not_found(query, "No loaded model satisfies the query")
            return None
        return self._instance_info(row)

    def get_load_config(self, params) -> dict:
        row, query = self._find(_object(params, "getLoadConfig").get("specifier"))
        if row is None:
            raise self._not_found(query, "No loaded model satisfies the query")
        return {"fields": loadconfig.kv_fields(self.type, row["load_config"])}

    def unload_model(self, params) -> None:
        identifier = _object(params, "unloadModel").get("identifier")
        if not isinstance(identifier, str) or not identifier:
            raise SdkError("identifier: must be a non-empty string")
        known = any(r["id"] == identifier for r in self._rows((State.LOADING, State.LOADED)))
        try:
            if not known:
                raise InstanceNotFound(identifier)
            self.eng.supervisor.unload(identifier)
        except InstanceNotFound:
            raise self._not_found({"identifier": identifier},
                                  f"No loaded {self.type} model with identifier {identifier!r}") from None

    def estimate_model_usage(self, params) -> dict:
        """The memory a load with this config would take, and whether it passes the guardrail
        now: the supervisor's estimate, as for ``estimate_only`` REST loads."""
        params = _object(params, "estimateModelUsage")
        reference, _, _ = self._resolve(_string(params, "modelKey"))
        request = loadconfig.load_request(self.type, params.get("loadConfigStack"), model=reference)
        return _estimated_usage(self.eng.supervisor.estimate(request))

    # -- channels ----------------------------------------------------------------------------

    def load_model(self, params, channel: Channel) -> None:
        """Always a new instance (``client.llm.load`` / ``load_new_instance``)."""
        params = _object(params, "loadModel")
        reference, model, variant = self._resolve(_string(params, "modelKey"))
        request = loadconfig.load_request(
            self.type, params.get("loadConfigStack"), model=reference,
            identifier=params.get("identifier"), ttl=loadconfig.ttl_seconds(params.get("ttlMs")))
        channel.send({"type": "resolved", "info": self._model_info(model, variant)})
        try:
            result = self._load(request, channel, "progress")
        except IdentifierConflict as exc:
            raise SdkError(f"A model instance with identifier {request['identifier']!r} already "
                           "exists (or is loading)", cause=exc.message,
                           suggestion="Leave the identifier out to get a free one.") from None
        channel.send({"type": "success", "info": self._loaded_info(result)})

    def get_or_load(self, params, channel: Channel) -> None:
        """An instance named by ``identifier``, or one of the model it names (loaded or still
        loading), or a new JIT-loaded one (``client.llm.model(key)``)."""
        params = _object(params, "getOrLoad")
        identifier = _string(params, "identifier")
        ttl = loadconfig.ttl_seconds(params.get("loadTtlMs"))
        named = next((r for r in self._rows() if r["id"] == identifier), None)
        if named is not None:
            loadconfig.load_request(self.type, params.get("loadConfigStack"),
                                    model=named["model_key"])  # a bad config is an error all the same
            channel.send({"type": "alreadyLoaded", "info": self._instance_info(named)})
            return
        reference, model, variant = self._resolve(identifier)
        request = loadconfig.load_request(
            self.type, params.get("loadConfigStack"), model=reference, reuse_existing=True,
            ttl=ttl or self.eng.settings.jit_ttl)
        request["jit"] = True
        loaded = policy.pick_reusable(self._rows(), model.key, variant.name)
        if loaded is not None:
            result = self._load(request, None, None)
            channel.send({"type": "alreadyLoaded", "info": self._loaded_info(result)})
            return
        if not self.eng.settings.jit and channel.session.client.scope != ADMIN:
            # an inference token loads only as JIT does; with JIT off, that is not at all
            raise SdkError(f"{reference!r} is not loaded and JIT loading is off (LMHOST_JIT=0): "
                           "loading it needs an admin API token")
        channel.send({"type": "startLoading", "identifier": reference,
                      "info": self._model_info(model, variant)})
        result = self._load(request, channel, "loadProgress")
        channel.send({"type": "loadSuccess", "info": self._loaded_info(result)})

    def _load(self, request: dict, channel: Channel | None, progress_type: str | None) -> dict:
        """The supervisor's load, progress relayed (strictly increasing, 0.0 first, 1.0 last,
        paced by `policy.progress_due`).
        A load the client cancelled is unloaded once it is loaded (the supervisor cannot stop
        a load midway for us: it does not know the instance before it answers)."""
        sent, sent_at = -1.0, None  # sent_at: when the last step after the opening 0.0 went
        result = None
        # the supervisor's first message comes once it has accepted the request
        for message in self.eng.supervisor.load(request):
            if "result" in message:
                result = message["result"]
            elif channel is not None and not channel.cancelled.is_set():
                if sent < 0:
                    channel.send({"type": progress_type, "progress": 0.0})
                    sent = 0.0
                progress, now = float(message["progress"]), time.monotonic()
                if policy.progress_due(progress, sent, sent_at, now):
                    channel.send({"type": progress_type, "progress": progress})
                    sent, sent_at = progress, now
        if result is None:
            raise ModelLoadFailed("the supervisor ended the load without an answer")
        if channel is not None and channel.cancelled.is_set():
            if not result.get("reused"):
                self.eng.supervisor.unload(result["instance_id"])
            raise SdkError(f"Loading {request['model']!r} was cancelled")
        return result

    def _loaded_info(self, result: dict) -> dict:
        rows = self._rows()
        row = next((r for r in rows if r["id"] == result["instance_id"]), None)
        if row is None:
            raise SdkError(f"instance {result['instance_id']!r} was unloaded right after loading")
        return self._instance_info(row)

    # -- engine errors -----------------------------------------------------------------------

    def convert(self, error: LmhostError) -> SdkError:
        """An engine error as the SDKs show it: keys named as the SDK names them."""
        message = error.message
        if isinstance(error, (ModelNotFound, InstanceNotFound)):
            return self._not_found({}, message)
        if isinstance(error, IdentifierConflict):
            return SdkError(f"The model instance identifier already exists: {message}")
        if isinstance(error, InvalidRequest) and error.param:
            key = loadconfig.sdk_key(self.type, error.param)
            if message.startswith(f"{error.param}: "):
                message = message[len(error.param) + 2:]
            return SdkError(f"{key}: {message}")
        if isinstance(error, ModelLoadFailed):
            return SdkError("Failed to load the model", cause=message)
        return SdkError(message)


def _estimated_usage(answer: dict) -> dict:
    """An ``estimate_only`` answer as the SDK's ``EstimatedResourcesUsage``: model = weights,
    context = KV cache and compute buffers; confidence is low on a GPU (its constants were fitted
    on one GPU model, and a CUDA context's size differs between GPUs and drivers)."""
    estimate, on_gpu = answer["estimate"], answer["estimate"]["on_gpu"]
    return {"memory": {
        "confidence": "low" if answer["mode"] == "gpu" else "high",
        "modelVramBytes": on_gpu["weights_bytes"],
        "contextVramBytes": on_gpu["kv_cache_bytes"] + on_gpu["compute_bytes"],
        "totalVramBytes": estimate["gpu_bytes"],
        "modelBytes": estimate["weights_bytes"],
        "contextBytes": estimate["kv_cache_bytes"] + estimate["compute_bytes"],
        "totalBytes": estimate["total_bytes"]},
        "passesGuardrails": answer["passes_guardrail"]}


def _object(params, endpoint: str) -> dict:
    if not isinstance(params, dict):
        raise SdkError(f"{endpoint}: the parameter must be a JSON object")
    return params


def _string(params: dict, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise SdkError(f"{name}: must be a non-empty string")
    return value
