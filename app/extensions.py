"""Per-app engine objects, built once by `create_app` and reached by views via `engine()`."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from app.memo import JsonMemo
from config import Settings
from workers.catalog import Catalog
from workers.client import SupervisorClient
from workers.inference import Inference
from workers.listing import ModelListing
from workers.native_chat import NativeChat
from workers.responses import ResponseStore
from workers.table import InstanceTable


@dataclass(frozen=True)
class Engine:
    settings: Settings
    listing: ModelListing
    supervisor: SupervisorClient
    inference: Inference
    chat: NativeChat
    listing_body: JsonMemo = field(default_factory=JsonMemo)

    @classmethod
    def build(cls, settings: Settings) -> "Engine":
        catalog = Catalog(settings.models_dir, settings.state_dir)
        table = InstanceTable(settings.state_dir)
        supervisor = SupervisorClient(settings)
        inference = Inference(settings, catalog, table, supervisor)
        return cls(settings=settings, listing=ModelListing(catalog, table),
                   supervisor=supervisor, inference=inference,
                   chat=NativeChat(inference, ResponseStore(settings.state_dir)))


def engine_of(app) -> Engine:
    return app.extensions["lmhost"]


def engine() -> Engine:
    return engine_of(current_app)
