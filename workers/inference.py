"""Inference from an HTTP worker straight to an instance (DESIGN invariant 3).

`Inference.run` resolves the request's `model` (an instance id, or a model reference: key,
``publisher/key``, ``key@variant``), finds its loaded instances in the table, and — JIT — asks
the supervisor to get-or-load one when there is none (default TTL `jit_ttl`, auto-evict of
earlier idle JIT instances). Among several instances the request goes to the least busy: each
is asked for its status, and the job is offered with ``if_idle`` in that order, so two requests
arriving together never both pick the same idle instance; when none is idle it queues at the
least busy one, and a full queue is 429 `overloaded`.

An instance that dies under a request (a crash: SIGILL, SIGSEGV, ...) is not retried elsewhere:
the request gets the supervisor's explanation of the death (`lost`), named by its signal.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from config import Settings
from workers import policy
from workers.catalog import Catalog
from workers.client import SupervisorClient
from workers.errors import InvalidRequest, LmhostError, Overloaded, Unavailable, from_wire
from workers.protocol import Channel, ProtocolError, call
from workers.records import State
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger(__name__)

CHUNK_PREFIX = b'{"chunk":'  # how workers.protocol.Channel.send writes a chunk message

KIND_NEEDS = {"chat": "llm", "completion": "llm", "embedding": "embedding"}
ENDPOINT = {"chat": "/v1/chat/completions", "completion": "/v1/completions",
            "embedding": "/v1/embeddings"}
# How long a request whose instance went away waits for the supervisor to record why. It reaps
# a death at once (pidfd) and records the failure in the table write that drops the row.
DEATH_RECORD_WAIT = 3.0


@dataclass
class Target:
    type: str            # "llm" | "embedding"
    rows: list[dict]     # loaded instances that can serve it
    instance_id: str | None  # set when the reference named an instance


class Inference:
    def __init__(self, settings: Settings, catalog: Catalog, table: InstanceTable,
                 supervisor: SupervisorClient):
        self.settings = settings
        self.catalog = catalog
        self.table = table
        self.supervisor = supervisor

    def _rows(self) -> list[dict]:
        try:
            return [r for r in self.table.read() if r.get("state") == State.LOADED]
        except TableUnreadable:
            return []

    def target(self, reference: str) -> Target:
        """The loaded instances a reference names, from the instance table alone when it
        names one (the hot path: no scan of the models dir, and an instance whose file was
        deleted meanwhile still serves); else the catalog's model (to JIT-load)."""
        rows = self._rows()
        named = [r for r in rows if r["id"] == reference]
        if named:
            return Target(named[0]["type"], named, reference)
        loaded = policy.instances_of(rows, reference)
        if loaded:
            return Target(loaded[0]["type"], loaded, None)
        model, variant = self.catalog.resolve(reference)
        pinned = "@" in reference
        return Target(model.type, [r for r in rows if r["model_key"] == model.key
                                   and (not pinned or r["variant"] == variant.name)], None)

    def run(self, reference: str, kind: str, params: dict, *, stream: bool,
            ttl: int | None = None) -> "Reply":
        """Route the request to an instance (loading one if needed) and return its reply once
        the instance has answered first; answers carry `reference` as their ``model``.
        Raises `LmhostError` for everything the client should hear."""
        target = self.target(reference)
        if target.type != KIND_NEEDS[kind]:
            raise InvalidRequest(
                f"{reference!r} is an {'embedding model' if target.type == 'embedding' else 'LLM'}"
                f": {ENDPOINT[kind]} needs {'an embedding model' if kind == 'embedding' else 'an LLM'}",
                param="model")
        request = {"op": "run", "kind": kind, "params": params, "stream": stream, "model": reference}
        for attempt in (1, 2):  # a second try after the chosen instance died under us
            rows = target.rows or self._jit_load(reference, ttl)
            channel, first, row = self._dispatch(rows, request)
            if channel is not None:
                return Reply(channel, first, lambda: self.lost(row))
            target = self.target(reference)
            if target.instance_id is not None and not target.rows:
                break
        raise Unavailable(f"no instance of {reference!r} could take the request")

    def run_all(self, reference: str, kind: str, params: dict, *, ttl: int | None = None) -> dict:
        """The result of a non-streaming run."""
        for message in self.run(reference, kind, params, stream=False, ttl=ttl).messages():
            if "result" in message:
                return message["result"]
        raise LmhostError("the instance ended the request without a result")

    def _jit_load(self, reference: str, ttl: int | None) -> list[dict]:
        if not self.settings.jit:
            raise InvalidRequest(
                f"model {reference!r} is not loaded and JIT loading is off (LMHOST_JIT=0): load it "
                "first with POST /api/v1/models/load", param="model")
        result = self.supervisor.call({"op": "load", "request": {
            "model": reference, "reuse_existing": True, "jit": True,
            "ttl": ttl or self.settings.jit_ttl}})
        rows = [r for r in self._rows() if r["id"] == result["instance_id"]]
        if not rows:
            raise Unavailable(f"instance {result['instance_id']!r} went away right after loading")
        return rows

    def lost(self, row: dict) -> LmhostError:
        """The error for a request whose instance (`row`) stopped answering: the supervisor's
        record of its crash, or, when it was stopped on purpose, `Unavailable`."""
        deadline = time.monotonic() + DEATH_RECORD_WAIT
        while True:
            try:
                rows, failures = self.table.snapshot()
            except TableUnreadable:
                rows, failures = [row], []
            for failure in reversed(failures):
                if failure.get("handle") == row["handle"] and failure.get("pid") == row["pid"]:
                    return from_wire(failure["error"])
            if (not any(r.get("handle") == row["handle"] for r in rows)
                    or time.monotonic() > deadline):
                return Unavailable(f"instance {row['id']!r} stopped while serving this request")
            time.sleep(0.02)

    def _dispatch(self, rows: list[dict], request: dict) -> tuple[Channel | None, dict | None,
                                                                  dict | None]:
        by_id = {r["id"]: r for r in rows}
        if len(rows) == 1:
            order = [rows[0]["id"]]  # nothing to choose: no status round trip before the token
        else:
            statuses = []
            for row in rows:
                try:
                    statuses.append((row["id"], call(row["socket"], {"op": "status"}, 2.0)))
                except (OSError, ProtocolError):
                    continue  # dead or unloading: the supervisor drops its row
            order = policy.pick_least_busy(statuses)
        # With several instances: offer the job to each, least busy first, only if it is idle
        # (the instance decides atomically); when none is, queue it at the least busy one.
        attempts = [(i, True) for i in order] if len(order) > 1 else []
        attempts += [(i, False) for i in order[:1]]
        for ident, if_idle in attempts:
            try:
                channel = Channel.connect(by_id[ident]["socket"], 5.0)
            except OSError:
                continue
            try:
                channel.settimeout(None)
                channel.send({**request, "if_idle": if_idle})
                first = channel.recv()
            except (OSError, ProtocolError):
                channel.close()
                error = self.lost(by_id[ident])
                if error.code == "instance_crashed":
                    raise error from None  # it crashed on this request: another may too
                continue
            error = first.get("error")
            if error and error.get("type") in ("busy", "unavailable"):  # busy, or unloading
                channel.close()
                continue
            if error and error.get("type") == "overloaded":
                channel.close()
                raise Overloaded(f"instance {ident!r} has a full queue; retry shortly")
            return channel, first, by_id[ident]
        return None, None, None


