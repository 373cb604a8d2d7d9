"""Faults under load: while clients run, SIGKILL random instances, the supervisor and an HTTP
worker, and SIGSTOP an instance. Every client request either succeeds or gets a clean error
(the contract's error shape; a connection cut only by a killed HTTP worker), nothing hangs past
its timeout, and afterwards the service converges to a consistent table."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest
import requests

from tests.helpers import our_processes, wait_for
from tests.soak.test_churn import service_processes
from workers.table import InstanceTable

pytestmark = pytest.mark.soak

ROUNDS = 4
REQUEST_TIMEOUT = 60
CLEAN_STATUSES = {404, 409, 422, 429, 500, 503}  # with the contract's error body


def instance_pids(server) -> dict[str, int]:
    return {r["id"]: r["pid"] for r in InstanceTable(server.state_dir).read()
            if r["state"] == "loaded" and r["pid"]}


class Clients:
    """Clients in threads: every answer is sorted as a success, a clean error or a failure."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.outcomes = Counter()
        self.failures: list[str] = []
        self.worker_killed_at = 0.0  # connections cut around this time are expected
        self.threads: list[threading.Thread] = []

    def request(self, method: str, path: str, body: dict | None = None) -> None:
        started = time.monotonic()
        try:
            response = requests.request(method, self.url + path, json=body,
                                        timeout=REQUEST_TIMEOUT)
        except requests.Timeout:
            self.failures.append(f"{path}: no answer in {REQUEST_TIMEOUT} s")
            return
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # (a body cut short is not a ConnectionError to requests)
            if abs(started - self.worker_killed_at) < REQUEST_TIMEOUT:
                self.outcomes["cut by the killed HTTP worker"] += 1
            else:
                self.failures.append(f"{path}: connection error {exc}")
            return
        if response.status_code == 200:
            self.outcomes["ok"] += 1
            return
        try:
            error = response.json()["error"]
            clean = (response.status_code in CLEAN_STATUSES and isinstance(error["message"], str)
                     and error["type"])
        except (ValueError, KeyError, TypeError):
            clean = False
        if clean:
            code = f" ({error['code']})" if error.get("code") else ""
            self.outcomes[f"{response.status_code} {error['type']}{code}"] += 1
        else:
            self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")

    def loop(self, action):
        def run():
            while not self.stop.is_set():
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - a client must not die unseen
                    self.failures.append(f"client thread: {exc!r}")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self.threads), "a client hung"


def test_faults_under_load(service, summary):
    rng = random.Random(7)
    url = service.url
    for identifier in ("a", "b"):
        requests.post(url + "/api/v1/models/load", timeout=60,
                      json={"model": "tiny-llama", "identifier": identifier}).raise_for_status()
    clients = Clients(url)
    clients.loop(lambda: clients.request("GET", "/api/v1/models"))
    clients.loop(lambda: clients.request("POST", "/v1/completions", {
        "model": "tiny-llama", "prompt": "Once", "max_tokens": 16}))  # JIT when none is left
    clients.loop(lambda: clients.request("POST", "/v1/completions", {
        "model": rng.choice(["a", "b"]), "prompt": "Once", "max_tokens": 16}))

    def churn():
        clients.request("POST", "/api/v1/models/load", {"model": "tiny-moe", "identifier": "c"})
        clients.request("POST", "/api/v1/models/unload", {"instance_id": "c"})
        for identifier in ("a", "b"):  # killed ones come back (409 while they live)
            clients.request("POST", "/api/v1/models/load",
                            {"model": "tiny-llama", "identifier": identifier})
    clients.loop(churn)

    faults = Counter()
    try:
        for _ in range(ROUNDS):
            time.sleep(3)
            pids = instance_pids(service)
            if pids:
                victim = rng.choice(sorted(pids))
                os.kill(pids[victim], signal.SIGKILL)
                faults["SIGKILL of an instance"] += 1
            time.sleep(3)
            pids = instance_pids(service)
            if pids:
                frozen = pids[rng.choice(sorted(pids))]
                os.kill(frozen, signal.SIGSTOP)
                time.sleep(4)
                os.kill(frozen, signal.SIGCONT)
                faults["SIGSTOP of an instance (4 s)"] += 1
            time.sleep(3)
            os.kill(service_processes(service)["supervisor"], signal.SIGKILL)
            faults["SIGKILL of the supervisor"] += 1
            time.sleep(3)
            worker = service_processes(service)["worker 1"]
            clients.worker_killed_at = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            faults["SIGKILL of an HTTP worker"] += 1
    finally:
        clients.join()

    # converges: a supervisor answers, the table and the listing agree with what runs
    def consistent():
        try:
            listed = {i["id"] for m in requests.get(url + "/api/v1/models", timeout=10).json()["models"]
                      for i in m["loaded_instances"] if i["status"] == "loaded"}
        except (requests.RequestException, ValueError, KeyError):
            return False
        rows = {r["id"]: r for r in InstanceTable(service.state_dir).read()}
        running = {pid for pid in our_processes(service.state_dir)
                   if b"workers.instance" in open(f"/proc/{pid}/cmdline", "rb").read()}
        owned = {r["pid"] for r in rows.values()}
        spares = running - owned
        return (set(rows) == listed and owned <= running and len(spares) <= 1
                and all(r["state"] == "loaded" for r in rows.values()))
    wait_for(consistent, timeout=60, what="the table, the listing and the processes to agree")
    requests.post(url + "/v1/completions", timeout=60, json={
        "model": "tiny-llama", "prompt": "x", "max_tokens": 4}).raise_for_status()

    summary("faults under load: " + ", ".join(f"{n} x {what}" for what, n in faults.items()))
    summary("  answers: " + ", ".join(f"{n} {what}" for what, n in clients.outcomes.most_common())
            + f"; {len(clients.failures)} unclean or hung")
    assert not clients.failures, clients.failures[:10]
    assert clients.outcomes["ok"] > 0
