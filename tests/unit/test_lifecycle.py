"""The supervisor's lifecycle pieces driven with fake processes (the process seam of
`workers.supervisor.processes`) and an injected wall clock: every transition of the diagram in
`workers.records`, the get-or-load race, TTL expiry, eviction, crashes, unloads that time out.
No llama.cpp, no real process; waits are on conditions the fakes fulfil."""

from __future__ import annotations

import errno
import os
import queue
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from config import load_settings
from tests.helpers import wait_for, write_gguf
from workers.engine_probe import Verdict
from workers.errors import IdentifierConflict, ModelLoadFailed, Unavailable
from workers.records import State
from workers.supervisor import Supervisor
from workers.table import InstanceTable, write_file

ENGINE = Verdict(usable=True, extra_bufts=False, conclusive=True, reason="test")


class FakeProcess:
    """Stands in for an instance process: the test feeds its events, and it answers the ops
    the supervisor asks as `answers` says; it "exits" by closing its exit pipe."""

    count = 0

    def __init__(self):
        FakeProcess.count += 1
        self.handle = f"fake{FakeProcess.count:08d}"
        self.pid, self.started = 100000 + FakeProcess.count, 1
        self.spec = None
        self.spec_given = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self.asked: list[dict] = []
        self.signals: list[int] = []
        self.answers = {"shutdown": {"ok": True}, "expire": {"expired": False},
                        "evict": {"evicted": True}}
        self.stop_on = {"shutdown", "expire", "evict"}  # ops after which it exits (if agreed)
        self.code: int | None = None
        self._exit_r, self._exit_w = os.pipe()

    # the seam
    def send_spec(self, spec):
        self.spec = spec
        self.spec_given.set()

    def events(self):
        while (event := self._events.get()) is not None:
            yield event

    def ask(self, socket_path, request, timeout=5.0):
        self.asked.append(request)
        answer = self.answers[request["op"]]
        if request["op"] in self.stop_on and (answer.get("ok") or answer.get("expired")
                                             or answer.get("evicted")):
            self.exit(0)
        return answer

    def signal(self, sig):
        self.signals.append(sig)
        if sig == signal.SIGKILL:
            self.exit(-signal.SIGKILL)
        return True

    def exit_fd(self):
        return os.dup(self._exit_r)

    def reap(self):
        return self.code

    def alive(self):
        return self.code is None

    def dismiss(self):
        self.exit(0)

    def wait_exit(self, timeout):
        return self.code is not None

    # what the test does
    def emit(self, **event):
        self._events.put(event)

    def exit(self, code):
        if self.code is None:
            self.code = code
            self._events.put(None)
            os.close(self._exit_w)


class FakeLauncher:
    def __init__(self):
        self.spawned: list[FakeProcess] = []

    def spawn(self):
        process = FakeProcess()
        self.spawned.append(process)
        return process


class WallClock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def sup(tmp_path):
    write_gguf(tmp_path / "models" / "pub" / "m-GGUF" / "m-Q8_0.gguf", name="M",
               context_length=4096)
    settings = load_settings(env={}, models_dir=tmp_path / "models", state_dir=tmp_path / "s",
                             spare_instances=0, unload_timeout=0)
    launcher = FakeLauncher()
    supervisor = Supervisor(settings, ENGINE, launcher=launcher)
    supervisor.registry.wall_clock = WallClock()
    supervisor.retirer.exit_margin = 0.5  # what a fake gets to exit before the kill
    supervisor.launcher = launcher
    threading.Thread(target=supervisor.deaths.run, daemon=True).start()
    yield supervisor
    supervisor.stopping.set()


def start_load(sup, pool, **request):
    """A load in the background, and its process once the supervisor has handed it its spec."""
    given = {id(p) for p in sup.launcher.spawned if p.spec_given.is_set()}
    future = pool.submit(sup.load, {"model": "m", **request}, lambda event: None)
    (process,) = wait_for(lambda: [p for p in sup.launcher.spawned
                                   if p.spec_given.is_set() and id(p) not in given],
                          timeout=5, what="the load to start a process")
    return future, process


def states(sup) -> dict:
    return {row["id"]: row["state"] for row in InstanceTable(sup.settings.state_dir).read()}


