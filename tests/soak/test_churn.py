"""Churn: 200 load/unload cycles over the tiny models while listings, completions and an
official SDK client run concurrently; then no leftover process, no growth of the supervisor's
and the HTTP workers' descriptors, threads or memory beyond a small bound, and the table equal
to what is loaded."""

from __future__ import annotations

import threading
import time
from collections import Counter

import lmstudio
import pytest
import requests

from tests.helpers import our_processes, wait_for
from workers.statedir import StateDir
from workers.table import InstanceTable

pytestmark = pytest.mark.soak

CYCLES = 200
DEADLINE_S = 420          # the whole churn, bounded
FD_SLACK, THREAD_SLACK = 8, 8
RSS_GROWTH = 1.25         # at most 25 % more resident memory than after the warm-up


def usage(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {"fds": len(__import__("os").listdir(f"/proc/{pid}/fd")),
            "threads": int(status["Threads"]), "rss_kb": int(status["VmRSS"].split()[0])}


def service_processes(server) -> dict[str, int]:
    """The supervisor and the HTTP workers, by role."""
    supervisor = int(StateDir(server.state_dir).pid_file.read_text().split()[0])
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
        workers = sorted(int(p) for p in f.read().split())
    return {"supervisor": supervisor, **{f"worker {i + 1}": pid for i, pid in enumerate(workers)}}


def snapshot(server) -> dict[str, dict]:
    return {role: usage(pid) for role, pid in service_processes(server).items()}


class Background:
    """Clients looping until stopped, counting what they did and what failed."""

    def __init__(self):
        self.stop = threading.Event()
        self.done = Counter()
        self.failures: list[str] = []
        self.threads: list[threading.Thread] = []

    def run(self, name, action):
        def loop():
            while not self.stop.is_set():
                try:
                    action()
                    self.done[name] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    time.sleep(0.1)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def ok(response: requests.Response) -> None:
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"


def test_churn(service, summary):
    url = service.url
    post = lambda path, body: requests.post(url + path, json=body, timeout=60)  # noqa: E731
    ok(post("/api/v1/models/load", {"model": "tiny-llama", "identifier": "steady"}))

    def cycle(identifier: str, model: str) -> None:
        ok(post("/api/v1/models/load", {"model": model, "identifier": identifier}))
        ok(post("/api/v1/models/unload", {"instance_id": identifier}))

    for i in range(5):  # warm-up: pools, caches, the spare
        cycle(f"warm-{i}", "tiny-moe")
    before = snapshot(service)

    host = url.removeprefix("http://")
    background = Background()
    background.run("listing", lambda: ok(requests.get(url + "/api/v1/models", timeout=30)))
    background.run("completion", lambda: ok(post("/v1/completions", {
        "model": "steady", "prompt": "Once", "max_tokens": 8})))
    sdk = lmstudio.Client(host)

    def sdk_round():
        handle = sdk.embedding.model("tiny-embed")  # get-or-load
        assert handle.identifier and sdk.llm.list_loaded()
        handle.unload()
    background.run("sdk get-or-load/unload", sdk_round)

    started, cycles = time.monotonic(), 0
    try:
        while cycles < CYCLES and time.monotonic() - started < DEADLINE_S:
            cycle(f"churn-{cycles % 7}", ("tiny-moe", "tiny-llama")[cycles % 2])
            cycles += 1
    finally:
        background.join()
        sdk.close()
    took = time.monotonic() - started

    # converged: the table says what is loaded, and only that runs
    rows = InstanceTable(service.state_dir).read()
    assert [(r["id"], r["state"]) for r in rows] == [("steady", "loaded")]
    instances = [p for p in our_processes(service.state_dir)
                 if b"workers.instance" in open(f"/proc/{p}/cmdline", "rb").read()]
    wait_for(lambda: len([p for p in our_processes(service.state_dir)
                          if b"workers.instance" in open(f"/proc/{p}/cmdline", "rb").read()]) <= 2,
             timeout=30, what=f"only 'steady' and the spare left (now {len(instances)})")
    after = wait_for(lambda: _settled(service, before), timeout=60,
                     what="descriptors, threads and memory back within bounds")

    summary(f"churn: {cycles} load/unload cycles in {took:.0f} s with "
            + ", ".join(f"{n} {name}" for name, n in sorted(background.done.items()))
            + f" alongside: {len(background.failures)} failures")
    for role in before:
        b, a = before[role], after[role]
        summary(f"  {role}: fds {b['fds']} -> {a['fds']}, threads {b['threads']} -> "
                f"{a['threads']}, RSS {b['rss_kb'] // 1024} -> {a['rss_kb'] // 1024} MB")
    assert cycles == CYCLES, f"only {cycles} cycles in {DEADLINE_S} s"
    assert not background.failures, background.failures[:10]
    assert all(background.done[name] > 0 for name in ("listing", "completion",
                                                      "sdk get-or-load/unload"))


def _settled(server, before: dict) -> dict | None:
    now = snapshot(server)
    for role, b in before.items():
        a = now[role]
        if (a["fds"] > b["fds"] + FD_SLACK or a["threads"] > b["threads"] + THREAD_SLACK
                or a["rss_kb"] > b["rss_kb"] * RSS_GROWTH):
            return None
    return now
