"""Memory admission in CPU mode with a real supervisor, real instances and the ~150M-parameter
bench model: with LMHOST_MEMORY_LIMIT set so that one instance fits and two do not, the
guardrails (strict, evict, off), a busy instance never evicted, JIT loads through the same
decision, estimate_only, /api/v1/resources, and a truncated copy that is not a model."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from config import load_settings
from lmhost import synthetic
from tests.conftest import running_supervisor
from workers import hugepages, procs
from workers.catalog import Catalog
from workers.loadconfig import plan_load

CONTEXT = 1024  # small: a load is quick, and the bench model's estimate is ~270 MiB


@pytest.fixture(scope="module")
def models():
    """The bench model once per module, a second key for the same file (a symlink inside the
    models dir), and an interrupted download of the tiny demo model."""
    root = Path(tempfile.mkdtemp(prefix="lmh-mem-", dir="/tmp"))
    bench = synthetic.write_bench_model(root / "lmhost" / "bench-GGUF" / "bench-Q8_0.gguf")
    (root / "lmhost" / "twin-GGUF").mkdir(parents=True)
    (root / "lmhost" / "twin-GGUF" / "twin-Q8_0.gguf").symlink_to(bench.path)
    tiny = synthetic.write_dense_llama(root / "lmhost" / "partial-GGUF" / "partial-F16.gguf")
    tiny.path.write_bytes(tiny.path.read_bytes()[:tiny.path.stat().st_size - 4096])
    yield root
    shutil.rmtree(root, ignore_errors=True)


def estimate_of(models_dir, key="bench", context_length=CONTEXT) -> int:
    model, variant = Catalog(models_dir).resolve(key)
    plan = plan_load({"context_length": context_length}, model, variant,
                     default_context_length=4096, n_threads=1,
                     huge_pages=hugepages.decided_here())  # as the supervisor plans here
    return plan.estimate.total_bytes


@pytest.fixture
def mem(models, short_tmp, request):
    """A supervisor over `models` with a limit of 1.5 bench models, and settings from the
    test's parametrization (``indirect``)."""
    overrides = {"instance_threads": 1, "unload_timeout": 5, "context_length": CONTEXT,
                 "memory_limit": int(1.5 * estimate_of(models)), **getattr(request, "param", {})}
    settings = load_settings(env={}, models_dir=models, state_dir=short_tmp / "state",
                             **overrides)
    with running_supervisor(settings) as live:
        yield live


def loaded_ids(live) -> list[str]:
    return sorted(r["id"] for r in live.table())


def test_strict_refuses_the_second_load_with_needed_and_available_bytes(mem):
    first = mem.load(model="bench", identifier="first")
    assert first.status_code == 200, first.get_json()
    (row,) = mem.table()
    estimate = row["estimate"]["total_bytes"]
    assert estimate == estimate_of(mem.settings.models_dir)
    # measured right after the load: the weights, KV cache and process are resident; compute
    # buffers only once a long prompt runs (CPU), so it is below the estimate, not far below
    assert 0.5 * estimate < row["measured"]["total_bytes"] <= 1.15 * estimate

    second = mem.load(model="bench", identifier="second")
    assert second.status_code == 503
    error = second.get_json()["error"]
    assert error["type"] == "insufficient_memory"
    available = mem.settings.memory_limit - estimate
    assert f"it needs {estimate:,} bytes" in error["message"]
    assert f"and {available:,} bytes" in error["message"], error["message"]
    assert "LMHOST_MEMORY_LIMIT" in error["message"]
    assert loaded_ids(mem) == ["first"]  # nothing was started for it

    # estimate_only says the same, and loads nothing
    answer = mem.load(model="bench", estimate_only=True).get_json()
    assert (answer["fits"], answer["passes_guardrail"], answer["mode"]) == (False, False, "cpu")
    assert answer["estimate"]["total_bytes"] == estimate
    assert answer["available"] == {"ram_bytes": available}
    assert answer["model_key"] == "bench" and answer["load_config"]["context_length"] == CONTEXT
    assert loaded_ids(mem) == ["first"]

    # after an unload the next load fits (it waits, bounded, for the memory to show free)
    mem.unload("first")
    assert mem.load(model="bench", identifier="second").status_code == 200
    assert loaded_ids(mem) == ["second"]


@pytest.mark.parametrize("mem", [{"guardrail": "evict", "evict_explicit": True}], indirect=True)
def test_evict_unloads_the_idle_instance_and_loads(mem):
    assert mem.load(model="bench", identifier="first").status_code == 200
    (first,) = mem.table()
    response = mem.load(model="twin", identifier="second")
    assert response.status_code == 200, response.get_json()
    assert loaded_ids(mem) == ["second"]
    assert not procs.same_process(first["pid"], first["started"])


