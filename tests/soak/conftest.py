"""`make soak`: the service under churn and faults for a bounded time (issue "Proof under
stress"). Not part of `make test`: every module here carries the `soak` marker, which
`make test` deselects. Every test records what it tried and what held (the `summary`
fixture); the session prints it as one summary."""

from __future__ import annotations

import os
import signal

import pytest

from lmhost import synthetic
from tests.e2e.conftest import clean_env, start_server
from tests.helpers import our_processes

@pytest.fixture
def service(short_tmp):
    """`lmhost serve` (2 HTTP workers) over the demo models, stopped and swept afterwards."""
    synthetic.write_demo_models(short_tmp / "models")
    server = start_server(short_tmp, short_tmp / "models", "--workers", "2",
                          env=clean_env(LMHOST_INSTANCE_THREADS="1", LMHOST_UNLOAD_TIMEOUT="5",
                                        LMHOST_QUEUE_SIZE="16"))
    yield server
    if server.proc.poll() is None:
        server.stop(timeout=60)
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in our_processes(server.state_dir):
        os.kill(pid, signal.SIGKILL)
