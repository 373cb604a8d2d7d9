"""Shared records: an instance's state, its row in the instance table, and a failure.

The supervisor writes them (`workers.supervisor.registry`); the HTTP side, the listing and the
API schemas read them. The table file holds rows as `InstanceRecord.to_row` writes them.

An instance's states::

    spawn ─► LOADING ──"loaded" event──► LOADED ──retire: unload, TTL, evict──► UNLOADING
               │                            │                                      │
               └── failed, crashed, cancelled ─┴───────────── exited ───────────────┴─► GONE

GONE drops the row (and, when the instance ended unasked, records a failure). Each arrow is
taken in exactly one place: `Registry.loaded`, `Registry.retiring` and `Registry.gone`, which
all go through `Registry._move`, the only code that assigns a state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(str, enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    GONE = "gone"


TRANSITIONS = {
    State.LOADING: {State.LOADED, State.GONE},
    State.LOADED: {State.UNLOADING, State.GONE},
    State.UNLOADING: {State.GONE},
    State.GONE: set(),
}

LISTED_STATES = (State.LOADING, State.LOADED)  # what `loaded_instances` shows


@dataclass(eq=False)
class InstanceRecord:
    """One instance, as its row in the instance table says."""

    id: str
    model_key: str
    variant: str
    path: str
    type: str                     # "llm" | "embedding"
    load_config: dict             # what was applied, as seed 000 echoes it
    ttl: int | None
    created: float                # wall clock
    estimate: dict                # its memory estimate by part (workers.estimate.Estimate.to_json)
    handle: str = ""              # names socket and log file (ids may hold "/"); set at spawn
    jit: bool = False             # loaded by an inference request: auto-evict may unload it
    state: State = State.LOADING
    progress: float = 0.0
    pid: int | None = None
    started: int | None = None    # process start time (procs.start_time): pid reuse guard
    socket: str | None = None
    load_time: float | None = None
    last_used: float | None = None
    measured: dict | None = None  # its memory right after the load (memory.ProcessUse.to_json)
    # the model's listing entry when it loaded (seed 004's fields): the listing still shows a
    # loaded instance whose file was deleted meanwhile, and requests still reach it
    model_entry: dict = field(default_factory=dict)

    def to_row(self) -> dict:
        return {
            "id": self.id, "handle": self.handle, "model_key": self.model_key,
            "variant": self.variant, "path": self.path, "type": self.type,
            "pid": self.pid, "started": self.started, "socket": self.socket,
            "state": self.state.value, "progress": self.progress,
            "load_config": self.load_config, "ttl": self.ttl, "created": self.created,
            "last_used": self.last_used if self.last_used is not None else self.created,
            "load_time_seconds": self.load_time, "estimate": self.estimate,
            "measured": self.measured, "jit": self.jit, "model_entry": self.model_entry,
        }


def failure_row(record: InstanceRecord, when: float, exit_status: str, error: dict) -> dict:
    """The table's record of an instance that failed to load, crashed or exited unasked:
    the listing shows the latest per model, and the HTTP worker whose request it was serving
    finds why (`error`, in API.md's error shape) by its handle and pid."""
    return {"instance_id": record.id, "model_key": record.model_key, "variant": record.variant,
            "handle": record.handle, "pid": record.pid, "time": when,
            "state": record.state.value, "exit": exit_status, "error": error}