@pytest.mark.parametrize("mem", [{"guardrail": "evict"}], indirect=True)
def test_evict_leaves_explicitly_loaded_instances_without_evict_explicit(mem):
    assert mem.load(model="bench", identifier="explicit").status_code == 200
    response = mem.load(model="twin")
    assert response.status_code == 503
    assert "LMHOST_EVICT_EXPLICIT=0" in response.get_json()["error"]["message"]
    assert loaded_ids(mem) == ["explicit"]
    assert mem.load(model="twin", estimate_only=True).get_json()["passes_guardrail"] is False


@pytest.mark.parametrize("mem", [{"guardrail": "evict", "evict_explicit": True}], indirect=True)
def test_a_busy_instance_is_never_evicted(mem):
    assert mem.load(model="bench", identifier="busy").status_code == 200
    stream = mem.client.post("/v1/completions", json={
        "model": "busy", "prompt": "Once upon a time", "max_tokens": 400, "stream": True},
        buffered=False)
    chunks = stream.response  # the generation runs while we hold the stream
    first = next(chunks)
    assert first.startswith(b"data: ")
    response = mem.load(model="twin", identifier="second")
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["type"] == "insufficient_memory"
    assert loaded_ids(mem) == ["busy"]
    rest = b"".join(chunks)  # the generation was not cut: it ends as it should
    assert rest.rstrip().endswith(b"data: [DONE]")
    finish = [json.loads(line[6:]) for line in rest.splitlines()
              if line.startswith(b"data: {")][-1]["choices"][0]["finish_reason"]
    assert finish == "length"
    # idle now: it goes, and the load goes through
    assert mem.load(model="twin", identifier="second").status_code == 200
    assert loaded_ids(mem) == ["second"]


@pytest.mark.parametrize("mem", [{"guardrail": "off"}], indirect=True)
def test_off_loads_anyway(mem):
    assert mem.load(model="bench", identifier="a").status_code == 200
    assert mem.load(model="bench", identifier="b").status_code == 200
    assert loaded_ids(mem) == ["a", "b"]
    answer = mem.load(model="bench", estimate_only=True).get_json()
    assert (answer["fits"], answer["passes_guardrail"]) == (False, True)


def test_jit_loads_pass_through_admission(mem):
    assert mem.load(model="bench", identifier="explicit").status_code == 200
    response = mem.client.post("/v1/completions", json={"model": "twin", "prompt": "Hi",
                                                        "max_tokens": 2})
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "insufficient_memory"
    assert loaded_ids(mem) == ["explicit"]


def test_concurrent_loads_reserve_what_they_will_take(mem):
    """Loads in flight count as reserved: of several at once, exactly one is admitted."""
    results = []

    def load(identifier):
        results.append(mem.client.post("/api/v1/models/load", json={
            "model": "bench", "identifier": identifier}).status_code)
    threads = [threading.Thread(target=load, args=(f"c{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [200, 503, 503]
    assert len(mem.table()) == 1


def test_truncated_copy_is_not_listed_and_loading_it_is_404(mem):
    keys = [m["key"] for m in mem.client.get("/api/v1/models").get_json()["models"]]
    assert keys == ["bench", "twin"]
    for body in ({"model": "partial"}, {"model": "partial", "estimate_only": True}):
        response = mem.client.post("/api/v1/models/load", json=body)
        assert response.status_code == 404
        assert response.get_json()["error"]["type"] == "model_not_found"


def test_resources_show_pools_instances_estimates_and_use(mem):
    empty = mem.client.get("/api/v1/resources").get_json()
    assert (empty["mode"], empty["guardrail"], empty["evict_explicit"]) == ("cpu", "strict", False)
    assert "NVML" in empty["cpu_mode_reason"] and empty["gpus"] == []
    (ram,) = empty["pools"]
    assert ram["pool"] == "ram" and ram["limit_bytes"] == mem.settings.memory_limit
    assert ram["available_bytes"] == mem.settings.memory_limit and ram["reserved_bytes"] == 0
    assert 0 < ram["free_bytes"] <= empty["ram"]["available_bytes"] <= empty["ram"]["total_bytes"]

    assert mem.load(model="bench").status_code == 200
    body = mem.client.get("/api/v1/resources").get_json()
    (instance,) = body["instances"]
    estimate = instance["estimate"]["total_bytes"]
    assert (instance["id"], instance["state"], instance["jit"]) == ("bench", "loaded", False)
    assert instance["in_use"]["ram_bytes"] >= instance["measured"]["ram_bytes"] * 0.9
    # what the instance will still take (its compute buffers, touched at the first long prompt)
    assert instance["reserved_bytes"] == max(estimate - instance["in_use"]["ram_bytes"], 0)
    (ram,) = body["pools"]
    assert ram["instances_bytes"] == max(estimate, instance["in_use"]["ram_bytes"])
    assert ram["available_bytes"] == mem.settings.memory_limit - ram["instances_bytes"]
