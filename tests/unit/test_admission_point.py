"""The admission decision point (`Loader.load`) driven with fake instance processes, a fake
/proc and a fake pynvml: GPU mode estimates and limits, evicting an idle instance while a
busy one stays, loads in flight reserved, and an NVML failure mid-run (CPU mode from then on).
No llama.cpp and no real process (tests/integration/test_memory.py has those)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from config import load_settings
from tests import fake_pynvml
from tests.fake_pynvml import GiB, FakeGpu, NVMLError
from tests.helpers import wait_for, write_gguf
from tests.unit.test_lifecycle import ENGINE, FakeLauncher, WallClock, start_load, states
from tests.unit.test_memory import FakeProc
from workers.errors import InsufficientMemory
from workers.estimate import CUDA_CONTEXT_BYTES
from workers.nvml import Nvml
from workers.supervisor import Supervisor

MiB = 1 << 20


def make_supervisor(tmp_path, gpus: list[FakeGpu] | None, **settings) -> Supervisor:
    write_gguf(tmp_path / "models" / "pub" / "m-GGUF" / "m-Q8_0.gguf", name="M", context_length=4096,
               extra={"llama.block_count": 2, "llama.embedding_length": 256,
                      "llama.attention.head_count": 4},
               tensors={"token_embd.weight": (64, 256), "blk.0.attn_q.weight": (256, 256),
                        "blk.1.attn_q.weight": (256, 256), "output.weight": (64, 256)})
    settings = load_settings(env={}, models_dir=tmp_path / "models", state_dir=tmp_path / "s",
                             spare_instances=0, unload_timeout=0, **settings)
    sup = Supervisor(settings, ENGINE, launcher=FakeLauncher())
    sup.launcher = sup.spares.launcher
    sup.registry.wall_clock = WallClock()
    sup.retirer.exit_margin = 0.5
    sup.proc = FakeProc(tmp_path)
    sup.memory.proc = sup.proc.root
    sup.module = fake_pynvml.make(gpus or [], init_error=None if gpus else NVMLError("no driver"))
    sup.memory.nvml = Nvml(sup.module)
    threading.Thread(target=sup.deaths.run, daemon=True).start()
    return sup


@pytest.fixture
def pool():
    with ThreadPoolExecutor(4) as executor:
        yield executor


def loaded(sup, pool, gpu=None, **request):
    future, process = start_load(sup, pool, **request)
    sup.proc.add(process.pid, rss=60 * MiB)
    if gpu is not None:
        gpu.processes[process.pid] = CUDA_CONTEXT_BYTES + 2 * MiB
    exit_process = process.exit

    def exit(code):  # its memory shows free again, in /proc and in NVML
        if process.code is None:
            sup.proc.exit(process.pid)
            if gpu is not None:
                gpu.processes.pop(process.pid, None)
        exit_process(code)
    process.exit = exit
    process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
    future.result(timeout=5)
    return process


def test_gpu_mode_estimates_on_the_gpu_and_the_limit_caps_vram(tmp_path, pool):
    gpu = FakeGpu(total=80 * GiB)
    one = CUDA_CONTEXT_BYTES + 10 * MiB  # what one instance of the test model needs on the GPU
    sup = make_supervisor(tmp_path, [gpu], memory_limit=int(1.5 * one), context_length=256)
    try:
        answer = sup.estimate({"model": "m"})
        assert answer["mode"] == "gpu" and answer["fits"]
        estimate = answer["estimate"]
        assert estimate["on_gpu"]["overhead_bytes"] == CUDA_CONTEXT_BYTES  # one GPU
        assert estimate["on_gpu"]["weights_bytes"] > 0 and estimate["gpu_bytes"] < one
        process = loaded(sup, pool, gpu, identifier="a")
        row = sup.registry.rows()[0]
        assert row["measured"]["gpu_bytes"] == CUDA_CONTEXT_BYTES + 2 * MiB
        assert row["estimate"] == estimate
        with pytest.raises(InsufficientMemory, match="of GPU memory"):
            sup.load({"model": "m", "identifier": "b"}, lambda event: None)
        assert len(sup.launcher.spawned) == 1 and states(sup) == {"a": "loaded"}
        report = sup.resources()
        (g,) = report["gpus"]
        assert (g["name"], g["total_bytes"]) == ("NVIDIA H200", 80 * GiB)
        gpu_pool = next(p for p in report["pools"] if p["pool"] == "gpu")
        assert gpu_pool["limit_bytes"] == int(1.5 * one)
        assert report["instances"][0]["in_use"]["gpu_bytes"] == gpu.processes[process.pid]
    finally:
        sup.stopping.set()


def test_two_gpus_get_a_cuda_context_each(tmp_path):
    sup = make_supervisor(tmp_path, [FakeGpu(), FakeGpu()])
    try:
        assert sup.estimate({"model": "m"})["estimate"]["on_gpu"]["overhead_bytes"] \
            == 2 * CUDA_CONTEXT_BYTES
        assert len(sup.resources()["gpus"]) == 2
    finally:
        sup.stopping.set()


def test_nvml_failing_mid_run_leaves_the_supervisor_in_cpu_mode(tmp_path, pool):
    gpu = FakeGpu()
    sup = make_supervisor(tmp_path, [gpu])
    try:
        assert sup.estimate({"model": "m"})["mode"] == "gpu"
        sup.module.fail(NVMLError("GPU is lost"))
        answer = sup.estimate({"model": "m"})
        assert answer["mode"] == "cpu" and answer["estimate"]["gpu_bytes"] == 0
        loaded(sup, pool, identifier="after")  # loads go on, checked against RAM
        report = sup.resources()
        assert report["mode"] == "cpu" and "GPU is lost" in report["cpu_mode_reason"]
    finally:
        sup.stopping.set()


def test_evict_takes_the_idle_one_and_never_the_busy_one(tmp_path, pool):
    one = make_supervisor(tmp_path / "probe", None).estimate({"model": "m"})["estimate"]["total_bytes"]
    sup = make_supervisor(tmp_path, None, guardrail="evict", evict_explicit=True,
                          memory_limit=int(2.5 * one))  # room for two, not three
    serving = {"busy": True, "queued": 2, "last_used": 50.0, "now": 60.0}
    try:
        busy = loaded(sup, pool, identifier="busy")
        busy.answers["evict"] = {"evicted": False}  # serving a request: it would refuse
        busy.answers["status"] = serving
        idle = loaded(sup, pool, identifier="idle")
        idle.answers["status"] = {"busy": False, "queued": 0, "last_used": 10.0, "now": 60.0}
        # loaded first, but serving now: "idle" (unused for 50 s) is the least recently used
        third = loaded(sup, pool, identifier="third")
        assert [r["op"] for r in busy.asked] == ["status"]
        assert [r["op"] for r in idle.asked] == ["status", "evict"]
        assert states(sup) == {"busy": "loaded", "third": "loaded"}
        assert third.spec["instance_id"] == "third"
        # nothing idle left: each is asked, refuses, and the load is refused; both stay
        third.answers.update(evict={"evicted": False}, status=serving)
        with pytest.raises(InsufficientMemory, match="no idle instance can make room"):
            sup.load({"model": "m", "identifier": "fourth"}, lambda event: None)
        assert set(states(sup)) == {"busy", "third"}
        assert [r["op"] for r in busy.asked] == ["status", "status", "evict"]
    finally:
        sup.stopping.set()


def test_a_load_in_flight_is_reserved(tmp_path, pool):
    sup = make_supervisor(tmp_path, None)
    one = sup.estimate({"model": "m"})["estimate"]["total_bytes"]
    sup.proc.set_ram(16 * GiB, int(1.5 * one))
    try:
        future, process = start_load(sup, pool, identifier="first")  # still loading
        with pytest.raises(InsufficientMemory):
            sup.load({"model": "m", "identifier": "second"}, lambda event: None)
        assert sup.estimate({"model": "m"})["fits"] is False
        process.emit(event="loaded", socket="/nowhere", load_time_seconds=0.1)
        future.result(timeout=5)
        wait_for(lambda: states(sup) == {"first": "loaded"}, timeout=5, what="the load")
    finally:
        sup.stopping.set()
