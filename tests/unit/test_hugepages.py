"""Weights in huge pages (workers.hugepages): the kernel's mode, the host's and each load's
decision, and the environment instance processes get."""

from __future__ import annotations

from tests.unit.test_loadconfig import catalog  # noqa: F401 (the fixture)
from workers import hugepages
from workers.loadconfig import plan_load
from workers.supervisor.processes import instance_environment


def test_thp_mode_is_the_bracketed_word_and_unavailable_without_the_file(tmp_path):
    enabled = tmp_path / "enabled"
    for text, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
                       ("always madvise [never]\n", "never"), ("garbled\n", "unavailable")):
        enabled.write_text(text)
        assert hugepages.thp_mode(enabled) == mode
    assert hugepages.thp_mode(tmp_path / "missing") == "unavailable"


def test_the_host_allows_them_only_with_the_setting_on_and_thp_usable():
    assert hugepages.host_allows(True, "madvise") and hugepages.host_allows(True, "always")
    assert not hugepages.host_allows(True, "never")
    assert not hugepages.host_allows(True, "unavailable")
    assert not hugepages.host_allows(False, "always")


def test_a_load_uses_them_only_on_a_host_without_gpus():
    assert hugepages.weights_in_huge_pages(True, gpus=0)
    assert not hugepages.weights_in_huge_pages(True, gpus=1)
    assert not hugepages.weights_in_huge_pages(False, gpus=0)


def test_a_load_with_huge_pages_reads_the_file_and_one_without_maps_it(catalog):  # noqa: F811
    model, variant = catalog.resolve("dense")
    read, mapped = (plan_load({}, model, variant, default_context_length=4096, n_threads=3,
                              huge_pages=huge_pages) for huge_pages in (True, False))
    assert read.llama_kwargs["use_mmap"] is False
    assert "use_mmap" not in mapped.llama_kwargs  # llama-cpp-python's default: mapped
    assert {k: v for k, v in read.llama_kwargs.items() if k != "use_mmap"} == mapped.llama_kwargs
    assert read.estimate == mapped.estimate  # the same bytes in RAM either way


def test_instances_get_mallocs_huge_page_advice_added_to_the_operators_tunables():
    env = instance_environment({"PATH": "/bin"}, huge_pages=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    env = instance_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, huge_pages=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # the operator's own choice of the same tunable stands
    env = instance_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, huge_pages=True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
    assert "GLIBC_TUNABLES" not in instance_environment({"PATH": "/bin"})
    assert instance_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
                                )["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


def test_resident_in_huge_pages_reads_this_process_and_is_zero_for_none():
    assert hugepages.resident_in_huge_pages() >= 0
    assert hugepages.resident_in_huge_pages(2**31) == 0  # no such process