def test_load_then_unload_walks_the_diagram(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool, identifier="a", ttl=60)
        assert states(sup) == {"a": "loading"}
        assert process.spec["extra_bufts"] is False  # the engine probe's verdict
        process.emit(event="progress", progress=0.5)
        wait_for(lambda: sup.registry.instances["a"].progress == 0.5, timeout=5, what="progress")
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.25)
        result = future.result(timeout=5)
    assert result["instance_id"] == "a" and result["load_time_seconds"] == 0.25
    row = InstanceTable(sup.settings.state_dir).read()[0]
    assert (row["state"], row["created"], row["ttl"]) == ("loaded", 1_700_000_000.0, 60)

    assert sup.unload("a") == {"instance_id": "a"}
    assert process.asked == [{"op": "shutdown", "graceful_timeout": 0.0}]
    assert states(sup) == {} and not InstanceTable(sup.settings.state_dir).read_failures()


def report_and_load(sup, process, steps) -> None:
    """The fake instance reports `steps` and loads; returns once the registry says LOADED."""
    for step in steps:
        process.emit(event="progress", progress=step)
    process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
    wait_for(lambda: sup.registry.instances["m"].state is State.LOADED, timeout=5,
             what="the load")


def test_a_caller_that_wakes_late_still_gets_every_progress_step(sup):
    # the caller's thread is held in its first emit while the instance reports every step and
    # loads (a quick load on a busy machine): it must still send each step, not jump to 100%
    emitted, release = [], threading.Event()

    def emit(event):
        emitted.append(event["progress"])
        release.wait(timeout=5)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sup.load, {"model": "m"}, emit)
        wait_for(lambda: emitted == [0.0], timeout=5, what="the first step")
        (process,) = sup.launcher.spawned
        report_and_load(sup, process, (0.25, 0.5, 0.75))
        release.set()
        assert future.result(timeout=5)["status"] == "loaded"
    assert emitted == [0.0, 0.25, 0.5, 0.75, 1.0]

    joined = []  # one that asks once it is loaded gets 100% only
    assert sup.load({"model": "m", "reuse_existing": True}, lambda e: joined.append(e))["reused"]
    assert joined == [{"event": "progress", "progress": 1.0}]


def test_the_caller_that_starts_a_load_gets_every_step_even_if_it_looks_after_the_load(sup):
    # its thread may be descheduled between starting the process and looking at the steps
    loader, looking = sup.loader, threading.Event()
    original = loader._await_loaded

    def late(*args):
        assert looking.wait(10)
        return original(*args)

    loader._await_loaded = late
    emitted = []
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sup.load, {"model": "m"}, lambda e: emitted.append(e["progress"]))
        (process,) = wait_for(lambda: [p for p in sup.launcher.spawned if p.spec_given.is_set()],
                              timeout=5, what="the load to start a process")
        report_and_load(sup, process, (0.3, 0.6))
        looking.set()
        assert future.result(timeout=5)["status"] == "loaded"
    assert emitted == [0.0, 0.3, 0.6, 1.0]


def test_a_late_loaded_event_never_revives_a_cancelled_load(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool)
        assert sup.unload("m") == {"instance_id": "m"}
        with pytest.raises(ModelLoadFailed, match="cancelled"):
            future.result(timeout=5)
    assert process.signals == [signal.SIGKILL]
    instance_gone = not sup.registry.instances
    process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)  # too late
    assert instance_gone and states(sup) == {}
    assert not InstanceTable(sup.settings.state_dir).read_failures()  # asked for: no failure


def test_get_or_load_loads_once_and_identifiers_stay_unique(sup):
    with ThreadPoolExecutor(4) as pool:
        first, process = start_load(sup, pool, reuse_existing=True)
        others = [pool.submit(sup.load, {"model": "m", "reuse_existing": True}, lambda e: None)
                  for _ in range(3)]
        with pytest.raises(IdentifierConflict):
            sup.load({"model": "m", "identifier": "m"}, lambda e: None)
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        results = [f.result(timeout=5) for f in [first, *others]]
    assert len(sup.launcher.spawned) == 1
    assert [r["reused"] for r in results] == [False, True, True, True]


