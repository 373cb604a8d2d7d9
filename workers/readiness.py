"""Can this host serve? The checks behind ``GET /readyz``, each named, each bounded.

- ``supervisor``: it answers a ping. One that does not is started again first (as any control
  call would start it, `workers.client`): a host that a load balancer took out of rotation
  gets no control call, and would otherwise never come back by itself.
- ``state_dir``: a directory this process can write, whose instance table reads.
- ``models_dir``: a directory this process can list (its top level: the publishers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from config import Settings
from workers import client
from workers.errors import Unavailable
from workers.table import InstanceTable, TableUnreadable

RESTART_WAIT = 5.0  # seconds a readiness check waits for a supervisor it started


@dataclass(frozen=True)
class Check:
    name: str
    problem: str | None = None  # None: passed

    @property
    def ok(self) -> bool:
        return self.problem is None


def _supervisor(settings: Settings) -> str | None:
    try:  # pings first: True at once when it answers
        if client.start_supervisor(settings, wait=RESTART_WAIT):
            return None
    except Unavailable as exc:  # EngineUnusable: llama.cpp cannot run here
        return f"the supervisor cannot start: {exc.message}"
    return "the supervisor does not answer"


def _directory(path: Path, access: int, what: str, probe: Callable[[], object]) -> str | None:
    """None when `path` is a directory this process may `access` and `probe()` works."""
    if not path.is_dir():
        return f"{path} is not a directory"
    if not os.access(path, access):
        return f"{path} is not {what} by this process"
    try:
        probe()
    except (OSError, TableUnreadable) as exc:
        return f"{path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    return None


def _state_dir(settings: Settings) -> str | None:
    return _directory(settings.state_dir, os.W_OK | os.X_OK, "writable",
                      InstanceTable(settings.state_dir).read)


def _models_dir(settings: Settings) -> str | None:
    return _directory(settings.models_dir, os.R_OK | os.X_OK, "readable",
                      lambda: os.listdir(settings.models_dir))


CHECKS = {"supervisor": _supervisor, "state_dir": _state_dir, "models_dir": _models_dir}


def check_all(settings: Settings) -> list[Check]:
    return [Check(name, check(settings)) for name, check in CHECKS.items()]
