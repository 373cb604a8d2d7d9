"""Load and unload through the HTTP API, with a real supervisor, real instance processes and
real llama.cpp on the demo models (seeds 000, 002, 003, 004)."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import break_model, our_processes, wait_for
from lmhost import synthetic
from workers import procs
from workers.supervisor.processes import OPENMP_SPIN_COUNT


def test_load_echo_listing_and_unload(live):
    response = live.load(model="tiny-llama", echo_load_config=True)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["type"] == "llm" and body["status"] == "loaded"
    assert body["model_instance_id"] == body["instance_id"] == "tiny-llama"
    assert 0 < body["load_time_seconds"] < 30
    # a dense LLM echoes every LLM field but num_experts; context defaults to 4096 capped at 2048
    assert body["load_config"] == {"context_length": 2048, "eval_batch_size": 512,
                                   "flash_attention": False, "offload_kv_cache_to_gpu": True}

    (instance,) = live.instances("tiny-llama")
    assert instance == {"id": "tiny-llama", "config": body["load_config"], "status": "loaded"}
    (row,) = live.table()
    assert procs.same_process(row["pid"], row["started"])
    # llama.cpp's OpenMP threads sleep after ~1 ms at a barrier, leaving cores to the relay
    environ = open(f"/proc/{row['pid']}/environ", "rb").read().split(b"\0")
    assert f"GOMP_SPINCOUNT={OPENMP_SPIN_COUNT}".encode() in environ

    assert live.unload("tiny-llama").get_json() == {"instance_id": "tiny-llama"}
    assert live.instances("tiny-llama") == []
    assert live.table() == []
    assert not procs.same_process(row["pid"], row["started"])


def test_load_config_per_model_type(live):
    moe = live.load(model="tiny-moe", num_experts=1, context_length=512, eval_batch_size=64,
                    flash_attention=True, offload_kv_cache_to_gpu=False, echo_load_config=True)
    assert moe.get_json()["load_config"] == {
        "context_length": 512, "eval_batch_size": 64, "flash_attention": True,
        "offload_kv_cache_to_gpu": False, "num_experts": 1}
    default_moe = live.load(model="tiny-moe", echo_load_config=True).get_json()
    assert default_moe["load_config"]["num_experts"] == 2  # the model's expert_used_count
    # embedding models echo context_length only; LLM-only fields do not apply
    embed = live.load(model="lmhost/tiny-embed", flash_attention=True, eval_batch_size=8,
                      echo_load_config=True).get_json()
    assert embed["type"] == "embedding"
    assert embed["load_config"] == {"context_length": 512}
    dense = live.load(model="tiny-llama", num_experts=3, echo_load_config=True).get_json()
    assert "num_experts" not in dense["load_config"]  # ignored for dense models
    no_echo = live.load(model="tiny-llama").get_json()
    assert "load_config" not in no_echo


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny-moe", "num_experts": 0}, "num_experts"),
    ({"model": "tiny-moe", "num_experts": 5}, "num_experts"),
    ({"model": "tiny-llama", "context_length": 0}, "context_length"),
    ({"model": "tiny-llama", "context_length": 4097}, "context_length"),
    ({"model": "tiny-llama", "context_length": 1.5}, "context_length"),
    ({"model": "tiny-llama", "context_length": "2048"}, "context_length"),
    ({"model": "tiny-llama", "flash_attention": "yes"}, "flash_attention"),
    ({"model": "tiny-llama", "ttl": 0}, "ttl"),
    ({"model": "tiny-llama", "identifier": ""}, "identifier"),
    ({"model": "tiny-llama", "identifier": "a\nb"}, "identifier"),
    ({"model": "tiny-llama", "gpu_offload": 1.5}, "gpu_offload"),
    ({"model": "tiny-llama", "gpu_offload": "half"}, "gpu_offload"),
    ({"model": "tiny-llama", "context": 100}, "context"),
    ({"model": 5}, "model"),
    ({}, "model"),
])
def test_bad_load_requests_start_nothing(live, body, param):
    response = live.load(**body)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request" and error["param"] == param
    assert live.table() == []


def test_unknown_model_and_instance(live):
    response = live.load(model="no-such-model")
    assert response.status_code == 404
    assert response.get_json()["error"]["type"] == "model_not_found"
    response = live.load(model="../../etc/passwd")
    assert response.status_code == 404
    response = live.unload("nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["type"] == "instance_not_found"
    assert live.client.post("/api/v1/models/unload", json={}).status_code == 400


def test_default_identifiers_and_conflicts(live):
    ids = [live.load(model="tiny-llama").get_json()["instance_id"] for _ in range(3)]
    assert ids == ["tiny-llama", "tiny-llama:2", "tiny-llama:3"]
    assert live.load(model="lmhost/tiny-llama").get_json()["instance_id"] == "lmhost/tiny-llama"
    named = live.load(model="tiny-llama", identifier="second-llama").get_json()
    assert named["instance_id"] == "second-llama"
    again = live.load(model="tiny-embed", identifier="second-llama")
    assert again.status_code == 409
    assert again.get_json()["error"]["type"] == "identifier_conflict"
    assert [i["id"] for i in live.instances("tiny-llama")] == [
        "tiny-llama", "tiny-llama:2", "tiny-llama:3", "lmhost/tiny-llama", "second-llama"]


def test_twenty_concurrent_loads_with_one_identifier(live):
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: live.load(model="tiny-llama", identifier="only"),
                                  range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 19
    assert [row["id"] for row in live.table()] == ["only"]


def test_twenty_concurrent_get_or_load_load_once(live):
    with ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(lambda _: live.load(model="tiny-moe", reuse_existing=True).get_json(),
                               range(20)))
    assert {b["instance_id"] for b in bodies} == {"tiny-moe"}
    assert sorted(b["reused"] for b in bodies) == [False] + [True] * 19
    assert len(live.table()) == 1


def test_progress_over_sse_is_monotonic_and_ends_loaded(live):
    response = live.client.post("/api/v1/models/load", json={"model": "tiny-llama"},
                                headers={"Accept": "text/event-stream"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = [block.split("\n") for block in response.get_data(as_text=True).strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    data = [json.loads(e[1].removeprefix("data: ")) for e in events]
    assert names[-1] == "loaded" and set(names[:-1]) == {"progress"}
    progress = [d["progress"] for d in data[:-1]]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 3
    assert data[-1]["instance_id"] == "tiny-llama"

    # an error known up front still gets its HTTP status, not a 200 stream
    response = live.client.post("/api/v1/models/load", json={"model": "nope"},
                                headers={"Accept": "text/event-stream"})
    assert response.status_code == 404


def test_sigkill_of_an_instance_drops_its_row_at_once(live):
    live.load(model="tiny-llama")
    live.load(model="tiny-embed")
    rows = {r["id"]: r for r in live.table()}
    os.kill(rows["tiny-llama"]["pid"], signal.SIGKILL)
    # noticed through its pidfd, not by a periodic check: bounded generously for busy machines
    wait_for(lambda: [r["id"] for r in live.table()] == ["tiny-embed"], timeout=5,
             interval=0.01, what="the killed instance's row to go")
    assert procs.same_process(rows["tiny-embed"]["pid"], rows["tiny-embed"]["started"])
    assert live.load(model="tiny-llama").status_code == 200
    assert live.unload("tiny-embed").status_code == 200


def test_corrupt_model_file_is_422_with_llama_cpp_reason(live):
    good = synthetic.write_dense_llama(live.settings.models_dir / "bad" / "broken-GGUF" / "broken.gguf")
    break_model(good.path)  # whole (the catalog lists it), but a tensor llama.cpp needs is missing
    response = live.load(model="broken")
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "model_load_failed"
    assert "broken.gguf" in error["message"]
    assert "llama_model_load" in error["message"] or "tensor" in error["message"], error["message"]
    assert live.table() == []
    spares = 1  # the pre-started spare is the only instance-like process left
    wait_for(lambda: len(our_processes(live.state_dir)) == 1 + spares, timeout=5,
             what="the failed instance process to be gone")


def test_ttl_unloads_an_idle_instance(live):
    live.load(model="tiny-embed", ttl=1)
    assert live.instances("tiny-embed")[0]["ttl_seconds"] == 1
    wait_for(lambda: live.table() == [], timeout=5, what="the TTL to unload the instance")


def test_mlx_model_is_refused_clearly(live):
    folder = live.settings.models_dir / "mlx-community" / "tiny-4bit"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    response = live.load(model="tiny-4bit")
    assert response.status_code == 422
    assert "MLX" in response.get_json()["error"]["message"]
    assert live.table() == []


def test_logs_of_cleanly_stopped_instances_are_removed_failures_kept(live):
    logs = live.state_dir / "logs"
    live.load(model="tiny-llama")
    (row,) = live.table()
    assert (logs / f"{row['handle']}.log").exists()
    live.unload("tiny-llama")
    assert not (logs / f"{row['handle']}.log").exists()
    broken = synthetic.write_dense_llama(live.settings.models_dir / "bad" / "cut-GGUF" / "cut.gguf")
    break_model(broken.path)
    assert live.load(model="cut").status_code == 422
    kept = [p for p in logs.iterdir() if "error loading model" in p.read_text()]
    assert len(kept) == 1  # the failed load's log stays, for whoever investigates
