"""LM Studio's SDK protocol on lmhost's own port, so the official ``lmstudio`` (Python) and
``@lmstudio/sdk`` (TypeScript) clients work unchanged.

- `framing`: frames and error objects; `session`: one socket (auth, dispatch, channels);
  `registry`: the sockets of a worker process (limit, close on stop);
- `models` (``/llm`` and ``/embedding``: model management), `prediction` (their inference:
  ``predict``, ``completeRawText``, ``embedString``, ``tokenize``, ...; `predictconfig`: SDK
  prediction config -> the engine's job), `system` (``/system``); `shapes`: ModelInfo /
  instance info; `loadconfig`: SDK load config <-> REST load request;
- `routes`: ``GET /lmstudio-greeting`` and the websocket routes; `discovery`: the extra
  listener on the clients' discovery ports.

Handlers call the same engine as the REST views (one instance table, one get-or-load, one load
plan, one generation engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from app.sdk.registry import SocketRegistry, close_on_signals
from app.sdk.session import Namespace


@dataclass(frozen=True)
class Sdk:
    registry: SocketRegistry
    namespaces: dict[str, Namespace]


def init_app(app: Flask, api) -> None:
    """Register the greeting and the websocket routes; build the namespaces on the engine."""
    from app.extensions import engine_of
    from app.sdk import routes
    from app.sdk.models import ModelHandlers
    from app.sdk.prediction import PredictionHandlers
    from app.sdk.system import SystemHandlers

    eng = engine_of(app)
    namespaces = {"system": SystemHandlers(eng).namespace()}
    for type_ in ("llm", "embedding"):
        models = ModelHandlers(eng, type_)
        prediction = PredictionHandlers(eng, models)
        namespaces[type_] = models.namespace(
            prediction.rpc(), prediction.channels() if type_ == "llm" else None)
    app.extensions["lmhost_sdk"] = Sdk(
        registry=SocketRegistry(eng.settings.sdk_max_sockets,
                                app.extensions["lmhost_metrics"].sdk_sockets),
        namespaces=namespaces)
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": 25,  # notice dead clients: their sockets hold threads
        "max_message_size": eng.settings.max_body,  # characters: more close the socket
        "thread_class": _daemon_thread,
    }
    api.register_blueprint(routes.blp)
    app.register_blueprint(routes.ws_blp)


def on_worker_start(app: Flask) -> None:
    """In a gunicorn worker (post_worker_init): close the SDK sockets as soon as the worker is
    told to stop, instead of holding the stop for the graceful timeout."""
    close_on_signals(app.extensions["lmhost_sdk"].registry)


def _daemon_thread(target):
    """simple-websocket's reader thread per socket: a daemon, so that a client that never
    answers a close cannot keep a stopping worker alive."""
    import threading
    return threading.Thread(target=target, daemon=True)
