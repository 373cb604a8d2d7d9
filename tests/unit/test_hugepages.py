"""Weights in huge pages (workers.hugepages): the kernel's mode, the host's decision, the
supervisor's (once, with its GPUs) as loads and spawns see it, a load that does not fit, and
the environment instance processes get. No llama.cpp and no real process (the integration test
tests/integration/test_huge_pages.py has those)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from config import load_settings
from tests import fake_pynvml
from tests.fake_pynvml import FakeGpu
from tests.helpers import write_gguf
from tests.unit.test_admission_point import loaded, make_supervisor
from tests.unit.test_lifecycle import ENGINE
from workers import hugepages
from workers.catalog import Catalog
from workers.loadconfig import plan_load
from workers.nvml import Nvml
from workers.supervisor import Supervisor
from workers.supervisor.processes import instance_environment

GLIBC = "glibc 2.36"


def test_thp_mode_is_the_bracketed_word_and_unavailable_without_the_file(tmp_path):
    enabled = tmp_path / "enabled"
    for text, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
                       ("always madvise [never]\n", "never"), ("garbled\n", "unavailable")):
        enabled.write_text(text)
        assert hugepages.thp_mode(enabled) == mode
    assert hugepages.thp_mode(tmp_path / "missing") == "unavailable"


def test_the_host_allows_them_where_anonymous_memory_gets_huge_pages():
    assert hugepages.host_allows(True, "always", GLIBC)
    assert hugepages.host_allows(True, "madvise", GLIBC)
    assert hugepages.host_allows(True, "madvise", "glibc 2.35")
    assert not hugepages.host_allows(False, "always", GLIBC)  # LMHOST_HUGE_PAGES=0
    assert not hugepages.host_allows(True, "never", GLIBC)
    assert not hugepages.host_allows(True, "unavailable", GLIBC)
    # madvise needs malloc's advice: a glibc with the tunable, which the operator left on
    assert not hugepages.host_allows(True, "madvise", "glibc 2.31")
    assert not hugepages.host_allows(True, "madvise", "")  # not glibc
    assert not hugepages.host_allows(True, "madvise", GLIBC, "glibc.malloc.hugetlb=0")
    assert hugepages.host_allows(True, "madvise", GLIBC, "glibc.malloc.arena_max=2")
    # 2 takes reserved hugetlbfs pages, which a host seldom has: 4 KiB pages then
    assert not hugepages.host_allows(True, "madvise", GLIBC, "glibc.malloc.hugetlb=2")
    assert hugepages.host_allows(True, "madvise", GLIBC, "glibc.malloc.hugetlb=1")
    assert hugepages.host_allows(True, "always", "glibc 2.31", "glibc.malloc.hugetlb=0")


def test_a_load_uses_them_only_on_a_host_without_gpus():
    assert hugepages.weights_in_huge_pages(True, gpus=0)
    assert not hugepages.weights_in_huge_pages(True, gpus=1)
    assert not hugepages.weights_in_huge_pages(False, gpus=0)


def test_the_log_line_says_why(tmp_path):
    assert hugepages.describe(True, True, "madvise", 0) == "weights: read into huge pages (THP madvise)"
    assert "LMHOST_HUGE_PAGES=0" in hugepages.describe(False, False, "madvise", 0)
    assert "1 GPU(s)" in hugepages.describe(False, True, "always", 1)
    assert "THP never" in hugepages.describe(False, True, "never", 0)
    assert "nothing to advise" in hugepages.describe(False, True, "madvise", 0)


def test_a_plan_with_huge_pages_reads_the_file_and_mapped_undoes_it(tmp_path):
    write_gguf(tmp_path / "p" / "dense" / "d.gguf", context_length=2048,
               extra={"llama.block_count": 2, "llama.embedding_length": 64})
    model, variant = Catalog(tmp_path).resolve("dense")
    read, mapped = (plan_load({}, model, variant, default_context_length=4096, n_threads=3,
                              huge_pages=huge_pages) for huge_pages in (True, False))
    assert read.llama_kwargs["use_mmap"] is False
    assert "use_mmap" not in mapped.llama_kwargs  # llama-cpp-python's default: mapped
    assert read.mapped().llama_kwargs == mapped.llama_kwargs
    # the same weights in RAM; huge pages make partly touched buffers resident in 2 MiB steps
    assert read.estimate.ram["weights"] == mapped.estimate.ram["weights"]
    extra = read.estimate.ram["overhead"] - mapped.estimate.ram["overhead"]
    assert 2 << 20 <= extra < 2 * (2 << 20)  # a tiny model: the heap's step and a little more


def test_instances_get_mallocs_advice_added_to_the_operators_tunables():
    env = instance_environment({"PATH": "/bin"}, malloc_advice=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    for own, expected in (("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
                          ("", "glibc.malloc.hugetlb=1"), ("a=1::b=2", "a=1:b=2:glibc.malloc.hugetlb=1"),
                          ("glibc.malloc.hugetlb=2", "glibc.malloc.hugetlb=2")):
        env = instance_environment({"GLIBC_TUNABLES": own}, malloc_advice=True)
        assert env["GLIBC_TUNABLES"] == expected
    assert "GLIBC_TUNABLES" not in instance_environment({"PATH": "/bin"})
    assert instance_environment({"GLIBC_TUNABLES": "a=1"})["GLIBC_TUNABLES"] == "a=1"


def test_resident_in_huge_pages_reads_smaps_rollup(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "smaps_rollup").write_text(
        "Rss:              239472 kB\nAnonHugePages:    192512 kB\nShmemHugePages:        0 kB\n")
    assert hugepages.resident_in_huge_pages(42, proc=tmp_path) == 192512 * 1024
    assert hugepages.resident_in_huge_pages(43, proc=tmp_path) == 0  # gone


@pytest.mark.parametrize("gpus", [0, 1])
def test_the_supervisor_decides_once_with_its_gpus_for_spawns_and_loads(tmp_path, gpus):
    sup = make_supervisor(tmp_path, [FakeGpu()] * gpus or None)
    sup.host_allows_huge_pages = True
    sup.memory.start()
    sup.decide_huge_pages()
    with ThreadPoolExecutor(1) as pool:
        first = loaded(sup, pool)
        assert first.spec["llama_kwargs"].get("use_mmap", True) is bool(gpus)
        # NVML failing later (CPU mode from then on) leaves the decision as it was
        sup.module.fail(fake_pynvml.NVMLError("fell off the bus"))
        second = loaded(sup, pool, identifier="second")
    assert second.spec["llama_kwargs"].get("use_mmap", True) is bool(gpus)


def test_the_launcher_advises_malloc_as_the_supervisor_decided(tmp_path):
    settings = load_settings(env={}, models_dir=tmp_path / "m", state_dir=tmp_path / "s",
                             spare_instances=0)
    sup = Supervisor(settings, ENGINE, host_allows_huge_pages=True)
    sup.memory.nvml = Nvml(fake_pynvml.make([], init_error=fake_pynvml.NVMLError("no driver")))
    assert sup.spares.launcher.malloc_advice() is False  # nothing decided before `start`
    sup.memory.start()
    sup.decide_huge_pages()
    assert sup.spares.launcher.malloc_advice() is True


def test_a_load_let_in_although_it_does_not_fit_stays_mapped(tmp_path):
    sup = make_supervisor(tmp_path, None, guardrail="off", memory_limit=1 << 20)
    sup.host_allows_huge_pages = True
    sup.memory.start()
    sup.decide_huge_pages()
    with ThreadPoolExecutor(1) as pool:
        process = loaded(sup, pool)
    assert "use_mmap" not in process.spec["llama_kwargs"]  # pages the kernel can drop
