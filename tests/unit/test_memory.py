"""Memory readings: the GPU path against a fake pynvml (one GPU, two GPUs, NVML errors at
init and mid-run), injected through `Nvml(module)` or ``sys.modules`` as the real module is;
RAM and per-process use from a fake /proc; waiting for an unload's memory to come back."""

from __future__ import annotations

import logging
import sys

import pytest

from tests import fake_pynvml
from tests.fake_pynvml import GiB, FakeGpu, NVMLError
from workers.memory import RELEASE_WAIT, Memory, read_process
from workers.nvml import Nvml

MiB = 1 << 20


class FakeProc:
    """/proc/meminfo and /proc/<pid>/status, written as the kernel writes them."""

    def __init__(self, root, total=16 * GiB, available=12 * GiB):
        self.root = root
        self.set_ram(total, available)

    def set_ram(self, total, available):
        self.total, self.available = total, available
        (self.root / "meminfo").write_text(
            f"MemTotal:       {total // 1024} kB\nMemFree:        1 kB\n"
            f"MemAvailable:   {available // 1024} kB\nBuffers:        0 kB\n")

    def add(self, pid, rss, file=0, peak=None):
        (self.root / str(pid)).mkdir(exist_ok=True)
        (self.root / str(pid) / "status").write_text(
            f"Name:\tpython\nVmHWM:\t{(peak or rss) // 1024} kB\nVmRSS:\t{rss // 1024} kB\n"
            f"RssAnon:\t{(rss - file) // 1024} kB\nRssFile:\t{file // 1024} kB\nThreads:\t4\n")

    def remove(self, pid):
        (self.root / str(pid) / "status").unlink()
        (self.root / str(pid)).rmdir()

    def exit(self, pid):
        """The process exits: its memory is available again."""
        rss = int((self.root / str(pid) / "status").read_text().split("VmRSS:\t")[1].split()[0])
        self.remove(pid)
        self.set_ram(self.total, self.available + rss * 1024)


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path)


def memory(proc, module, pids=(), **kwargs):
    return Memory(Nvml(module), pids=lambda: pids, proc=proc.root, **kwargs)


def test_one_gpu(proc):
    gpu = FakeGpu(total=80 * GiB, processes={101: 5 * GiB, 999: 1 * GiB})
    proc.add(101, rss=300 * MiB, file=200 * MiB)
    mem = memory(proc, fake_pynvml.make([gpu]), pids=(101,))
    reading = mem.read()
    assert reading.mode == "gpu" and mem.gpu_count() == 1
    (g,) = reading.gpus
    assert (g.name, g.total, g.used, g.reserved) == ("NVIDIA H200", 80 * GiB, 6 * GiB, 615 * MiB)
    assert g.free == 80 * GiB - 6 * GiB - 615 * MiB  # v2: the driver's reserve apart
    use = reading.processes[101]
    assert (use.gpu, use.ram, use.ram_file) == (5 * GiB, 300 * MiB, 200 * MiB)
    pools = reading.pools()
    assert (pools["gpu"].total, pools["gpu"].free) == (80 * GiB, g.free)
    assert pools["ram"].free == 12 * GiB - 200 * MiB  # the mapped model is not free RAM


def test_two_gpus_are_one_pool_and_a_process_on_both_counts_both(proc):
    gpus = [FakeGpu(name="NVIDIA H100", total=80 * GiB, processes={7: 2 * GiB}),
            FakeGpu(name="NVIDIA H100", total=80 * GiB, processes={7: 3 * GiB}, other=GiB)]
    proc.add(7, rss=100 * MiB)
    mem = memory(proc, fake_pynvml.make(gpus), pids=(7,))
    reading = mem.read()
    assert [g.index for g in reading.gpus] == [0, 1] and mem.gpu_count() == 2
    assert reading.processes[7].gpu == 5 * GiB
    assert mem.use(7) == reading.processes[7]  # one process alone: the same figures
    assert mem.use(8) is None  # no such process
    assert reading.pools()["gpu"].total == 160 * GiB
    assert reading.pools()["gpu"].free == sum(g.free for g in reading.gpus) \
        == 160 * GiB - 2 * 615 * MiB - 6 * GiB


