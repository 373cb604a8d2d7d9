"""`workers.metric_files`: Prometheus multiprocess files have their blocks before they are
mapped (a sparse file on a full file system kills the writer with SIGBUS), and a file system
that cannot give them is an OSError that loses the update, not the process. The real full
file system is tests/e2e/test_disk_faults.py; here `posix_fallocate` is made to fail."""

from __future__ import annotations

import errno
import logging
import os

import pytest
from prometheus_client import mmap_dict

from workers import metric_files
from workers.metric_files import AllocatedMmapedDict, recorded


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_new_file_has_all_its_blocks_and_so_has_a_grown_one(tmp_path):
    path = tmp_path / "counter_1.db"
    values = AllocatedMmapedDict(str(path))
    size = os.path.getsize(path)
    assert size == mmap_dict._INITIAL_MMAP_SIZE and allocated(path) >= size
    for i in range(2000):  # ~200 kB of keys: the file doubles a few times
        values.write_value(f"lmhost_http_requests{{route=\"/r{i}\"}}" + "x" * 64, float(i), 0.0)
    grown = os.path.getsize(path)
    assert grown > size and allocated(path) >= grown
    assert values.read_value("lmhost_http_requests{route=\"/r1999\"}" + "x" * 64)[0] == 1999.0
    values.close()


def no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_no_space_for_a_new_file_is_an_oserror_and_leaves_no_sparse_file(tmp_path, monkeypatch):
    path = tmp_path / "counter_2.db"
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match="No space"):
        AllocatedMmapedDict(str(path))
    assert os.path.getsize(path) == 0  # a later try allocates again, it does not map holes


def test_no_space_to_grow_is_an_oserror_and_the_file_keeps_its_size(tmp_path, monkeypatch):
    path = tmp_path / "counter_3.db"
    values = AllocatedMmapedDict(str(path))
    size = os.path.getsize(path)
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match="No space"):
        for i in range(2000):
            values.write_value(f"series-{i}-" + "x" * 64, 1.0, 0.0)
    assert os.path.getsize(path) == size and allocated(path) >= size


def test_install_makes_prometheus_use_it_and_recorded_turns_oserror_into_a_warning(
        monkeypatch, caplog):
    from prometheus_client import values
    monkeypatch.setattr(values, "MmapedDict", mmap_dict.MmapedDict)
    metric_files.install()
    assert values.MmapedDict is AllocatedMmapedDict

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    with caplog.at_level(logging.WARNING):
        recorded(full)  # does not raise
    assert "a metric was not recorded" in caplog.text and "No space" in caplog.text
