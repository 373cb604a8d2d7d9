"""The HTTP side of lmhost: `create_app(config)` builds a Flask app; nothing runs at import."""

from __future__ import annotations

import logging
from typing import Mapping

from flask import Flask

from app import auth, chat, health, models, openai, requestlog, resources, sdk
from app.api import OPENAPI_VERSION, Api
from app.extensions import Engine
from app.metrics import EngineCollector, Metrics
from config import Settings, load_settings


def create_app(config: Settings | Mapping | None = None) -> Flask:
    """Build the app. `config`: a `Settings`, or a mapping of setting overrides on top of the
    defaults and the ``LMHOST_*`` environment, or None for defaults and environment."""
    settings = config if isinstance(config, Settings) else load_settings(**dict(config or {}))
    logging.getLogger("workers").setLevel(settings.log_level.upper())
    logging.getLogger("app").setLevel(settings.log_level.upper())
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    app = Flask(__name__)
    app.config.update(
        API_TITLE="lmhost",
        API_VERSION="v1",
        OPENAPI_VERSION=OPENAPI_VERSION,
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=settings.max_body,  # a larger body: 413 payload_too_large
    )
    app.json.sort_keys = False  # keep seed 004's field order
    eng = app.extensions["lmhost"] = Engine.build(settings)
    metrics = app.extensions["lmhost_metrics"] = Metrics(EngineCollector(settings,
                                                                         eng.listing.table))
    requestlog.init_app(app, metrics, settings.forwarded_proxies)  # first: its hook labels the route
    auth.init_app(app, settings)
    api = Api(app)
    api.register_blueprint(health.blp)
    api.register_blueprint(models.blp)
    api.register_blueprint(openai.blp)
    api.register_blueprint(resources.blp)
    api.register_blueprint(chat.blp)
    sdk.init_app(app, api)
    return app
