"""The state dir's layout, in one place: every process of lmhost finds its files here.

    <state>/instances.json       the instance table (workers.table)
    <state>/supervisor.sock      the supervisor's control socket
    <state>/supervisor.pid       "<pid> <start time>" of the running supervisor
    <state>/supervisor.lock      flock held by the running supervisor for its life
    <state>/supervisor.start.lock  taken by whoever starts a supervisor
    <state>/instances/<h>.sock   each instance's socket (h: its handle, 12 hex digits)
    <state>/logs/<h>.log         each instance's stderr (llama.cpp's own words)
    <state>/catalog-cache.json   the catalog's metadata cache (workers.catalog)
    <state>/responses/<id>.json  stored chats of POST /api/v1/chat (workers.responses)
    <state>/metrics/             Prometheus multiprocess files of every process (app.metrics)

Unix socket paths hold at most 107 bytes: config limits the state dir's length accordingly.
"""

from __future__ import annotations

import os
from pathlib import Path

HANDLE_LENGTH = 12  # hex digits; keeps <state>/instances/<handle>.sock within AF_UNIX's limit


class StateDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.supervisor_socket = self.path / "supervisor.sock"
        self.pid_file = self.path / "supervisor.pid"
        self.lock_file = self.path / "supervisor.lock"
        self.start_lock = self.path / "supervisor.start.lock"
        self.instances = self.path / "instances"
        self.logs = self.path / "logs"
        self.responses = self.path / "responses"
        self.metrics = self.path / "metrics"

    def create(self) -> "StateDir":
        for folder in (self.path, self.instances, self.logs):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    def instance_socket(self, handle: str) -> Path:
        return self.instances / f"{handle}.sock"

    def log(self, handle: str) -> Path:
        return self.logs / f"{handle}.log"

    def log_tail(self, handle: str, size: int = 16384) -> str:
        """The end of an instance's stderr ("" when there is none)."""
        try:
            with open(self.log(handle), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
