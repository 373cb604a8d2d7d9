"""The ``/system`` namespace: the models on disk (``client.list_downloaded_models()``,
``client.system.listDownloadedModels()``), from the same catalog as ``GET /api/v1/models``."""

from __future__ import annotations

from app.extensions import Engine
from app.sdk import shapes
from app.sdk.framing import SdkError
from app.sdk.session import Namespace


class SystemHandlers:
    def __init__(self, eng: Engine):
        self.eng = eng

    def namespace(self) -> Namespace:
        return Namespace(name="system", channels={}, rpc={
            "listDownloadedModels": self.list_downloaded_models,
            "listDownloadedModelVariants": self.list_downloaded_model_variants,
        })

    def _info(self, model, variant=None) -> dict:
        return shapes.model_info(model, self.eng.settings.models_dir,
                                 self.eng.settings.context_length, variant)

    def list_downloaded_models(self, _params=None) -> list[dict]:
        return [self._info(model) for model in self.eng.listing.catalog.list_models()]

    def list_downloaded_model_variants(self, params) -> list[dict]:
        key = params.get("modelKey") if isinstance(params, dict) else None
        if not isinstance(key, str):
            raise SdkError("modelKey: must be a string")
        model, _ = self.eng.listing.catalog.resolve(key)
        return [self._info(model, variant) for variant in model.variants]
