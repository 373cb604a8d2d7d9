"""Zero-config discovery: ``lmhost serve`` also listens on the first free SDK discovery port,
so the seeds' ``lm.llm()`` and ``new LMStudioClient()`` find it with no host at all.

Each test runs the service in a network namespace of its own: its loopback's discovery ports
are free (or taken on purpose), whatever other services and test runs hold on the host."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.sdk_support import (PY_KEY, SEED_KEY, TS_MODEL, Namespace, Runner, handles,
                                   run_seed_002, run_seed_003, stop, write_sdk_models)

GREETS = ("import sys, requests; print(requests.get(f'http://127.0.0.1:{sys.argv[1]}"
          "/lmstudio-greeting', timeout=5).json())")


@pytest.fixture(scope="module")
def models():
    work = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))
    write_sdk_models(work / "models")
    yield work / "models"
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def namespaced(short_tmp, models):
    """Start ``lmhost serve`` in a fresh network namespace: ``start(occupied=(), **env)``."""
    made = []

    def start(occupied=(), **env):
        ns = Namespace(occupied)
        made.append((ns, None))
        server = ns.serve(short_tmp, models, **env)
        made[-1] = (ns, server)
        return ns, server, Runner(server.url, short_tmp, host=None, prefix=ns.prefix)

    yield start
    for ns, server in made:
        try:
            if server is not None:
                stop(server)
        finally:
            ns.close()


def discovery_lines(server) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if "SDK discovery" in line]


def test_seed_snippets_run_verbatim_with_discovery(namespaced):
    ns, server, run = namespaced()
    assert [line.split("] ")[-1] for line in discovery_lines(server)] == [
        "SDK discovery: also listening at http://127.0.0.1:41343 "
        "(first free of 41343, 52993, 16141, 39414, 22931)"]
    assert run._run([sys.executable, "-c", GREETS, "41343"], 30, True).stdout.strip() == "{'lmstudio': True}"
    run_seed_002(run)
    run_seed_003(run)


def test_a_taken_discovery_port_is_passed_over_and_both_clients_still_find_the_service(namespaced):
    # another HTTP service (it answers 501 to the greeting) holds the first two ports
    ns, server, run = namespaced(occupied=(41343, 52993))
    (line,) = discovery_lines(server)
    assert "also listening at http://127.0.0.1:16141" in line
    assert handles(run.python(PY_KEY)) == {"llama": SEED_KEY}  # probes 41343, 52993, then 16141
    assert handles(run.node(TS_MODEL)) == {"llama": SEED_KEY}  # races all five
    assert list(run.instances()) == [SEED_KEY]


def test_no_free_discovery_port_is_one_warning_and_the_service_starts(namespaced):
    ns, server, run = namespaced(occupied=(41343, 52993, 16141, 39414, 22931))
    (line,) = discovery_lines(server)
    assert "[WARNING]" in line and "none of the ports 41343, 52993, 16141, 39414, 22931" in line
    assert run.rest("GET", "/api/v1/models")["models"]  # serving on its own port
    explicit = Runner(server.url, run.work, host="127.0.0.1:1234", prefix=ns.prefix)
    assert handles(explicit.python(PY_KEY)) == {"llama": SEED_KEY}


def test_discovery_can_be_turned_off(namespaced):
    ns, server, run = namespaced(LMHOST_SDK_DISCOVERY="0")
    assert discovery_lines(server) == []
    refused = run._run([sys.executable, "-c", GREETS, "41343"], 30, False)
    assert refused.returncode != 0 and "ConnectionError" in refused.stderr
    no_host = run.python(PY_KEY, check=False)
    assert no_host.returncode != 0 and "not reachable" in no_host.stderr
