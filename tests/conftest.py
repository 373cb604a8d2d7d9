from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager

import pytest

from app import create_app
from config import load_settings


def pytest_addoption(parser):
    parser.addoption("--update-openapi-snapshot", action="store_true",
                     help="rewrite tests/contract/openapi.json from the served document: for a "
                          "deliberate change of the contract (make openapi-snapshot)")


SUMMARY: list[str] = []  # lines a long run (make soak) prints at its end


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("what was tried and what held")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def summary():
    """`summary(line)`: a line for the end-of-session summary (what a test tried, what held)."""
    return SUMMARY.append


@pytest.fixture(scope="session")
def engine_verdict():
    """The engine probe's verdict for this host (cached per engine build, CPU and boot)."""
    from workers import engine_probe
    return engine_probe.check_engine(load_settings(env={}).cache_dir)


@pytest.fixture(scope="session")
def llama_in_process(engine_verdict):
    """llama.cpp in the test process itself, loading models the way instances do."""
    from workers import llama_params
    llama_params.install(extra_bufts=engine_verdict.extra_bufts)


@pytest.fixture
def models_dir(tmp_path):
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def settings(models_dir, state_dir):
    # env={}: a test never picks up the developer's LMHOST_* variables.
    return load_settings(env={}, models_dir=models_dir, state_dir=state_dir)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def short_tmp():
    """A short temporary folder: Unix socket paths (state dir) hold at most 107 bytes.
    Servers started in it keep their logs there: before it goes, no log may hold a token."""
    import shutil
    import tempfile
    from pathlib import Path
    from tests.helpers import files_with_tokens

    path = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))
    yield path
    leaked = files_with_tokens(path)
    shutil.rmtree(path, ignore_errors=True)
    assert not leaked, f"API tokens in logs: {leaked}"


class TokenTripwire(logging.Handler):
    """Sees every log record of the test process itself; remembers those that quote a token
    the suite made."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record):
        from tests.helpers import TOKENS_USED
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record is not a leak
            return
        for token in TOKENS_USED:
            secret = token.partition(":")[2]
            if token in text or (secret and secret in text):
                self.leaks.append(f"{record.name}: {token[:10]}…")


@pytest.fixture(scope="session", autouse=True)
def no_token_in_any_log(tmp_path_factory):
    """Every log this session produced holds none of the API tokens it used: the records of
    this process, and every file under the session's temporary folders (short_tmp checks its
    own before removing it)."""
    from tests.helpers import files_with_tokens
    tripwire = TokenTripwire()
    logging.getLogger().addHandler(tripwire)
    yield
    logging.getLogger().removeHandler(tripwire)
    leaked = files_with_tokens(tmp_path_factory.getbasetemp())
    assert not (leaked or tripwire.leaks), f"API tokens in logs: {leaked} {tripwire.leaks}"


class Live:
    """A real supervisor over the demo models, and an app (Flask test client) that uses it."""

    def __init__(self, settings):
        self.settings = settings
        self.app = create_app(settings)
        self.client = self.app.test_client()

    @property
    def state_dir(self):
        return self.settings.state_dir

    def load(self, **body):
        return self.client.post("/api/v1/models/load", json=body)

    def unload(self, instance_id):
        return self.client.post("/api/v1/models/unload", json={"instance_id": instance_id})

    def table(self):
        from workers.table import InstanceTable
        return InstanceTable(self.state_dir).read()

    def instances(self, key):
        models = self.client.get("/api/v1/models").get_json()["models"]
        return next(m["loaded_instances"] for m in models if m["key"] == key)


@contextmanager
def running_supervisor(settings):
    """A real supervisor for `settings`, as a `Live`; afterwards none of its processes is left."""
    from tests.helpers import our_processes, wait_for
    from workers.client import start_supervisor, stop_supervisor

    assert start_supervisor(settings, wait=30)
    yield Live(settings)
    stop_supervisor(settings, timeout=20)
    try:
        wait_for(lambda: not our_processes(settings.state_dir), timeout=10,
                 what="every supervisor, instance and spare process to exit")
    finally:
        for pid in our_processes(settings.state_dir):  # never leak into later tests
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def live(short_tmp, request):
    """A real supervisor over the demo models. Settings can be overridden per test with
    ``@pytest.mark.parametrize("live", [{"unload_timeout": 60}], indirect=True)``."""
    from lmhost import synthetic

    synthetic.write_demo_models(short_tmp / "models")
    overrides = {"instance_threads": 1, "unload_timeout": 5, **getattr(request, "param", {})}
    settings = load_settings(env={}, models_dir=short_tmp / "models", state_dir=short_tmp / "state",
                             **overrides)
    with running_supervisor(settings) as live:
        yield live
