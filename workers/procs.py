"""Process identity and death notification (Linux).

A pid alone is not an identity: after a crash the number can be reused by an unrelated
process. Rows of the instance table store (pid, start time in clock ticks since boot, from
/proc/<pid>/stat), and every signal we send goes through `same_process` first.

`pidfd_open` gives a file descriptor that becomes readable when the process exits; it works for
processes that are not our children (instances adopted after a supervisor restart), so the
supervisor notices every death at once, without polling.
"""

from __future__ import annotations

import os
import signal
import time


def start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces or parentheses
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def same_process(pid: int | None, started: int | None) -> bool:
    return bool(pid) and started is not None and start_time(pid) == started


def signal_process(pid: int, started: int, sig: int) -> bool:
    """Send `sig` only if `pid` is still the process that started at `started`."""
    if not same_process(pid, started):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def wait_gone(pid: int, started: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while same_process(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(pid: int, started: int, graceful_timeout: float) -> None:
    """SIGTERM, wait `graceful_timeout`, then SIGKILL (gunicorn's arbiter does the same)."""
    if signal_process(pid, started, signal.SIGTERM) and not wait_gone(pid, started, graceful_timeout):
        signal_process(pid, started, signal.SIGKILL)
        wait_gone(pid, started, 5.0)
