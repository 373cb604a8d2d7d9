"""Auth, request logs, readiness and metrics of the app (Flask test client; a real supervisor
and instances where the answer needs them). Through real gunicorn and nginx:
tests/e2e/test_production.py."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from app import create_app
from app.auth import ROUTE_SCOPES
from config import load_settings
from tests.helpers import api_token

ADMIN, INFERENCE = api_token(), api_token()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(models_dir, state_dir):
    settings = load_settings(env={}, models_dir=models_dir, state_dir=state_dir,
                             api_tokens=f"{ADMIN},{INFERENCE}:inference")
    return create_app(settings).test_client()


def answer(client, method, path, token=None, **kwargs):
    headers = {**kwargs.pop("headers", {}), **(bearer(token) if token else {})}
    with client.open(path, method=method, headers=headers, **kwargs) as response:
        return response.status_code, response.get_json(silent=True), response.headers


def test_every_route_has_a_scope_in_the_table(app):
    """A new route must say who may call it (ROUTE_SCOPES in app/auth.py, one line)."""
    rules = {r.rule for r in app.url_map.iter_rules() if not r.websocket and r.endpoint != "static"}
    assert rules - set(ROUTE_SCOPES) == set()


@pytest.mark.parametrize("method, path, body, admin, inference", [
    ("GET", "/api/v1/models", None, 200, 200),
    ("GET", "/v1/models", None, 200, 200),
    ("POST", "/v1/chat/completions", {}, 400, 400),       # auth passed: the body is checked
    ("POST", "/v1/completions", {}, 400, 400),
    ("POST", "/v1/embeddings", {}, 400, 400),
    ("POST", "/api/v1/models/load", {}, 400, 403),
    ("POST", "/api/v1/models/unload", {}, 400, 403),
    ("GET", "/api/v1/no-such-route", None, 404, 404),     # unknown, but under /api: 401 first
])
def test_scopes_on_http(secured, method, path, body, admin, inference):
    kwargs = {"json": body} if body is not None else {}
    for token in (None, "wrong-token", "Basic " + ADMIN):
        headers = {"Authorization": token} if token and token.startswith("Basic") else {}
        status, error, headers_out = answer(secured, method, path,
                                            None if headers else token, headers=headers, **kwargs)
        assert status == 401 and error["error"]["type"] == "unauthorized", (path, token)
        assert headers_out["WWW-Authenticate"].startswith('Bearer realm="lmhost"')
        assert ADMIN not in str(error) and "wrong-token" not in str(error)
    assert answer(secured, method, path, ADMIN, **kwargs)[0] == admin
    status, error, headers_out = answer(secured, method, path, INFERENCE, **kwargs)
    assert status == inference
    if status == 403:
        assert error["error"]["type"] == "forbidden" and "needs an admin token" in error["error"]["message"]
        assert 'error="insufficient_scope"' in headers_out["WWW-Authenticate"]
    # the scheme is case-insensitive, as RFC 6750 says
    assert answer(secured, method, path, headers={"Authorization": f"bearer {ADMIN}"},
                  **kwargs)[0] == admin


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/openapi.json", "/lmstudio-greeting"])
def test_monitoring_discovery_and_the_contract_need_no_token(secured, path):
    assert answer(secured, "GET", path)[0] == 200
    assert answer(secured, "GET", "/no-such-page")[0] == 404  # not under /api or /v1


def test_no_tokens_no_auth(client):
    assert answer(client, "POST", "/api/v1/models/unload", json={})[0] == 400


def test_an_unreadable_tokens_file_lets_nobody_in(models_dir, state_dir, tmp_path, caplog):
    token = api_token()
    settings = load_settings(env={}, models_dir=models_dir, state_dir=state_dir,
                             api_tokens=token, api_tokens_file=tmp_path / "missing")
    with caplog.at_level(logging.ERROR, logger="app.auth"):
        client = create_app(settings).test_client()
    assert "LMHOST_API_TOKENS_FILE: cannot read" in caplog.text
    status, error, _ = answer(client, "GET", "/api/v1/models", token)
    assert status == 401 and "cannot read its tokens" in error["error"]["message"]


def test_the_document_says_who_may_call_what(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            scope = ROUTE_SCOPES[path]
            responses = set(operation["responses"])
            if scope == "open":
                assert operation["security"] == [] and "401" not in responses, path
            else:
                assert operation["security"] == [{"bearerAuth": []}] and "401" in responses, path
                assert ("403" in responses) == (scope == "admin"), path


# -- request log -------------------------------------------------------------------------------

def access_lines(caplog):
    return [r.fields for r in caplog.records if r.name == "lmhost.access"]


def test_one_log_line_per_request_with_its_id_and_no_secret(secured, caplog):
    caplog.set_level(logging.INFO, logger="lmhost.access")
    status, _, headers = answer(secured, "GET", "/api/v1/models?token=in-the-url", INFERENCE,
                                headers={"X-Request-ID": "req-42.a"})
    assert status == 200 and headers["X-Request-ID"] == "req-42.a"
    answer(secured, "POST", "/v1/chat/completions", INFERENCE, json={
        "model": "no-such-model", "messages": [{"role": "user", "content": "PROMPT-TEXT-77"}]})
    _, _, headers = answer(secured, "GET", "/healthz", headers={"X-Request-ID": "bad id <script>"})
    made = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # not sane: replaced, and answered
    lines = access_lines(caplog)
    assert [(f["method"], f["path"], f["status"]) for f in lines] == [
        ("GET", "/api/v1/models", 200), ("POST", "/v1/chat/completions", 404),
        ("GET", "/healthz", 200)]
    assert lines[0]["request_id"] == "req-42.a" and lines[2]["request_id"] == made
    assert lines[0]["scope"] == "inference" and lines[2]["scope"] is None
    assert all(f["duration_ms"] >= 0 and f["client"] == "127.0.0.1" for f in lines)
    assert "PROMPT-TEXT-77" not in caplog.text and "in-the-url" not in caplog.text


@pytest.mark.parametrize("proxies, client", [(0, "127.0.0.1"), (1, "198.51.100.7"),
                                             (2, "203.0.113.9")])
def test_forwarded_headers_count_for_the_configured_proxies_only(models_dir, state_dir, caplog,
                                                                  proxies, client):
    caplog.set_level(logging.INFO, logger="lmhost.access")
    app = create_app(load_settings(env={}, models_dir=models_dir, state_dir=state_dir,
                                   forwarded_proxies=proxies))
    answer(app.test_client(), "GET", "/healthz",
           headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert access_lines(caplog)[-1]["client"] == client


# -- metrics and readiness ---------------------------------------------------------------------

def metric(text: str, name: str, **labels) -> float | None:
    """The value of one series in Prometheus' text format (None when absent)."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(value)
    return None


