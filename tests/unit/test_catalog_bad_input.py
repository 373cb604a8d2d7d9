"""Bad things on disk: each is left out of the listing and logged once; none fails it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import write_gguf
from workers.catalog import Catalog
from workers.gguf_header import read_header

REPO = Path(__file__).resolve().parents[2]


def _list_twice(catalog):
    first = [m.key for m in catalog.list_models()]
    second = [m.key for m in catalog.list_models()]
    assert first == second
    return first


def _warnings(caplog, fragment):
    return [r for r in caplog.records if fragment in r.getMessage()]


@pytest.fixture
def good(models_dir):
    write_gguf(models_dir / "pub" / "good-GGUF" / "good-Q8_0.gguf", file_type=7)
    return models_dir


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated"),
    (lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4000)), "not a usable GGUF"),
    (lambda p: p.write_text("this is a text file named .gguf\n" * 10), "bad magic"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(p.read_bytes()[:read_header(p).data_end() - 1]),
     "incomplete: its tensor data ends at byte"),
], ids=["truncated", "magic-then-garbage", "not-gguf", "zero-bytes", "interrupted-download"])
def test_bad_file_is_left_out_and_logged_once(good, caplog, make, fragment):
    bad = write_gguf(good / "pub" / "bad-GGUF" / "bad.gguf")
    make(bad)
    assert _list_twice(Catalog(good)) == ["good"]
    (record,) = _warnings(caplog, str(bad))
    assert fragment in record.getMessage()


def test_bad_variant_does_not_hide_the_good_one(good, caplog):
    (good / "pub" / "good-GGUF" / "good-Q4_0.gguf").write_bytes(b"GGUF garbage")
    (model,) = Catalog(good).list_models()
    assert [v.name for v in model.variants] == ["q8_0"]


def test_an_incomplete_copy_is_not_a_variant_and_comes_back_once_complete(good, caplog):
    """An interrupted download (header intact, tensor data cut short) is left out, whatever
    its name; once the file is complete (new size) it is listed."""
    complete = good / "pub" / "good-GGUF" / "good-Q8_0.gguf"
    partial = good / "pub" / "good-GGUF" / "good-F16.gguf"
    data = write_gguf(partial, file_type=1, tensors={"w": (128, 128)}).read_bytes()
    partial.write_bytes(data[:len(data) // 2])
    catalog = Catalog(good)
    (model,) = catalog.list_models()
    assert [v.name for v in model.variants] == ["q8_0"] and model.selected.files == (complete,)
    assert len(_warnings(caplog, "incomplete")) == 1
    partial.write_bytes(data)
    (model,) = catalog.list_models()
    assert sorted(v.name for v in model.variants) == ["f16", "q8_0"]


def test_symlinks_out_of_the_models_dir_are_not_followed(good, tmp_path, caplog):
    outside = write_gguf(tmp_path / "outside" / "secret-GGUF" / "secret.gguf")
    (good / "pub" / "link-GGUF").mkdir()
    os.symlink(outside, good / "pub" / "link-GGUF" / "link.gguf")          # file link
    os.symlink(outside.parent, good / "pub" / "dirlink-GGUF")               # folder link
    os.symlink(tmp_path / "outside", good / "evil")                         # publisher link
    os.symlink(good / "pub" / "good-GGUF", good / "pub" / "alias-GGUF")     # inside: followed
    keys = _list_twice(Catalog(good))
    assert keys == ["alias", "good"]
    assert len(_warnings(caplog, "links outside the models dir")) == 3


def test_folder_without_gguf_and_non_utf8_names(good, caplog):
    (good / "pub" / "empty-GGUF").mkdir()
    (good / "pub" / "notes").mkdir()
    (good / "pub" / "notes" / "README.md").write_text("hi")
    bad_name = os.fsencode(good / "pub") + b"/caf\xe9-GGUF"
    os.mkdir(bad_name)
    write_gguf(os.fsdecode(bad_name + b"/m.gguf"))
    bad_file = os.fsencode(good / "pub" / "good-GGUF") + b"/q\xff.gguf"
    shutil.copyfile(good / "pub" / "good-GGUF" / "good-Q8_0.gguf", bad_file)
    catalog = Catalog(good)
    assert _list_twice(catalog) == ["good"]
    assert len(_warnings(caplog, "holds no model file")) == 2
    assert len(_warnings(caplog, "name is not UTF-8")) == 2
    # the listing of the good model still serializes (no lone surrogate anywhere)
    json.dumps([str(v.files) for m in catalog.list_models() for v in m.variants])


def test_ten_thousand_files(models_dir):
    seed = write_gguf(models_dir / "seed.gguf", file_type=7).read_bytes()
    (models_dir / "seed.gguf").unlink()
    for folder in range(100):
        path = models_dir / f"pub{folder % 4}" / f"model-{folder:03d}"
        path.mkdir(parents=True)
        for i in range(100):
            (path / f"v{i:03d}.gguf").write_bytes(seed)
    catalog = Catalog(models_dir)
    start = time.monotonic()
    models = catalog.list_models()
    cold = time.monotonic() - start
    assert len(models) == 100 and all(len(m.variants) == 100 for m in models)
    assert catalog.parsed_files == 10_000
    assert catalog.list_models() is models and catalog.parsed_files == 10_000
    print(f"10,000 files: cold listing {cold:.2f} s")


_LIST_SCRIPT = """
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from workers.catalog import Catalog
from workers.gguf_header import read_header
if os.geteuid() == 0:  # root reads everything: drop to nobody once the imports are done
    os.setgid(65534)
    os.setuid(65534)
catalog = Catalog(sys.argv[1])
first = [m.key for m in catalog.list_models()]
second = [m.key for m in catalog.list_models()]
print(json.dumps(first if first == second else None))
"""


def test_unreadable_file_and_folder():
    """Permission bits do not stop root, so a root test lists as `nobody` in a child."""
    root = Path(tempfile.mkdtemp(prefix="lmhost-perm-"))
    try:
        os.chmod(root, 0o755)
        write_gguf(root / "pub" / "good" / "good.gguf")
        write_gguf(root / "pub" / "locked-file" / "m.gguf").chmod(0o000)
        write_gguf(root / "pub" / "locked-dir" / "m.gguf")
        (root / "pub" / "locked-dir").chmod(0o000)
        for path in (root, root / "pub", root / "pub" / "good", root / "pub" / "locked-file"):
            path.chmod(0o755)
        (root / "pub" / "good" / "good.gguf").chmod(0o644)
        proc = subprocess.run([sys.executable, "-c", _LIST_SCRIPT, str(root)], cwd=REPO,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == ["good"]
        assert proc.stderr.count("skipping unreadable") == 2, proc.stderr
        assert "Permission denied" in proc.stderr
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(root)
