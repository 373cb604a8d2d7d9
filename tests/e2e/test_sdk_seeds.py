"""Seeds 002 (Python) and 003 (TypeScript), every snippet, run with the official clients
(`lmstudio` from PyPI, `@lmstudio/sdk` from npm) against ``lmhost serve`` under gunicorn, each
snippet given the service's host explicitly. The same snippets run verbatim, with discovery,
in tests/e2e/test_sdk_discovery.py."""

from __future__ import annotations

import pytest

from tests.e2e.sdk_support import Runner, run_seed_002, run_seed_003, write_sdk_models


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    import shutil
    import tempfile
    from pathlib import Path

    from tests.e2e.conftest import clean_env, start_server
    from tests.e2e.sdk_support import stop

    work = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))  # state dirs hold Unix sockets
    models = write_sdk_models(work / "models")
    server = start_server(work, models, "--workers", "2",
                          env=clean_env(LMHOST_INSTANCE_THREADS="1"))
    try:
        yield Runner(server.url, work, host=server.url.removeprefix("http://"))
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


def test_seed_002_python_snippets(runner):
    run_seed_002(runner)


def test_seed_003_typescript_snippets(runner):
    run_seed_003(runner)
