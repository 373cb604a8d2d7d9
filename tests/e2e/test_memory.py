"""Memory through the service as users meet it (`lmhost serve`, CPU mode, a limit that fits
one demo model): `lmhost load --estimate-only`, the memory table of `lmhost status`, a load
that does not fit as the CLI and both official SDK clients report it, and the TypeScript
client's `estimateResourcesUsage` answered from the same estimate as REST."""

from __future__ import annotations

import json
from pathlib import Path

import lmstudio
import pytest
import requests

from config import load_settings
from lmhost import synthetic
from tests.e2e.conftest import clean_env
from tests.e2e.sdk_support import Runner
from tests.e2e.test_cli import lmhost, ok
from workers import hugepages
from workers.catalog import Catalog
from workers.loadconfig import plan_load


def estimate(models_dir: Path, key: str) -> int:
    model, variant = Catalog(models_dir).resolve(key)
    return plan_load({}, model, variant, default_context_length=load_settings(env={}).context_length,
                     n_threads=1, huge_pages=hugepages.decided_here()).estimate.total_bytes


@pytest.fixture
def server(short_tmp, serve):
    """The demo models, served with a memory limit that fits one demo LLM and not two."""
    models = short_tmp / "models"
    synthetic.write_demo_models(models)
    limit = int(estimate(models, "tiny-llama") * 1.5)
    server = serve(models, "--workers", "1", env=clean_env(LMHOST_INSTANCE_THREADS="1",
                                                           LMHOST_MEMORY_LIMIT=str(limit)))
    server.limit, server.work = limit, short_tmp
    return server


@pytest.fixture
def url(server):
    return server.url


def post(url, path, body):
    return requests.post(url + path, json=body, timeout=60)


def test_load_estimate_only_prints_the_estimate_and_loads_nothing(server, url):
    lines = ok(lmhost("load", "tiny-llama", "--estimate-only", url=url)).splitlines()
    assert lines[0] == "Estimate for tiny-llama@f16 (context 2048, CPU mode):"
    assert lines[1].split() == ["PART", "TOTAL"]
    assert [line.split()[0] for line in lines[2:7]] == ["weights", "KV", "compute", "overhead",
                                                       "total"]
    assert lines[-2].startswith("Available now: ") and lines[-2].endswith(" of RAM")
    assert lines[-1] == "Verdict: fits"
    as_json = json.loads(ok(lmhost("load", "tiny-llama", "--estimate-only", "--json",
                                   "--context-length", "512", url=url)))
    rest = post(url, "/api/v1/models/load", {"model": "tiny-llama", "context_length": 512,
                                             "estimate_only": True}).json()
    assert as_json == rest and rest["load_config"]["context_length"] == 512
    assert json.loads(ok(lmhost("ps", "--json", url=url))) == []


def test_status_shows_memory_per_pool_and_instance(server, url):
    ok(lmhost("load", "tiny-llama", url=url))
    text = ok(lmhost("status", url=url))
    limit = f"{server.limit / 1000 / 1000:.1f} MB"
    assert f"Memory (CPU mode, guardrail strict, limit {limit})" in text
    lines = text.splitlines()
    pool_header = lines.index(next(line for line in lines if line.startswith("POOL")))
    assert lines[pool_header].split() == ["POOL", "TOTAL", "FREE", "RESERVED", "INSTANCES",
                                          "AVAILABLE"]
    assert lines[pool_header + 1].split()[0] == "RAM"
    instance_header = lines.index(next(line for line in lines if line.startswith("IDENTIFIER  ESTIMATE")))
    assert lines[instance_header].split() == ["IDENTIFIER", "ESTIMATE", "AFTER", "LOAD", "IN",
                                              "USE", "PEAK"]
    assert lines[instance_header + 1].split()[0] == "tiny-llama"
    memory = json.loads(ok(lmhost("status", "--json", url=url)))["memory"]
    assert memory["mode"] == "cpu" and memory["limit_bytes"] == server.limit
    assert [i["id"] for i in memory["instances"]] == ["tiny-llama"]


def test_a_load_that_does_not_fit_is_one_line_from_the_cli(url):
    ok(lmhost("load", "tiny-llama", url=url))
    failed = lmhost("load", "tiny-moe", url=url)
    assert failed.returncode == 1 and failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    assert line.startswith("lmhost: not enough memory to load 'tiny-moe'")
    assert "bytes" in line and "available" in line


def test_sdk_clients_see_the_shortfall_and_ts_estimates_resources(server, url):
    host = url.removeprefix("http://")
    with lmstudio.Client(host) as client:
        client.llm.load_new_instance("tiny-llama", "first")
        with pytest.raises(lmstudio.LMStudioServerError,
                           match=r"not enough memory to load 'tiny-moe'.*it needs [\d,]+ bytes"):
            client.llm.load_new_instance("tiny-moe", "second")
    rest = post(url, "/api/v1/models/load", {"model": "tiny-moe", "context_length": 512,
                                             "estimate_only": True}).json()
    run = Runner(url, server.work, host).node(
        'import { LMStudioClient } from "@lmstudio/sdk";\n'
        "const client = new LMStudioClient();\n"
        'const usage = await client.llm.estimateResourcesUsage("tiny-moe", { contextLength: 512 });\n'
        "console.log(JSON.stringify(usage));\n"
        "let refused = null;\n"
        'try { await client.llm.load("tiny-moe", { verbose: false }); }\n'
        "catch (error) { refused = error.message; }\n"
        "console.log(JSON.stringify(refused));\n"
        "process.exit(0);\n")
    usage_line, refused_line = run.stdout.splitlines()[-2:]
    usage = json.loads(usage_line)
    e = rest["estimate"]
    assert usage == {"memory": {
        "confidence": "high", "modelVramBytes": 0, "contextVramBytes": 0, "totalVramBytes": 0,
        "modelBytes": e["weights_bytes"], "contextBytes": e["kv_cache_bytes"] + e["compute_bytes"],
        "totalBytes": e["total_bytes"]}, "passesGuardrails": False}
    assert "not enough memory to load 'tiny-moe'" in json.loads(refused_line)
