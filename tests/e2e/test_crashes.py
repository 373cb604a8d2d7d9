"""A crashed instance is explained (issue "SIGILL on hosts that advertise AMX"): an instance
that dies by SIGILL, SIGSEGV, SIGBUS or SIGABRT is reported by the signal's name with the tail
of its stderr on the request it was serving, on a load, in the listing and in the log; SIGILL
also with the likely cause and the fix. Sending the instance the signal is enough."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import spare_pids, wait_for
from lmhost import synthetic
from workers.table import InstanceTable

NAMES = {signal.SIGILL: "SIGILL (illegal instruction)", signal.SIGSEGV: "SIGSEGV (segmentation fault)",
         signal.SIGBUS: "SIGBUS (bus error)", signal.SIGABRT: "SIGABRT (aborted)"}


@pytest.fixture
def server(short_tmp, serve):
    synthetic.write_demo_models(short_tmp / "models")
    return serve(short_tmp / "models", "--workers", "1")


def instance_pid(server, instance_id) -> int:
    return next(r["pid"] for r in InstanceTable(server.state_dir).read() if r["id"] == instance_id)


def last_failure(server, key) -> dict | None:
    models = server.get("/api/v1/models").json()["models"]
    return next(m for m in models if m["key"] == key).get("last_failure")


def load(server, **body) -> requests.Response:
    return requests.post(server.url + "/api/v1/models/load", json=body, timeout=60)


@pytest.mark.parametrize("sig", list(NAMES), ids=lambda s: signal.Signals(s).name)
def test_a_crash_mid_stream_is_named_on_the_request_the_listing_and_the_log(server, sig):
    assert load(server, model="tiny-llama", identifier="victim").status_code == 200
    pid = instance_pid(server, "victim")
    with requests.post(server.url + "/v1/completions", stream=True, timeout=60, json={
            "model": "victim", "prompt": "Once", "max_tokens": 2000, "stream": True}) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))
        assert json.loads(first[6:])["choices"]  # generating
        os.kill(pid, sig)
        rest = [line for line in lines if line.startswith(b"data: ")]
    error = json.loads(rest[-1][6:])["error"]
    assert (error["type"], error["code"]) == ("internal_error", "instance_crashed")
    assert f"instance 'victim' of model 'tiny-llama' crashed with {NAMES[sig]}" in error["message"]
    if sig == signal.SIGILL:
        assert "Likely cause" in error["message"]
        assert "pip install --force-reinstall --no-cache-dir llama-cpp-python" in error["message"]

    failure = last_failure(server, "tiny-llama")
    assert failure["instance_id"] == "victim" and failure["exit"] == NAMES[sig]
    assert failure["error"]["message"] == error["message"]
    assert not InstanceTable(server.state_dir).read()  # the row went with the process
    wait_for(lambda: error["message"] in server.log.read_text(), timeout=5,
             what="the explanation in the service's log")

    # the service goes on: the model loads again under the same identifier
    assert load(server, model="tiny-llama", identifier="victim").status_code == 200


def test_a_crash_under_a_non_streamed_request_answers_500_with_the_reason(server):
    assert load(server, model="tiny-llama").status_code == 200
    pid = instance_pid(server, "tiny-llama")
    table = InstanceTable(server.state_dir)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.post, server.url + "/v1/completions", timeout=60, json={
            "model": "tiny-llama", "prompt": "Once", "max_tokens": 2000})
        os.kill(pid, signal.SIGSTOP)  # hold it mid-request, whatever the machine's speed
        wait_for(lambda: _busy(table), timeout=10, what="the instance to take the request")
        os.kill(pid, signal.SIGSEGV)
        os.kill(pid, signal.SIGCONT)
        response = pending.result(timeout=60)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "instance_crashed" and NAMES[signal.SIGSEGV] in error["message"]


def _busy(table) -> bool:
    """The instance has accepted a job: it is stopped, so ask the kernel, not the instance:
    its socket has a connection beyond the listener (ss is not everywhere; /proc is)."""
    (row,) = table.read()
    return _connections(row["socket"]) > 0


def _connections(socket_path: str) -> int:
    with open("/proc/net/unix") as f:
        return sum(1 for line in f if line.rstrip().endswith(socket_path)) - 1


def test_a_crash_during_a_load_is_named_on_the_load_response(server):
    table = InstanceTable(server.state_dir)

    (spare_pid,) = wait_for(lambda: spare_pids(server.state_dir), timeout=15, what="the spare instance process")
    os.kill(spare_pid, signal.SIGSTOP)  # the load takes it and stalls
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, server, model="tiny-moe")
        wait_for(lambda: [(r["state"], r["pid"]) for r in table.read()] == [("loading", spare_pid)],
                 timeout=10, what="the load to take the frozen process")
        os.kill(spare_pid, signal.SIGBUS)
        os.kill(spare_pid, signal.SIGCONT)
        response = pending.result(timeout=60)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "model_load_failed"
    assert "instance 'tiny-moe' loading tiny-moe-F16.gguf crashed with SIGBUS" in error["message"]
    assert last_failure(server, "tiny-moe")["error"] == error
