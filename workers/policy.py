"""Decisions, as pure functions of plain data (DESIGN invariant 5).

They take table rows, instance statuses and clock readings and return what to do; the
supervisor acts on the answer under its lock. Unit-tested without processes.
"""

from __future__ import annotations

from workers.catalog import model_key
from workers.records import State


def default_identifier(reference: str, taken: set[str]) -> str:
    """API.md: the reference as given for the first instance, then ``<ref>:2``, ``<ref>:3``…"""
    if reference not in taken:
        return reference
    n = 2
    while f"{reference}:{n}" in taken:
        n += 1
    return f"{reference}:{n}"


def instances_of(rows: list[dict], reference: str) -> list[dict]:
    """The rows of instances of the model `reference` names (``key``, ``publisher/key``,
    either with ``@variant``), matched as the catalog matches names (case-insensitive, a
    trailing ``-gguf`` ignored), with no catalog at hand."""
    ref, _, variant = reference.strip().partition("@")
    ref, variant = model_key(ref), variant.lower()
    out = []
    for row in rows:
        publisher = str((row.get("model_entry") or {}).get("publisher", "")).lower()
        if ref in (row["model_key"], f"{publisher}/{row['model_key']}") and (
                not variant or row["variant"] == variant):
            out.append(row)
    return out


def pick_reusable(rows: list[dict], model_key: str, variant: str) -> dict | None:
    """The instance a get-or-load of (model, variant) should wait for and return: a loaded one
    first (the oldest), else one still loading; never one that is unloading."""
    candidates = [r for r in rows if r["model_key"] == model_key and r["variant"] == variant
                  and r["state"] in (State.LOADED, State.LOADING)]
    candidates.sort(key=lambda r: (r["state"] != State.LOADED, r["created"], r["id"]))
    return candidates[0] if candidates else None


def ttl_expired(ttl: int | None, status: dict) -> bool:
    """An instance expires when it has a TTL, is idle (nothing running, nothing queued) and its
    last request ended more than `ttl` seconds ago. `status` is the instance's own answer
    (``busy``, ``queued``, ``last_used`` and ``now`` on its monotonic clock)."""
    return bool(ttl) and idle(status) and idle_for(status) >= ttl


def idle(status: dict) -> bool:
    """Nothing running, nothing queued: the only state in which an instance may be evicted."""
    return not status.get("busy") and not status.get("queued")


def idle_for(status: dict) -> float:
    """Seconds since an idle instance's last request ended; 0 while it serves one."""
    return status["now"] - status["last_used"] if idle(status) else 0.0


def jit_evictions(rows: list[dict]) -> list[dict]:
    """Auto-evict (LM Studio's): a new JIT load unloads the earlier JIT-loaded instances.
    Explicitly loaded ones are never candidates, nor is anything still loading; whether a
    candidate is idle is decided by the instance itself, atomically (op "evict")."""
    return [r for r in rows if r.get("jit") and r["state"] == State.LOADED]


def pick_least_busy(candidates: list[tuple[str, dict]]) -> list[str]:
    """Instance ids in the order a request should try them: least work first (running plus
    queued), then the one idle longest, then by id. `candidates`: (id, status) pairs."""
    def load(item):
        ident, status = item
        return (int(bool(status.get("busy"))) + status.get("queued", 0),
                status.get("last_used", 0.0), ident)
    return [ident for ident, _ in sorted(candidates, key=load)]


# An SDK client pays for each message it takes (about 1 ms of CPU in the official Python
# client), on the same cores as the load: a load that reads its weights (workers.hugepages)
# reports progress all along, 50 steps in 80 ms for a 160 MB model, where a mapped one reports
# them in one burst at the end. So load progress goes to an SDK client at most this often.
PROGRESS_INTERVAL = 0.025  # seconds


def progress_due(progress: float, sent: float, sent_at: float | None, now: float) -> bool:
    """Whether a load's `progress` (0..1) goes to an SDK client that has had `sent` (at
    `sent_at`; None: only the opening 0.0 so far): the first step after it and the end
    always, others once `PROGRESS_INTERVAL` has passed since the last one sent."""
    if progress <= sent:
        return False
    return progress >= 1.0 or sent_at is None or now - sent_at >= PROGRESS_INTERVAL
