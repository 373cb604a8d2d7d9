"""Weights in huge pages (`LMHOST_HUGE_PAGES`, workers.hugepages) with a real supervisor, real
instance processes and real llama.cpp: where the kernel gives transparent huge pages, a loaded
model's weights are the instance's own memory in huge pages and its file is not mapped; with
the setting off (or no THP) the file is mapped, as llama.cpp does by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmhost import synthetic
from workers import hugepages

MiB = 1 << 20


def load_mid_model(live) -> tuple[Path, dict]:
    """A ~9 MB model (a few whole huge pages of weights), loaded; its file and table row."""
    path = synthetic.write_dense_llama(
        live.settings.models_dir / "lmhost" / "mid-llama-GGUF" / "mid-llama-F16.gguf",
        seed=3, n_embd=256, n_layer=4, n_ff=1024, name="Mid Llama").path
    response = live.load(model="mid-llama")
    assert response.status_code == 200, response.get_json()
    (row,) = live.table()
    return path, row


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def tunables(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((e.decode().split("=", 1)[1] for e in environ
                 if e.startswith(b"GLIBC_TUNABLES=")), "")


def generates(live) -> bool:
    response = live.client.post("/v1/completions", json={
        "model": "mid-llama", "prompt": "Hello", "max_tokens": 4, "temperature": 0})
    return response.status_code == 200 and response.get_json()["usage"]["completion_tokens"] > 0


def test_weights_are_in_huge_pages_where_the_host_has_them(live):
    path, row = load_mid_model(live)
    if hugepages.decided_here():  # what the supervisor decided here
        assert str(path) not in mapped_files(row["pid"])  # read into memory, not mapped
        assert hugepages.resident_in_huge_pages(row["pid"]) >= 2 * MiB
        assert "glibc.malloc.hugetlb=1" in tunables(row["pid"]).split(":")
    else:  # nothing would put them in huge pages (THP never, no glibc advice, GPUs): mapped
        assert str(path) in mapped_files(row["pid"])
        assert "glibc.malloc.hugetlb" not in tunables(row["pid"])
    assert generates(live)


@pytest.mark.parametrize("live", [{"huge_pages": False}], indirect=True)
def test_with_the_setting_off_the_file_is_mapped(live):
    path, row = load_mid_model(live)
    assert str(path) in mapped_files(row["pid"])
    assert "glibc.malloc.hugetlb" not in tunables(row["pid"])
    assert generates(live)