def test_a_crash_while_loaded_is_recorded_with_its_signal(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool, identifier="a")
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    sup.state_dir.log(process.handle).write_text("ggml_abort: GGML_ASSERT(x) failed\n")
    sup.registry.wall_clock.now += 30
    process.exit(-signal.SIGABRT)
    (failure,) = wait_for(lambda: InstanceTable(sup.settings.state_dir).read_failures(),
                          timeout=5, what="the crash to be reaped and recorded")
    assert states(sup) == {}
    assert failure["instance_id"] == "a" and failure["time"] == 1_700_000_030.0
    assert failure["exit"] == "SIGABRT (aborted)" and failure["state"] == "loaded"
    assert failure["error"]["code"] == "instance_crashed"
    assert "GGML_ASSERT(x) failed" in failure["error"]["message"]


def test_a_failed_load_answers_with_its_reason(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool)
        sup.state_dir.log(process.handle).write_text("llama_model_load: error loading model: bad\n")
        process.emit(event="failed", message="Failed to load model from file")
        process.exit(1)
        with pytest.raises(ModelLoadFailed, match="error loading model: bad"):
            future.result(timeout=5)
    assert InstanceTable(sup.settings.state_dir).read_failures()[0]["exit"] == "exit code 1"


def test_an_instance_that_ignores_its_unload_is_killed(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool)
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    process.stop_on = set()  # it answers "ok" but never exits
    assert sup.unload("m") == {"instance_id": "m"}
    assert process.signals == [signal.SIGKILL] and states(sup) == {}


def test_ttl_expiry_retires_only_what_the_instance_agrees_to(sup):
    with ThreadPoolExecutor(2) as pool:
        futures = []
        for ident in ("busy", "idle"):
            future, process = start_load(sup, pool, identifier=ident, ttl=5)
            process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
            futures.append((future, process))
        for future, _ in futures:
            future.result(timeout=5)
    (_, busy), (_, idle) = futures
    busy.answers["expire"] = {"expired": False, "last_used_ago": 0.0}
    idle.answers["expire"] = {"expired": True, "last_used_ago": 7.0}
    for thread in sup.retirer.check_ttls():
        thread.join(5)
    assert states(sup) == {"busy": "loaded"}
    assert busy.asked == [{"op": "expire", "ttl": 5}]


def test_a_jit_load_evicts_the_idle_jit_instance_only(sup):
    with ThreadPoolExecutor(2) as pool:
        future, explicit = start_load(sup, pool, identifier="explicit")
        explicit.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
        future, old = start_load(sup, pool, identifier="old-jit", jit=True)
        old.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
        future, new = start_load(sup, pool, identifier="new-jit", jit=True)
        new.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    assert states(sup) == {"explicit": "loaded", "new-jit": "loaded"}
    assert old.asked == [{"op": "evict"}] and explicit.asked == []


def test_an_unknown_transition_is_refused(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool)
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    instance = sup.registry.instances["m"]
    with sup.registry.lock, pytest.raises(RuntimeError, match="loaded -> loading is not allowed"):
        sup.registry._move(instance, State.LOADING)


def test_shutdown_unloads_everything_and_dismisses_spares(sup):
    spare = sup.launcher.spawn()
    sup.spares.spares.append(spare)
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool)  # takes the spare
        assert process is spare
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    extra = sup.launcher.spawn()
    sup.spares.spares.append(extra)
    sup.stop()
    assert states(sup) == {} and extra.code == 0 and process.code == 0
    assert Path(sup.state_dir.log(extra.handle)).exists() is False


def test_a_table_that_cannot_be_written_refuses_loads_and_loses_nothing(sup):
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool, identifier="a")
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
    table = sup.registry.table
    before = table.path.read_bytes()

    def disk_full(path, body, durable):
        with open(path, "wb") as f:
            f.write(body[:10])  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    table.write_file = disk_full
    with pytest.raises(Unavailable, match="No space left on device"):
        sup.load({"model": "m", "identifier": "b"}, lambda event: None)
    assert table.path.read_bytes() == before  # the previous table, intact
    assert sorted(p.name for p in table.path.parent.glob("instances.json*")) == [
        "instances.json", "instances.json.lock"]  # no half-written file left behind
    assert len(sup.launcher.spawned) == 1  # nothing was started for the refused load

    assert sup.unload("a") == {"instance_id": "a"}  # the supervisor goes on, in memory
    assert table.path.read_bytes() == before

    table.write_file = write_file  # the disk has room again
    sup.registry.flush()
    assert states(sup) == {}
    with ThreadPoolExecutor(1) as pool:
        future, process = start_load(sup, pool, identifier="b")
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        assert future.result(timeout=5)["instance_id"] == "b"