def test_v1_memory_info_where_v2_is_missing(proc):
    mem = memory(proc, fake_pynvml.make([FakeGpu(total=8 * GiB, processes={1: GiB})], v2=False))
    (g,) = mem.read().gpus
    assert (g.used, g.reserved, g.free) == (GiB + 615 * MiB, 0, 8 * GiB - GiB - 615 * MiB)


def test_nvml_error_at_init_is_cpu_mode_with_one_log_line(proc, caplog):
    caplog.set_level(logging.INFO, "workers.memory")
    mem = memory(proc, fake_pynvml.make([FakeGpu()], init_error=NVMLError("Driver Not Loaded")))
    mem.start()
    for _ in range(3):
        reading = mem.read()
        assert reading.mode == "cpu" and reading.gpus == () and mem.gpu_count() == 0
    assert set(reading.pools()) == {"ram"}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "Driver Not Loaded" in line and "CPU mode" in line


def test_nvml_error_mid_run_switches_to_cpu_mode_once(proc, caplog):
    module = fake_pynvml.make([FakeGpu(processes={5: GiB})])
    proc.add(5, rss=50 * MiB)
    mem = memory(proc, module, pids=(5,))
    assert mem.read().mode == "gpu"
    module.fail(NVMLError("GPU is lost"))
    for _ in range(3):
        reading = mem.read()  # never raises
        assert reading.mode == "cpu" and reading.processes[5].gpu == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "GPU is lost" in warnings[0].getMessage()
    assert "CPU mode from now on" in mem.cpu_reason


def test_no_gpu_at_all_is_cpu_mode(proc):
    assert memory(proc, fake_pynvml.make([])).read().mode == "cpu"


def test_the_real_import_seam_takes_the_module_named_pynvml(proc, monkeypatch):
    module = fake_pynvml.make([FakeGpu(name="Fake GPU")])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    mem = Memory(pids=lambda: (), proc=proc.root)  # Nvml() imports pynvml itself
    assert [g.name for g in mem.read().gpus] == ["Fake GPU"]
    assert mem.nvml.driver_version == "580.159"


def test_ram_and_processes_in_cpu_mode(proc):
    proc.add(1, rss=400 * MiB, file=150 * MiB, peak=500 * MiB)
    proc.add(2, rss=100 * MiB, file=10 * MiB)
    mem = memory(proc, fake_pynvml.make([], init_error=NVMLError("no driver")), pids=(1, 2, 3))
    reading = mem.read()
    assert (reading.ram_total, reading.ram_available) == (16 * GiB, 12 * GiB)
    assert set(reading.processes) == {1, 2}  # 3 is gone
    assert reading.processes[1].to_json() == {"ram_bytes": 400 * MiB, "gpu_bytes": 0,
                                              "total_bytes": 400 * MiB, "ram_peak_bytes": 500 * MiB}
    assert mem.use(1) == reading.processes[1]
    assert reading.pools()["ram"].free == 12 * GiB - 160 * MiB


def test_a_zombie_has_no_memory(tmp_path):
    (tmp_path / "status").write_text("Name:\tpython\nState:\tZ (zombie)\nThreads:\t1\n")
    assert read_process(tmp_path / "status") is None
    assert read_process(tmp_path / "missing") is None


class Clock:
    def __init__(self):
        self.now = 0.0
        self.on_sleep = lambda: None

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.on_sleep()


def clocked(proc, module, pids):
    clock = Clock()
    return clock, Memory(Nvml(module), pids=lambda: pids, proc=proc.root, clock=clock,
                         sleep=clock.sleep)


def instance_gone(proc, gpus, pid=9, rss=500 * MiB):
    """Instance process `pid` is unloaded: asked to stop, it exits, the supervisor reaps it
    and its row goes."""
    proc.add(pid, rss=rss)
    pids = [pid]
    clock, mem = clocked(proc, fake_pynvml.make(gpus), pids)
    mem.before_stop(pid)
    proc.remove(pid)
    pids.clear()
    mem.gone(pid)
    return clock, mem


