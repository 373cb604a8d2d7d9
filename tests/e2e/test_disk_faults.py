"""Disk faults under a running service (issue "Proof under stress"): the state dir full or
read-only during a table write, for real (a small tmpfs of the service's own mount namespace),
and a models dir that vanishes and comes back."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
import requests

from lmhost import synthetic
from tests.helpers import wait_for
from workers.table import TABLE_FILE

TMPFS_SIZE = "8m"


def in_a_tmpfs(argv, state_dir):
    """Run the service in a private mount namespace whose state dir is a small tmpfs."""
    script = (f'mkdir -p "{state_dir}" && mount -t tmpfs -o size={TMPFS_SIZE},mode=0700 tmpfs '
              f'"{state_dir}" && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def seen_by(server, path) -> str:
    """`path` as the service sees it (its mount namespace): through /proc/<pid>/root."""
    return f"/proc/{server.proc.pid}/root{path}"


def in_namespace(server, *command) -> None:
    subprocess.run(["nsenter", "-t", str(server.proc.pid), "-m", *command], check=True, timeout=30)


def load(server, model) -> requests.Response:
    return requests.post(server.url + "/api/v1/models/load", json={"model": model}, timeout=60)


def fill(path: str) -> None:
    """Write until the file system is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_an_unwritable_state_dir_refuses_loads_and_keeps_the_table(short_tmp, serve, fault):
    synthetic.write_demo_models(short_tmp / "models")
    server = serve(short_tmp / "models", "--workers", "1", wrap=in_a_tmpfs)
    state = str(server.state_dir)
    assert load(server, "tiny-llama").status_code == 200
    table = seen_by(server, f"{state}/{TABLE_FILE}")
    before = open(table, "rb").read()

    if fault == "full":
        fill(seen_by(server, f"{state}/filler"))
        expected = "No space left on device"
    else:  # a read-only view on top (a remount would be refused: instances write their logs)
        in_namespace(server, "mount", "--bind", state, state)
        in_namespace(server, "mount", "-o", "remount,bind,ro", state)
        expected = "Read-only file system"
    refused = load(server, "tiny-embed")
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["type"] == "unavailable" and expected in error["message"]
    assert open(table, "rb").read() == before  # the previous table, intact
    listed = server.get("/api/v1/models").json()["models"]
    assert [i["id"] for m in listed for i in m["loaded_instances"]] == ["tiny-llama"]
    chat = requests.post(server.url + "/v1/completions", timeout=60, json={
        "model": "tiny-llama", "prompt": "x", "max_tokens": 4})
    assert chat.status_code == 200  # what is loaded keeps serving
    # requests of new routes: new metric series, past the pages the worker's metric files had
    # touched (a sparse file's new page on a full file system was a SIGBUS that killed it)
    for path in ("/v1/models", "/api/v1/resources", "/readyz", "/metrics", "/api/v0/models",
                 "/api/v1/models/tiny-llama", "/no/such/page"):
        assert server.get(path).status_code in (200, 404, 503), path
    assert requests.post(server.url + "/v1/completions", timeout=60, json={
        "model": "tiny-llama", "prompt": "x", "max_tokens": 4}).status_code == 200

    if fault == "full":
        os.unlink(seen_by(server, f"{state}/filler"))
    else:
        in_namespace(server, "umount", "-l", state)
    assert load(server, "tiny-embed").status_code == 200  # cleared: loads work again
    rows = wait_for(lambda: sorted(i["id"] for m in server.get("/api/v1/models").json()["models"]
                                   for i in m["loaded_instances"]), timeout=10, what="the table")
    assert rows == ["tiny-embed", "tiny-llama"]


def test_a_models_dir_that_vanishes_and_comes_back(short_tmp, serve):
    models = short_tmp / "models"
    synthetic.write_demo_models(models)
    server = serve(models, "--workers", "1")
    keys = lambda: sorted(m["key"] for m in server.get("/api/v1/models").json()["models"])  # noqa: E731
    assert keys() == ["tiny-embed", "tiny-llama", "tiny-moe"]

    os.rename(models, short_tmp / "away")
    gone = server.get("/api/v1/models")
    assert gone.status_code == 200 and gone.json() == {"models": []}
    refused = load(server, "tiny-llama")
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "model_not_found"

    os.rename(short_tmp / "away", models)
    assert keys() == ["tiny-embed", "tiny-llama", "tiny-moe"]
    assert load(server, "tiny-llama").status_code == 200
