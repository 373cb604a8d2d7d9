"""The instance table: ``<state>/instances.json``, the durable record of instances.

The supervisor is its only writer (DESIGN invariant 1); HTTP workers read it for listings.
Writes take a `filelock` (two supervisors can overlap for a moment during a restart) and replace
the file atomically — write a temporary file, fsync, rename, fsync the folder — so a reader or a
crash mid-write sees the old table or the new one, never half of one. Readers take no lock.

A write that fails (the state dir read-only or full) raises `TableWriteFailed` and leaves the
previous table as it was; `write_file` is the seam through which tests inject such a fault.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock

TABLE_FILE = "instances.json"
VERSION = 1


class TableUnreadable(ValueError):
    """The table file exists but cannot be parsed; the supervisor rebuilds it."""


class TableWriteFailed(OSError):
    """The table could not be replaced; the previous one is intact."""


def write_file(path: Path, body: bytes, durable: bool) -> None:
    with open(path, "wb") as f:
        f.write(body)
        if durable:
            f.flush()
            os.fsync(f.fileno())


class InstanceTable:
    def __init__(self, state_dir: str | os.PathLike, write_file=write_file):
        self.path = Path(state_dir) / TABLE_FILE
        self.lock = FileLock(str(self.path) + ".lock", timeout=10)
        self.write_file = write_file

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"instances": [], "failures": []}
        except (OSError, ValueError) as exc:
            raise TableUnreadable(f"{self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            raise TableUnreadable(f"{self.path}: not an instance table")
        if not isinstance(data.get("failures", []), list):
            raise TableUnreadable(f"{self.path}: its failures are not a list")
        return data

    def read(self) -> list[dict]:
        """The instances' rows."""
        return self._read()["instances"]

    def snapshot(self) -> tuple[list[dict], list[dict]]:
        """Rows and failures of one version of the table."""
        data = self._read()
        return data["instances"], data.get("failures", [])

    def read_failures(self) -> list[dict]:
        """The most recent failures (instances that failed to load, crashed or exited
        unasked), oldest first, each with the error its load or request got."""
        return self._read().get("failures", [])

    def stamp(self) -> tuple | None:
        """Changes whenever the table is replaced (a new inode each time): a cache key."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write(self, rows: list[dict], durable: bool = True, failures: list[dict] = ()) -> None:
        """Replace the table. `durable=False` skips the fsyncs, for updates whose loss in a
        power cut costs nothing (load progress): the rename still makes them atomic."""
        body = json.dumps({"version": VERSION, "instances": rows, "failures": list(failures)},
                          indent=1).encode()
        tmp = self.path.with_name(f"{TABLE_FILE}.{os.getpid()}.tmp")
        try:
            with self.lock:
                try:
                    self.write_file(tmp, body, durable)
                    os.replace(tmp, self.path)
                finally:
                    tmp.unlink(missing_ok=True)  # gone after the rename; a half file otherwise
                if durable:
                    dir_fd = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
        except OSError as exc:
            raise TableWriteFailed(exc.errno, f"cannot write the instance table {self.path}: "
                                              f"{exc.strerror or exc}") from exc