class Reply:
    """An instance's answer to one request, read once: `messages()` decoded, or, for a
    stream, `chunk_bytes()` relaying each chunk's JSON as the instance wrote it (the HTTP
    worker does not decode and re-encode every token: the hot path). Closing it (or the
    reader generator) closes the connection, which stops a generation the client left."""

    def __init__(self, channel: Channel, first: dict, lost: Callable[[], LmhostError]):
        self.channel = channel
        self.first = first
        self.lost = lost  # the error to raise when the instance stops answering

    def _next(self) -> bytes:
        try:
            return self.channel.recv_line()
        except (OSError, ProtocolError):
            raise self.lost() from None

    def messages(self) -> Iterator[dict]:
        try:
            message = self.first
            while True:
                if "error" in message:
                    raise from_wire(message["error"])
                yield message
                if "result" in message or message.get("done"):
                    return
                message = json.loads(self._next())
        finally:
            self.channel.close()

    def chunk_bytes(self) -> Iterator[bytes]:
        try:
            if "error" in self.first:
                raise from_wire(self.first["error"])
            if "chunk" in self.first:
                yield json.dumps(self.first["chunk"], separators=(",", ":")).encode()
            while True:
                line = self._next()
                if line.startswith(CHUNK_PREFIX):
                    yield line[len(CHUNK_PREFIX):-2]  # {"chunk":<json>}\n -> <json>
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise from_wire(message["error"])
                return  # {"done": true}
        finally:
            self.channel.close()
