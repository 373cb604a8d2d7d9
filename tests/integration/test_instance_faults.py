"""Faults and races with real processes (issue "Model instances"): slow loads, unloads of
loading instances, a killed supervisor, a killed HTTP worker, an unreadable table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from filelock import FileLock

from tests.helpers import our_processes, spare_pids, wait_for
from workers import client as supervisor_client
from workers import procs
from workers.statedir import StateDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def stalled_spare(live):
    """Freeze the spare process (SIGSTOP): the next load takes it and stays "loading" until
    the test lets it go on (SIGCONT). A real stall of a real process, no test hook."""
    (spare,) = wait_for(lambda: spare_pids(live.state_dir), timeout=10, what="the spare process")
    os.kill(spare, signal.SIGSTOP)
    yield spare
    try:
        os.kill(spare, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _status_of(live, key, instance_id):
    return next((i["status"] for i in live.instances(key) if i["id"] == instance_id), None)


def wait_until_stalled(live, instance_id, spare):
    """Wait until the load of `instance_id` runs in the frozen spare. Its row says "loading"
    from the start, before it takes a process: another load could take the spare first."""
    wait_for(lambda: any(r["id"] == instance_id and r["pid"] == spare for r in live.table()),
             timeout=10, what=f"the load of {instance_id!r} to take the frozen process")


def test_a_slow_load_blocks_nothing_else(live, stalled_spare):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: live.app.test_client().post(
            "/api/v1/models/load", json={"model": "tiny-llama", "identifier": "slow"}))
        wait_until_stalled(live, "slow", stalled_spare)
        assert _status_of(live, "tiny-llama", "slow") == "loading"
        started = time.monotonic()
        assert live.client.get("/api/v1/models").status_code == 200
        assert live.load(model="tiny-embed").status_code == 200
        assert live.load(model="tiny-moe", identifier="other").status_code == 200
        assert live.unload("other").status_code == 200
        assert time.monotonic() - started < 10
        assert not slow.done()

        os.kill(stalled_spare, signal.SIGCONT)
        response = slow.result(timeout=30)
    assert response.status_code == 200
    assert _status_of(live, "tiny-llama", "slow") == "loaded"


def test_unloading_a_loading_instance_fails_its_load_fast(live, stalled_spare):
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(lambda: live.app.test_client().post(
            "/api/v1/models/load", json={"model": "tiny-llama"}))
        wait_until_stalled(live, "tiny-llama", stalled_spare)
        assert live.unload("tiny-llama").get_json() == {"instance_id": "tiny-llama"}
        response = load.result(timeout=10)
    assert response.status_code == 422
    assert "unloaded while loading" in response.get_json()["error"]["message"]
    assert live.table() == []
    wait_for(lambda: stalled_spare not in our_processes(live.state_dir), timeout=5,
             what="the stalled process to be killed")


def _supervisor_pid(live) -> tuple[int, int]:
    pid, started = (int(x) for x in StateDir(live.state_dir).pid_file.read_text().split())
    return pid, started


def test_killed_supervisor_is_replaced_and_adopts_live_instances(live):
    live.load(model="tiny-llama")
    live.load(model="tiny-embed", identifier="emb", ttl=3600)
    listing_before = live.client.get("/api/v1/models").get_json()
    rows_before = {r["id"]: r for r in live.table()}
    old_pid, old_started = _supervisor_pid(live)

    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not procs.same_process(old_pid, old_started), timeout=5,
             what="the supervisor to die")
    # the instances live on, and the listing (read from the table) is unchanged
    assert all(procs.same_process(r["pid"], r["started"]) for r in rows_before.values())
    assert live.client.get("/api/v1/models").get_json() == listing_before

    # the next control call starts a new supervisor, which adopts them
    assert live.load(model="tiny-moe").status_code == 200
    new_pid, _ = _supervisor_pid(live)
    assert new_pid != old_pid
    ids = {i["id"] for m in live.client.get("/api/v1/models").get_json()["models"]
           for i in m["loaded_instances"]}
    assert ids == {"tiny-llama", "emb", "tiny-moe"}
    assert live.unload("tiny-llama").status_code == 200
    assert not procs.same_process(rows_before["tiny-llama"]["pid"], rows_before["tiny-llama"]["started"])
    assert live.unload("emb").status_code == 200


def test_unreadable_table_is_rebuilt_from_live_instances(live):
    live.load(model="tiny-llama", identifier="a/b")
    live.load(model="tiny-embed")
    pid, started = _supervisor_pid(live)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not procs.same_process(pid, started), timeout=5, what="the supervisor to die")
    (live.state_dir / "instances.json").write_text('{"instances": [tru')

    assert live.load(model="tiny-moe").status_code == 200  # restarts the supervisor
    assert sorted(r["id"] for r in live.table()) == ["a/b", "tiny-embed", "tiny-moe"]
    assert live.unload("a/b").status_code == 200


def test_control_calls_answer_503_while_the_supervisor_cannot_start(live, monkeypatch):
    pid, started = _supervisor_pid(live)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not procs.same_process(pid, started), timeout=5, what="the supervisor to die")
    monkeypatch.setattr(supervisor_client, "RESTART_WAIT", 1.0)
    # another worker "is starting it" (holds the start lock) and never finishes
    with FileLock(str(StateDir(live.state_dir).start_lock)):
        began = time.monotonic()
        response = live.load(model="tiny-llama")
        assert time.monotonic() - began < 5
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "unavailable"
    assert live.client.get("/api/v1/models").status_code == 200  # listing needs no supervisor
    assert live.load(model="tiny-llama").status_code == 200      # and then it comes back


_LOADER = """
import sys
from config import load_settings
from workers.client import SupervisorClient
settings = load_settings(env={}, models_dir=sys.argv[1], state_dir=sys.argv[2])
for event in SupervisorClient(settings).load({"model": "tiny-llama", "identifier": "orphan"}):
    print(event, flush=True)
"""


def test_killing_the_caller_mid_load_leaves_no_row_loading(live, stalled_spare):
    """An HTTP worker SIGKILLed during a load: the load finishes; nothing stays 'loading'."""
    caller = subprocess.Popen(
        [sys.executable, "-c", _LOADER, str(live.settings.models_dir), str(live.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.PIPE)
    try:
        wait_until_stalled(live, "orphan", stalled_spare)
        caller.kill()
        caller.wait(5)
    finally:
        if caller.poll() is None:
            caller.kill()
        caller.stdout.close()
    os.kill(stalled_spare, signal.SIGCONT)
    wait_for(lambda: _status_of(live, "tiny-llama", "orphan") == "loaded", timeout=15,
             what="the orphaned load to finish")
    assert live.unload("orphan").status_code == 200
