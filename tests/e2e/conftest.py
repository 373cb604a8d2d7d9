from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import our_processes, wait_for

LMHOST = str(Path(sys.executable).with_name("lmhost"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """The environment without the developer's LMHOST_* variables. The SDK discovery listener
    is off: the host's discovery ports belong to whatever service or test run got there first
    (discovery is tested in network namespaces of its own, tests/e2e/test_sdk_discovery.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMHOST_")}
    env["LMHOST_SDK_DISCOVERY"] = "0"
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path
    state_dir: Path

    def get(self, path, **kwargs):
        return requests.get(self.url + path, timeout=10, **kwargs)

    def process_group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"server ignored {sig!r} for {timeout}s")
        return self.proc.returncode


def start_server(tmp_path, models_dir, *args, env=None, wrap=None) -> Server:
    """`lmhost serve` on a free port; `wrap(argv, state_dir)` may run it inside another command
    (a mount namespace, say)."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    state_dir = tmp_path / f"state-{port}"
    with open(log, "wb") as out:
        models_flag = ["--models-dir", str(models_dir)] if models_dir is not None else []
        argv = [LMHOST, "serve", "--port", str(port), *models_flag, "--state-dir", str(state_dir),
                *args]
        proc = subprocess.Popen(
            wrap(argv, state_dir) if wrap else argv,
            stdout=out, stderr=subprocess.STDOUT, env=env or clean_env(),
            start_new_session=True)  # its own process group: the test can see every child
    server = Server(proc, f"http://127.0.0.1:{port}", log, state_dir)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            return server.get("/healthz").status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=30, what="lmhost serve to answer /healthz")
    return server


@pytest.fixture
def serve(short_tmp):
    servers = []

    def _start(models_dir, *args, env=None, wrap=None):
        server = start_server(short_tmp, models_dir, *args, env=env, wrap=wrap)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        if server.proc.poll() is None:
            server.stop()
        if server.process_group_alive():
            os.killpg(server.proc.pid, signal.SIGKILL)
        for pid in our_processes(server.state_dir):  # supervisor, instances: other sessions
            os.kill(pid, signal.SIGKILL)
