"""Many SDK clients at once: each holds one websocket per namespace it touched, and a socket
holds an HTTP worker thread for its life. Plain HTTP keeps its own threads (LMHOST_THREADS)
whatever the clients do, a socket over LMHOST_SDK_MAX_SOCKETS gets an error (not a stall), and
a stop with clients connected closes their sockets and leaves no process."""

from __future__ import annotations

import signal
import time

import lmstudio
import pytest
import requests

from tests.e2e.conftest import clean_env
from tests.e2e.sdk_clients import Holder
from tests.e2e.sdk_support import Runner, write_sdk_models
from tests.helpers import our_processes, wait_for

@pytest.fixture
def models(short_tmp):
    return write_sdk_models(short_tmp / "models")


@pytest.fixture
def holders(short_tmp):
    made = []

    def hold(host, count):
        made.append(Holder(host, count, short_tmp / f"clients-{len(made)}.log"))
        return made[-1]

    yield hold
    for holder in made:
        holder.close()


def test_forty_python_clients_do_not_starve_plain_http(models, serve, holders):
    server = serve(models, "--workers", "2")
    host = server.url.removeprefix("http://")
    holder = holders(host, 40)  # 120 websockets, each holding a thread of a worker
    for _ in range(20):
        listing = requests.get(server.url + "/api/v1/models", timeout=1.0)  # answers within 1 s
        assert listing.status_code == 200 and len(listing.json()["models"]) == 4
    loaded = requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-llama"},
                           timeout=30)
    assert loaded.status_code == 200
    assert holder.check() == "ok 40 failed 0"  # and every client is still served


def test_a_socket_over_the_limit_gets_an_error_not_a_stall(models, serve, short_tmp):
    server = serve(models, "--workers", "1", env=clean_env(LMHOST_SDK_MAX_SOCKETS="2"))
    host = server.url.removeprefix("http://")
    first = lmstudio.Client(host)
    first.llm.list_loaded()
    first.list_downloaded_models()  # two sockets: the limit
    with lmstudio.Client(host) as second:
        with pytest.raises(lmstudio.LMStudioServerError, match="LMHOST_SDK_MAX_SOCKETS"):
            second.llm.list_loaded()
    refused = Runner(server.url, short_tmp, host).node(
        'import { LMStudioClient } from "@lmstudio/sdk";\n'
        "const client = new LMStudioClient();\n"
        "try { await client.llm.listLoaded(); console.log('served'); }\n"
        "catch (error) { console.log('refused: ' + error.message); }\n"
        "process.exit(0);\n")
    assert refused.stdout.startswith("refused:") and "LMHOST_SDK_MAX_SOCKETS" in refused.stdout
    assert server.get("/api/v1/models").status_code == 200  # plain HTTP is not affected
    first.close()

    def served_again():
        with lmstudio.Client(host) as third:
            try:
                return third.llm.list_loaded() == []
            except lmstudio.LMStudioServerError:
                return False
    wait_for(served_again, timeout=20, what="a new client to be served once sockets closed")


def test_sigterm_with_clients_connected_closes_them_and_leaves_no_process(models, serve, holders):
    server = serve(models, "--workers", "2")
    host = server.url.removeprefix("http://")
    with lmstudio.Client(host) as client:
        client.llm.model("tiny-llama")
    holder = holders(host, 40)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=15) == 0  # within gunicorn's graceful timeout
    stopped_in = time.monotonic() - started
    wait_for(lambda: not server.process_group_alive() and not our_processes(server.state_dir),
             timeout=10, what="every process of the service to exit")
    answer = holder.check()  # the clients see closed sockets: errors, no hang
    assert answer.startswith("ok 0 failed 40"), answer
    print(f"stopped in {stopped_in:.1f} s with 40 SDK clients connected")