def gpu_instance_gone(proc):
    """An instance using 1 GiB of a GPU is unloaded; NVML lists it no more, but its memory is
    not shown free yet."""
    gpu = FakeGpu(total=80 * GiB, processes={9: GiB})
    clock, mem = instance_gone(proc, [gpu])
    gpu.processes.clear()
    gpu.other = GiB
    return gpu, clock, mem


def test_settle_waits_until_the_unloaded_gpu_memory_shows_free(proc):
    gpu, clock, mem = gpu_instance_gone(proc)
    held = iter([GiB, 900 * MiB, 100 * MiB])  # the driver catches up

    def driver_frees():
        gpu.other = next(held)
    clock.on_sleep = driver_frees
    shown = mem.settle()
    assert 0 < clock.now < 1.0  # waited for it, not for the deadline
    assert shown.pools()["gpu"].free == mem.read().pools()["gpu"].free  # the reading that showed it
    clock.on_sleep = lambda: pytest.fail("nothing pending: no wait")
    assert mem.settle() is None  # nothing pending: the caller reads for itself


def test_settle_is_bounded_when_the_memory_never_shows(proc, caplog):
    gpu, clock, mem = gpu_instance_gone(proc)  # and another process takes the memory meanwhile
    mem.settle()
    assert RELEASE_WAIT <= clock.now < RELEASE_WAIT + 0.1
    assert any("not shown free" in r.getMessage() for r in caplog.records)


def test_an_instance_in_ram_is_back_once_reaped_though_its_file_pages_stay_cached(proc):
    """MemAvailable does not grow by a CPU instance's whole RSS when it exits: its mapped
    model file stays in the page cache (counted available all along). Waiting for it would
    hold every load after an unload for the whole RELEASE_WAIT."""
    clock, mem = instance_gone(proc, [], rss=GiB)  # MemAvailable unchanged
    clock.on_sleep = lambda: pytest.fail("reaped: its memory is back, no wait")
    mem.settle()
    assert clock.now == 0.0


def test_gpu_release_waits_for_nvml_to_catch_up(proc):
    gpu = FakeGpu(total=80 * GiB, processes={4: 10 * GiB})
    clock, mem = instance_gone(proc, [gpu], pid=4)

    def nvml_catches_up():
        if clock.now >= 0.5:  # NVML lags after the process exits (NOTES.md: under a second)
            gpu.processes.clear()
    clock.on_sleep = nvml_catches_up
    mem.settle()
    assert 0.5 <= clock.now < 1.0


def test_without_a_baseline_a_gone_process_is_back_once_no_reading_lists_it(proc):
    """A crash or a TTL expiry: nobody noted a baseline; the process lists decide."""
    gpu = FakeGpu(total=80 * GiB, processes={5: GiB})
    clock, mem = clocked(proc, fake_pynvml.make([gpu]), [])
    mem.gone(5)
    clock.on_sleep = lambda: gpu.processes.clear() if clock.now >= 0.3 else None
    mem.settle()
    assert 0.3 <= clock.now < 0.5
    proc.add(6, rss=GiB)  # CPU: until /proc no longer has it (reaped)
    mem.gone(6)
    clock.on_sleep = lambda: proc.remove(6)
    mem.settle()
    mem.gone(None)  # never had a process: nothing to wait for
    mem.settle()


def test_a_refused_stop_leaves_no_baseline_behind(proc):
    proc.add(7, rss=GiB)
    pids = [7]
    clock, mem = clocked(proc, fake_pynvml.make([]), pids)
    mem.before_stop(7)
    mem.forget(7)  # it was serving: it stays
    proc.remove(7)
    pids.clear()
    mem.gone(7)  # much later it goes (say, a crash): judged by the process lists alone
    mem.settle()
    assert clock.now == 0.0
