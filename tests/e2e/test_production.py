"""lmhost as a team runs it: real gunicorn with two HTTP workers behind a real nginx running
config/nginx.conf (TLS on loopback), API tokens with scopes, JSON logs. Through nginx: auth
401/403/200 on HTTP and on the SDK's sockets (the official TypeScript client with apiToken),
listing, load, a stream whose first chunk arrives while the model still generates, health,
readiness, a metrics scrape that counts the requests it made, request ids; a HUP of gunicorn's
master in the middle of a stream; and no token in any log. Also: the official Python client
(which sends no token), loopback trust, the refusal to serve a public address without tokens,
and README's deployment section being the very files tested here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import lmstudio
import pytest
import requests
from simple_websocket import Client as WsClient, ConnectionClosed

from lmhost import synthetic
from tests.e2e.conftest import LMHOST, clean_env, start_server
from tests.e2e.deploy_support import require, start_nginx
from tests.e2e.sdk_support import NODE_DIR, client_env, require_node, stop
from tests.helpers import api_token, files_with_tokens, wait_for
from workers.protocol import Channel
from workers.table import InstanceTable

ROOT = Path(__file__).resolve().parents[2]
ADMIN, INFERENCE, UNKNOWN = api_token(), api_token(), api_token()
UNKNOWN_SECRET = UNKNOWN.partition(":")[2]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def metric(text: str, name: str, **labels) -> float:
    """The sum of the series `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if all(found.get(k) == str(v) for k, v in labels.items()):
                total += float(value)
    return total


def worker_pids(master: int) -> set[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return {int(pid) for pid in f.read().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def instance_status(row) -> dict:
    with Channel.connect(row["socket"], 5) as channel:
        channel.send({"op": "status"})
        return channel.recv()


class Deployment:
    def __init__(self, work: Path):
        self.work = work
        models = work / "models"
        synthetic.write_demo_models(models)
        self.tokens = work / "tokens"  # as config/lmhost.service: a file, reread on HUP
        self.tokens.write_text(f"# the team's tokens\n{ADMIN}\n{INFERENCE}:inference\n")
        self.server = start_server(work, models, "--workers", "2", env=clean_env(
            LMHOST_API_TOKENS_FILE=str(self.tokens), LMHOST_FORWARDED_PROXIES="1",
            LMHOST_LOG_FORMAT="json", LMHOST_INSTANCE_THREADS="1", LMHOST_UNLOAD_TIMEOUT="5"))
        try:
            self.nginx = start_nginx(work / "nginx", int(self.server.url.rsplit(":", 1)[1]))
        except BaseException:
            stop(self.server)
            raise

    def rows(self) -> dict[str, dict]:
        return {r["id"]: r for r in InstanceTable(self.server.state_dir).read()}

    def log_lines(self) -> list[dict]:
        """The server log's JSON lines (gunicorn, the HTTP workers, the supervisor)."""
        lines = []
        for line in self.server.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def logs(self) -> list[Path]:
        """Every log of the deployment: the server's (gunicorn, workers, supervisor), each
        instance's, nginx's."""
        return [self.server.log, self.server.state_dir / "logs", *self.nginx.logs()]

    def close(self) -> None:
        self.nginx.stop()
        stop(self.server)


@pytest.fixture(scope="module")
def deployment():
    work = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))  # state dirs hold Unix sockets
    deployment = Deployment(work)
    try:
        yield deployment
    finally:
        deployment.close()
        leaked = files_with_tokens(work)
        shutil.rmtree(work, ignore_errors=True)
        assert not leaked, f"API tokens in logs: {leaked}"


def test_http_through_nginx_auth_listing_load_stream_health_metrics(deployment):
    nginx = deployment.nginx
    before = nginx.get("/metrics").text

    # auth: no token, a wrong one, a scope too small, then the right one
    assert nginx.get("/api/v1/models").status_code == 401
    wrong = nginx.get("/api/v1/models", headers=bearer(UNKNOWN))
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
    assert UNKNOWN_SECRET not in wrong.text
    listed = nginx.get("/api/v1/models", headers=bearer(INFERENCE))
    assert listed.status_code == 200
    assert sorted(m["key"] for m in listed.json()["models"]) == ["tiny-embed", "tiny-llama",
                                                                 "tiny-moe"]
    refused = nginx.post("/api/v1/models/load", json={"model": "tiny-llama"},
                         headers=bearer(INFERENCE))
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    loaded = nginx.post("/api/v1/models/load", json={"model": "tiny-llama"},
                        headers={**bearer(ADMIN), "X-Request-ID": "e2e-load-1"})
    assert loaded.status_code == 200 and loaded.json()["instance_id"] == "tiny-llama"
    assert loaded.headers["X-Request-ID"] == "e2e-load-1"
    # no id given: nginx makes one, lmhost answers with it
    assert re.fullmatch(r"[0-9a-f]{32}", listed.headers["X-Request-ID"])

    # a stream: its first chunk arrives while the model is still generating (nothing buffers)
    row = deployment.rows()["tiny-llama"]
    with nginx.post("/v1/chat/completions", stream=True, headers=bearer(INFERENCE), json={
            "model": "tiny-llama", "max_tokens": 1900, "stream": True,
            "messages": [{"role": "user", "content": "Say something."}]}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line).startswith(b"data: {")
        assert instance_status(row)["busy"], "the first chunk came after the generation ended"
        during = nginx.get("/metrics").text
        assert metric(during, "lmhost_instance_busy", instance="tiny-llama") == 1
        rest = [line for line in lines if line]
    assert rest[-1] == b"data: [DONE]" and len(rest) > 1000

    # monitoring needs no token
    assert nginx.get("/healthz").json() == {"status": "ok"}
    ready = nginx.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    # the scrape counts the requests made above, whichever worker served them and the scrape
    for _ in range(6):
        assert nginx.get("/api/v1/models", headers=bearer(ADMIN)).status_code == 200
    after = nginx.get("/metrics").text
    listing = {"route": "/api/v1/models", "method": "GET"}
    assert metric(after, "lmhost_http_requests_total", **listing, status=200) - metric(
        before, "lmhost_http_requests_total", **listing, status=200) == 7
    assert metric(after, "lmhost_http_requests_total", **listing, status=401) - metric(
        before, "lmhost_http_requests_total", **listing, status=401) == 2
    load_route = {"route": "/api/v1/models/load", "method": "POST"}
    assert metric(after, "lmhost_http_requests_total", **load_route, status=403) >= 1
    assert metric(after, "lmhost_http_requests_total", route="/v1/chat/completions",
                  status=200) >= 1
    assert metric(after, "lmhost_model_loads_total", model="tiny-llama", outcome="loaded") >= 1
    assert metric(after, "lmhost_model_load_duration_seconds_count", model="tiny-llama") >= 1
    assert metric(after, "lmhost_generated_tokens_total", instance="tiny-llama") >= 1900
    assert metric(after, "lmhost_instances", state="loaded", type="llm") == 1
    assert metric(after, "lmhost_supervisor_up") == 1
    assert all(line.split()[2].startswith("lmhost_")
               for line in after.splitlines() if line.startswith("# TYPE"))

    # one JSON log line per request: id, route, status, instance, the client behind nginx
    lines = [e for e in deployment.log_lines() if e.get("logger") == "lmhost.access"]
    load_line = next(e for e in lines if e.get("request_id") == "e2e-load-1")
    assert (load_line["method"], load_line["path"], load_line["status"]) == (
        "POST", "/api/v1/models/load", 200)
    assert load_line["instance"] == "tiny-llama" and load_line["scope"] == "admin"
    assert load_line["client"] == "127.0.0.1"
    chat_line = next(e for e in lines if e["path"] == "/v1/chat/completions")
    assert chat_line["instance"] == "tiny-llama" and chat_line["duration_ms"] > 0
    assert "Say something" not in deployment.server.log.read_text()  # no prompt text

    unloaded = nginx.post("/api/v1/models/unload", json={"instance_id": "tiny-llama"},
                          headers=bearer(ADMIN))
    assert unloaded.status_code == 200


def test_nginx_answers_its_own_errors_in_the_contracts_shape(deployment):
    too_big = deployment.nginx.post("/v1/completions", headers=bearer(INFERENCE),
                                    data=b"x" * (17 << 20))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "payload_too_large"


def test_typescript_client_with_api_token_through_nginx(deployment):
    node = require_node()
    env = {**client_env(), "NODE_EXTRA_CA_CERTS": str(deployment.nginx.cert)}
    proc = subprocess.run([node, str(NODE_DIR / "auth.mjs"), deployment.nginx.ws_url, ADMIN,
                           INFERENCE, UNKNOWN],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=deployment.work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for refused in (seen["noToken"], seen["unknownToken"]):
        assert "needs an API token" in refused and UNKNOWN_SECRET not in refused
    assert seen["inferenceListed"] == 0
    assert "scope is inference" in seen["inferenceLoad"]
    assert seen["inferenceGetOrLoad"] == "tiny-llama"      # get-or-load: the JIT path
    assert "scope is inference" in seen["inferenceUnload"]
    assert seen["adminLoaded"] == "ts-admin"
    assert seen["listed"] == ["tiny-llama", "ts-admin"]
    assert seen["afterUnload"] == []
    assert deployment.rows() == {}


def test_python_client_without_a_token_gets_a_clear_error(deployment):
    host = deployment.server.url.removeprefix("http://")  # lmstudio 1.5 speaks ws:// only
    with pytest.raises(lmstudio.LMStudioServerError) as info:
        with lmstudio.Client(host) as client:
            client.llm.list_loaded()
    assert "Authentication failed" in str(info.value)
    assert "LMHOST_SDK_TRUST_LOOPBACK" in str(info.value)


def test_cli_sends_its_token(deployment):
    def ps(**env):
        return subprocess.run([LMHOST, "ps", "--url", deployment.server.url], text=True,
                              capture_output=True, timeout=30, env=clean_env(**env))
    refused = ps()
    assert refused.returncode == 1 and "LMHOST_API_TOKEN" in refused.stderr
    assert ps(LMHOST_API_TOKEN=INFERENCE).returncode == 0


def test_hup_reloads_the_workers_while_a_stream_finishes_and_instances_stay(deployment):
    nginx, master = deployment.nginx, deployment.server.proc.pid
    assert nginx.post("/api/v1/models/load", json={"model": "tiny-llama"},
                      headers=bearer(ADMIN)).status_code == 200
    instance_pid = deployment.rows()["tiny-llama"]["pid"]
    old_workers = worker_pids(master)
    assert len(old_workers) == 2
    # an SDK socket, authenticated, on one of the old workers
    socket = WsClient.connect(deployment.server.url.replace("http", "ws") + "/llm")
    client_id, passkey = ADMIN.removeprefix("sk-lm-").split(":")
    socket.send(json.dumps({"authVersion": 1, "clientIdentifier": client_id,
                            "clientPasskey": passkey}))
    assert json.loads(socket.receive(10)) == {"success": True}

    with nginx.post("/v1/completions", stream=True, headers=bearer(INFERENCE), json={
            "model": "tiny-llama", "prompt": "x", "max_tokens": 1900, "stream": True}) as stream:
        lines = stream.iter_lines()
        chunks = [next(line for line in lines if line)]
        os.kill(master, signal.SIGHUP)
        new_workers = wait_for(lambda: (worker_pids(master) - old_workers
                                        if len(worker_pids(master) - old_workers) == 2 else None),
                               timeout=30, what="two new HTTP workers")
        assert any(alive(pid) for pid in old_workers), "the old workers did not wait"
        assert instance_status(deployment.rows()["tiny-llama"])["busy"]  # still generating
        chunks += [line for line in lines if line]
    assert chunks[-1] == b"data: [DONE]"
    texts = [json.loads(c[6:])["choices"][0] for c in chunks[:-1]]
    assert sum(1 for t in texts if t["text"]) == 1900 and texts[-1]["finish_reason"] == "length"

    wait_for(lambda: not any(alive(pid) for pid in old_workers), timeout=30,
             what="the old workers to exit once their stream ended")
    with pytest.raises(ConnectionClosed):  # the old worker closed its SDK socket
        while True:
            socket.receive(10)
    assert {pid for pid in worker_pids(master) if alive(pid)} == new_workers
    assert deployment.rows()["tiny-llama"]["pid"] == instance_pid  # the instance stayed
    assert nginx.get("/readyz").status_code == 200
    answer = nginx.post("/v1/completions", headers=bearer(INFERENCE),
                        json={"model": "tiny-llama", "prompt": "x", "max_tokens": 3})
    assert answer.json()["usage"]["completion_tokens"] == 3
    # the counters of the workers that left still count
    scraped = nginx.get("/metrics").text
    assert metric(scraped, "lmhost_http_requests_total", route="/v1/completions", status=200) >= 2
    assert metric(scraped, "lmhost_sdk_sockets", namespace="llm") == 0


def reload(deployment) -> set[int]:
    """HUP gunicorn's master; wait until only new workers are left. Their pids."""
    master = deployment.server.proc.pid
    old = worker_pids(master)
    os.kill(master, signal.SIGHUP)
    return wait_for(lambda: (lambda now: now if now and not now & old else None)(
        {pid for pid in worker_pids(master) if alive(pid)}), timeout=60,
        what="the old workers to be replaced")


def test_hup_rereads_the_tokens_file_and_a_bad_one_locks_everyone_out(deployment):
    nginx, newcomer = deployment.nginx, api_token()
    assert nginx.get("/api/v1/models", headers=bearer(newcomer)).status_code == 401
    deployment.tokens.write_text(f"{ADMIN}\n{newcomer}:inference\n")  # INFERENCE revoked
    reload(deployment)
    assert nginx.get("/api/v1/models", headers=bearer(newcomer)).status_code == 200
    assert nginx.get("/api/v1/models", headers=bearer(INFERENCE)).status_code == 401

    deployment.tokens.write_text(f"{ADMIN}\nnot a token\n")
    reload(deployment)
    assert nginx.get("/api/v1/models", headers=bearer(ADMIN)).status_code == 401
    ready = nginx.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["param"] == "api_tokens"
    assert "line 2" in ready.json()["error"]["message"]
    assert nginx.get("/healthz").status_code == 200  # up, and saying what is wrong
    assert any("API tokens" in e.get("message", "") and e["level"] == "error"
               for e in deployment.log_lines())

    deployment.tokens.write_text(f"{ADMIN}\n{INFERENCE}:inference\n")
    reload(deployment)
    assert nginx.get("/readyz").status_code == 200
    assert nginx.get("/api/v1/models", headers=bearer(INFERENCE)).status_code == 200
    assert deployment.rows()["tiny-llama"]["state"] == "loaded"  # three reloads later


def test_no_log_of_the_deployment_holds_a_token(deployment):
    assert all(path.exists() for path in deployment.logs())
    access = (deployment.nginx.work / "access.log").read_text()
    assert "/api/v1/models" in access  # nginx logged the requests, without their tokens
    assert files_with_tokens(*deployment.logs(), tokens=[ADMIN, INFERENCE, UNKNOWN]) == {}


# -- the Python client on loopback, the refusal to go public without tokens ---------------------

def test_loopback_trust_lets_the_python_client_in_but_not_through_a_proxy(short_tmp):
    models = short_tmp / "models"
    synthetic.write_demo_models(models)
    server = start_server(short_tmp, models, "--workers", "1", env=clean_env(
        LMHOST_API_TOKENS=ADMIN, LMHOST_SDK_TRUST_LOOPBACK="1"))
    try:
        host = server.url.removeprefix("http://")
        with lmstudio.Client(host) as client:
            assert [m.model_key for m in client.list_downloaded_models()] != []
        proxied = WsClient.connect(server.url.replace("http", "ws") + "/system",
                                   headers={"X-Forwarded-For": "203.0.113.5"})
        proxied.send(json.dumps({"authVersion": 1, "clientIdentifier": "guest:x",
                                 "clientPasskey": "y"}))
        answer = json.loads(proxied.receive(10))
        assert answer["success"] is False and "needs an API token" in answer["error"]
        assert requests.get(server.url + "/api/v1/models", timeout=10).status_code == 401
    finally:
        stop(server)


def test_serve_refuses_a_public_address_without_tokens(short_tmp):
    def serve(*args, **env):
        return subprocess.run([LMHOST, "serve", "--state-dir", str(short_tmp / "state"), *args],
                              capture_output=True, text=True, timeout=30, env=clean_env(**env))
    public = serve("--host", "0.0.0.0")
    assert public.returncode == 1
    assert "--host: 0.0.0.0 is not a loopback address" in public.stderr
    assert "LMHOST_ALLOW_UNAUTHENTICATED=1" in public.stderr
    (short_tmp / "tokens").write_text(f"{ADMIN}\nnot one token\n")
    bad_file = serve(LMHOST_API_TOKENS_FILE=str(short_tmp / "tokens"))
    assert bad_file.returncode == 1 and "tokens line 2:" in bad_file.stderr
    assert ADMIN not in bad_file.stderr + bad_file.stdout


# -- README's deployment section is what runs here ---------------------------------------------

def test_readme_shows_the_tested_deployment_files_verbatim():
    readme = (ROOT / "README.md").read_text()
    for name in ("nginx.conf", "lmhost.service"):
        text = (ROOT / "config" / name).read_text()
        fence = "```nginx\n" if name.endswith(".conf") else "```ini\n"
        assert fence + text + "```" in readme, f"README does not show config/{name} verbatim"


def test_the_systemd_unit_verifies(tmp_path):
    analyze = require("systemd-analyze")
    unit = tmp_path / "lmhost.service"
    # the unit names where the service is installed; verify it against a binary that exists
    unit.write_text((ROOT / "config" / "lmhost.service").read_text().replace(
        "/opt/lmhost/.venv/bin/lmhost", shutil.which("true")))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    text = unit.read_text()
    for setting in ("User=lmhost", "NoNewPrivileges=yes", "ProtectSystem=strict",
                    "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed",
                    "LMHOST_API_TOKENS_FILE="):
        assert setting in text
