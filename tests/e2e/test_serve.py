"""`lmhost serve` and `lmhost demo` as a user runs them: real gunicorn, real HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest

from tests.e2e.conftest import LMHOST, clean_env
from tests.helpers import wait_for


def demo(models_dir) -> subprocess.CompletedProcess:
    return subprocess.run([LMHOST, "demo", "--models-dir", str(models_dir)], capture_output=True,
                          text=True, timeout=60, env=clean_env())


def test_demo_then_serve_lists_the_demo_models(tmp_path, serve):
    models_dir = tmp_path / "models"
    first = demo(models_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("wrote ") == 3
    again = demo(models_dir)  # never overwrites: the models dir already holds models
    assert again.returncode == 0 and "no demo models written" in again.stdout

    server = serve(models_dir, "--workers", "2")
    models = server.get("/api/v1/models").json()["models"]
    assert [(m["key"], m["type"]) for m in models] == [
        ("tiny-embed", "embedding"), ("tiny-llama", "llm"), ("tiny-moe", "llm")]

    # the seed's curl example, verbatim but for the port (no token configured: auth is off)
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-s", f"{server.url}/api/v1/models",
                              "-H", "Authorization: Bearer "], capture_output=True, text=True,
                             timeout=10)
        assert json.loads(out.stdout)["models"] == models


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal_and_leaves_no_process(tmp_path, serve, sig):
    server = serve(tmp_path / "models", "--workers", "2")
    assert server.get("/api/v1/models").json() == {"models": []}
    assert server.stop(sig) == 0
    wait_for(lambda: not server.process_group_alive(), timeout=10,
             what="every process of the service to exit")


def test_env_settings_are_used_and_flags_win(tmp_path, serve):
    models_dir = tmp_path / "env-models"
    demo(models_dir)
    env = clean_env(LMHOST_MODELS_DIR=str(models_dir), LMHOST_WORKERS="1")
    from_env = serve(None, env=env)
    assert len(from_env.get("/api/v1/models").json()["models"]) == 3
    from_flag = serve(tmp_path / "empty", env=env)
    assert from_flag.get("/api/v1/models").json() == {"models": []}


@pytest.mark.parametrize("args, env, named", [
    (["--port", "abc"], {}, "--port"),
    (["--workers", "0"], {}, "--workers"),
    ([], {"LMHOST_PORT": "99999"}, "LMHOST_PORT"),
    ([], {"LMHOST_WROKERS": "2"}, "LMHOST_WROKERS"),
])
def test_bad_settings_fail_the_start_naming_the_key(tmp_path, args, env, named):
    proc = subprocess.run([LMHOST, "serve", "--state-dir", str(tmp_path / "s"), *args],
                          capture_output=True, text=True, timeout=30, env=clean_env(**env))
    assert proc.returncode != 0
    assert f"configuration error: {named}:" in proc.stderr