def test_metrics_count_requests_by_route_and_status(secured):
    for token in (None, INFERENCE, INFERENCE):
        answer(secured, "GET", "/api/v1/models", token)
    answer(secured, "GET", "/api/v1/nothing-here", INFERENCE)
    _, _, _ = answer(secured, "GET", "/healthz")
    with secured.get("/metrics") as response:
        text = response.get_data(as_text=True)
        assert response.mimetype == "text/plain"
    assert metric(text, "lmhost_http_requests_total", route="/api/v1/models", status=401) == 1
    assert metric(text, "lmhost_http_requests_total", route="/api/v1/models", status=200) == 2
    assert metric(text, "lmhost_http_requests_total", route="(unmatched)", status=404) == 1
    assert metric(text, "lmhost_http_request_duration_seconds_count", route="/healthz") == 1
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("lmhost_") for name in names)


def test_state_metrics_and_readiness_with_real_instances(live):
    client = live.client
    assert live.load(model="tiny-llama").status_code == 200
    done = client.post("/v1/completions", json={"model": "tiny-llama", "prompt": "x",
                                                 "max_tokens": 7})
    assert done.get_json()["usage"]["completion_tokens"] == 7
    stream = client.post("/v1/completions", json={"model": "tiny-llama", "prompt": "x",
                                                   "max_tokens": 5, "stream": True})
    assert stream.get_data().endswith(b"data: [DONE]\n\n")
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "lmhost_instances", state="loaded", type="llm") == 1
    assert metric(text, "lmhost_instances", state="loading", type="llm") == 0
    assert metric(text, "lmhost_generated_tokens_total", instance="tiny-llama") == 12
    assert metric(text, "lmhost_instance_queue_depth", instance="tiny-llama") == 0
    assert metric(text, "lmhost_instance_memory_bytes", instance="tiny-llama") > 1e6
    assert metric(text, "lmhost_host_memory_bytes", kind="available") > 0
    assert metric(text, "lmhost_supervisor_up") == 1

    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {
        "supervisor": "ok", "state_dir": "ok", "models_dir": "ok"}
    moved = live.settings.models_dir.with_name("moved-away")
    shutil.move(live.settings.models_dir, moved)
    try:
        not_ready = client.get("/readyz")
        error = not_ready.get_json()["error"]
        assert not_ready.status_code == 503 and error["param"] == "models_dir"
        assert error["type"] == "unavailable" and "is not a directory" in error["message"]
    finally:
        shutil.move(moved, live.settings.models_dir)
    assert client.get("/readyz").status_code == 200


def test_get_or_load_loads_for_an_inference_token_only_as_jit_would(live):
    """The SDK's ``model(key)``: inference scope (the JIT path), so with LMHOST_JIT=0 only an
    admin token makes it load."""
    import dataclasses
    import threading
    from types import SimpleNamespace

    from app.extensions import engine_of
    from app.sdk.framing import SdkError
    from app.sdk.models import ModelHandlers
    from app.sdk.session import Client

    app = create_app(dataclasses.replace(live.settings, jit=False))
    handlers = ModelHandlers(engine_of(app), "llm")
    sent = []
    channel = SimpleNamespace(session=SimpleNamespace(client=Client("x", "inference")),
                              send=sent.append, cancelled=threading.Event())
    with pytest.raises(SdkError, match=r"JIT loading is off \(LMHOST_JIT=0\).*admin"):
        handlers.get_or_load({"identifier": "tiny-llama"}, channel)
    assert live.table() == [] and sent == []
    channel.session.client = Client("x", "admin")
    handlers.get_or_load({"identifier": "tiny-llama"}, channel)
    assert [r["id"] for r in live.table()] == ["tiny-llama"]
    channel.session.client = Client("x", "inference")  # loaded: any token may use it
    handlers.get_or_load({"identifier": "tiny-llama"}, channel)
    assert sent[-1]["type"] == "alreadyLoaded"
