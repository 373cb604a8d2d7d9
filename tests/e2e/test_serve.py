"""`lmhost serve` and `lmhost demo` as a user runs them: real gunicorn, real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import LMHOST, clean_env
from tests.helpers import our_processes, spare_pids, wait_for


def demo(models_dir) -> subprocess.CompletedProcess:
    return subprocess.run([LMHOST, "demo", "--models-dir", str(models_dir)], capture_output=True,
                          text=True, timeout=60, env=clean_env())


def test_demo_then_serve_lists_the_demo_models(tmp_path, serve):
    models_dir = tmp_path / "models"
    first = demo(models_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("wrote ") == 2
    again = demo(models_dir)  # never overwrites: the models dir already holds models
    assert again.returncode == 0 and "no demo models written" in again.stdout

    server = serve(models_dir, "--workers", "2")
    models = server.get("/api/v1/models").json()["models"]
    assert [(m["key"], m["type"]) for m in models] == [
        ("smollm2-135m-instruct", "llm"), ("tiny-embed", "embedding")]
    smol = models[0]
    assert (smol["publisher"], smol["architecture"]) == ("HuggingFaceTB", "llama")
    assert smol["quantization"]["name"] == "Q4_1"

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
    assert len(from_env.get("/api/v1/models").json()["models"]) == 2
    from_flag = serve(tmp_path / "empty", env=env)
    assert from_flag.get("/api/v1/models").json() == {"models": []}


def test_serve_starts_with_the_clients_LMHOST_URL_exported(tmp_path, serve):
    # LMHOST_URL is the CLI's setting: a user who exported it can still start the server
    server = serve(tmp_path / "models", env=clean_env(LMHOST_URL="http://lmhost.internal:8080"))
    assert server.get("/api/v1/models").json() == {"models": []}


@pytest.mark.parametrize("args, env, named", [
    (["--port", "abc"], {}, "--port"),
    (["--workers", "0"], {}, "--workers"),
    ([], {"LMHOST_PORT": "99999"}, "LMHOST_PORT"),
    ([], {"LMHOST_WROKERS": "2"}, "LMHOST_WROKERS"),
    ([], {"LMHOST_URL": "localhost:1234"}, "LMHOST_URL"),
])
def test_bad_settings_fail_the_start_naming_the_key(tmp_path, args, env, named):
    proc = subprocess.run([LMHOST, "serve", "--state-dir", str(tmp_path / "s"), *args],
                          capture_output=True, text=True, timeout=30, env=clean_env(**env))
    assert proc.returncode != 0
    assert f"configuration error: {named}:" in proc.stderr


SEED_000_CURL = """curl http://127.0.0.1:1234/api/v1/models/load \\
  -H "Authorization: Bearer $LM_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "openai/gpt-oss-20b",
    "context_length": 16384,
    "flash_attention": true,
    "echo_load_config": true,
  }'"""


def test_seed_load_example_verbatim_then_sigterm_stops_every_instance(short_tmp, serve):
    from lmhost import synthetic
    models = short_tmp / "models"
    synthetic.write_dense_llama(models / "openai" / "gpt-oss-20b-GGUF" / "gpt-oss-20b-Q8_0.gguf",
                                file_type="Q8_0", context_length=32768)
    synthetic.write_demo_models(models)
    server = serve(models)
    command = SEED_000_CURL.replace("127.0.0.1:1234", server.url.removeprefix("http://"))
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                         env={**clean_env(), "LM_API_TOKEN": ""})
    body = json.loads(out.stdout)
    assert body["model_instance_id"] == "openai/gpt-oss-20b" and body["status"] == "loaded"
    assert body["load_config"] == {"context_length": 16384, "eval_batch_size": 512,
                                   "flash_attention": True, "offload_kv_cache_to_gpu": True}
    for model in ("tiny-embed", "tiny-moe"):
        assert requests.post(server.url + "/api/v1/models/load", json={"model": model},
                             timeout=60).status_code == 200
    listed = {i["id"] for m in server.get("/api/v1/models").json()["models"]
              for i in m["loaded_instances"]}
    assert listed == {"openai/gpt-oss-20b", "tiny-embed", "tiny-moe"}
    assert len(our_processes(server.state_dir)) >= 5  # supervisor, 3 instances, a spare

    assert server.stop(signal.SIGTERM) == 0
    wait_for(lambda: not our_processes(server.state_dir), timeout=10,
             what="no process of the service to remain")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_sigkill_of_the_http_worker_during_a_load(short_tmp, serve):
    from lmhost import synthetic
    from workers.table import InstanceTable
    models = short_tmp / "models"
    synthetic.write_demo_models(models)
    server = serve(models, "--workers", "1")
    table = InstanceTable(server.state_dir)

    (spare_pid,) = wait_for(lambda: spare_pids(server.state_dir), timeout=15, what="the spare instance process")
    os.kill(spare_pid, signal.SIGSTOP)  # the load will take it and stall
    (worker,) = _children(server.proc.pid)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.post, server.url + "/api/v1/models/load",
                              json={"model": "tiny-llama"}, timeout=30)
        wait_for(lambda: [(r["state"], r["pid"]) for r in table.read()] == [("loading", spare_pid)],
                 timeout=10, what="the load to take the frozen process")
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(requests.ConnectionError):
            pending.result(timeout=30)
    os.kill(spare_pid, signal.SIGCONT)
    wait_for(lambda: [r["state"] for r in table.read()] == ["loaded"], timeout=15,
             what="the orphaned load to finish rather than stay 'loading'")
    # gunicorn replaced the worker; the instance is usable and can be unloaded
    wait_for(lambda: server.get("/healthz").status_code == 200, timeout=15, what="a new worker")
    response = requests.post(server.url + "/api/v1/models/unload",
                             json={"instance_id": "tiny-llama"}, timeout=30)
    assert response.json() == {"instance_id": "tiny-llama"}
