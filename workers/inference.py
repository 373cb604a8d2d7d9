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
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from config import Settings
from workers import policy, served
from workers.catalog import Catalog
from workers.client import SupervisorClient
from workers.errors import (InstanceNotFound, InvalidRequest, LmhostError, Overloaded,
                            Unavailable, from_wire)
from workers.protocol import Channel, ProtocolError, call, can_hand_off
from workers.records import State
from workers.table import InstanceTable, TableUnreadable

log = logging.getLogger(__name__)

KIND_NEEDS = {"generate": "llm", "embedding": "embedding"}
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
            ttl: int | None = None, target: Target | None = None,
            direct=None, gather: float = 0.0) -> "Reply":
        """Route the request to an instance (loading one if needed) and return its reply once
        the instance has answered first; answers carry `reference` as their ``model``.
        `target`: `target(reference)` when the caller has just found it. `direct`: the client's
        connection (`app.sse.DirectText`) for the instance to write the further text on, after
        the first (`Reply.messages`), when this job may be handed off (`can_hand_off`); or
        None. `gather` (seconds; not with `direct`): the instance merges text lines that come
        within it into one, for a client that pays per message
        (`workers.instance.gathering`). Raises `LmhostError` for everything the client should
        hear."""
        target = target or self.target(reference)
        self.check_type(reference, target, kind)
        request = {"op": "run", "kind": kind, "params": params, "stream": stream,
                   "model": reference,
                   "first_written": kind == "generate"}  # `Reply.messages` says so
        if direct is not None and can_hand_off(kind, params):
            request["hand_off"] = True
        else:
            direct = None
            if gather > 0:
                request["gather"] = gather
        for attempt in (1, 2):  # a second try after the chosen instance died under us
            rows = target.rows or self._jit_load(reference, ttl)
            channel, first, row = self._dispatch(rows, request)
            if channel is not None:
                if "error" in first:  # refused before anything was produced
                    channel.close()
                    raise from_wire(first["error"])
                served.note(row["id"])
                return Reply(channel, first, lambda: self.lost(row), row["id"], direct)
            target = self.target(reference)
            if target.instance_id is not None and not target.rows:
                break
        raise Unavailable(f"no instance of {reference!r} could take the request")

    @staticmethod
    def check_type(reference: str, target: Target, kind: str) -> None:
        if target.type != KIND_NEEDS[kind]:
            raise InvalidRequest(
                f"{reference!r} is an {'embedding model' if target.type == 'embedding' else 'LLM'}"
                f": this endpoint needs {'an embedding model' if kind == 'embedding' else 'an LLM'}",
                param="model")

    def jit_events(self, reference: str, ttl: int | None,
                   context_length: int | None = None) -> Iterator[dict]:
        """For a caller that shows a JIT load as it happens (``/api/v1/chat``'s events): when
        `reference` has no loaded instance, load one as `run` would, yielding the supervisor's
        progress events and then ``{"result": ...}``. (Call it when `target` found none.)"""
        self._check_jit(reference)
        request = {"model": reference, "reuse_existing": True, "jit": True,
                   "ttl": ttl or self.settings.jit_ttl}
        if context_length is not None:
            request["context_length"] = context_length
        yield from self.supervisor.load(request)

    def ask(self, instance_id: str, request: dict) -> dict:
        """An op an instance answers at once (``tokenize``, ``template``), by instance id."""
        row = next((r for r in self._rows() if r["id"] == instance_id), None)
        if row is None:
            raise InstanceNotFound(f"no loaded instance {instance_id!r}")
        try:
            answer = call(row["socket"], request, timeout=30.0)
        except (OSError, ProtocolError):
            raise self.lost(row) from None
        if "error" in answer:
            raise from_wire(answer["error"])
        return answer

    def run_all(self, reference: str, kind: str, params: dict, *, ttl: int | None = None) -> dict:
        """The result of a non-streaming run."""
        for message in self.run(reference, kind, params, stream=False, ttl=ttl).messages():
            if "result" in message:
                return message["result"]
        raise LmhostError("the instance ended the request without a result")

    def _check_jit(self, reference: str) -> None:
        if not self.settings.jit:
            raise InvalidRequest(
                f"model {reference!r} is not loaded and JIT loading is off (LMHOST_JIT=0): load it "
                "first with POST /api/v1/models/load", param="model")

    def _jit_load(self, reference: str, ttl: int | None) -> list[dict]:
        self._check_jit(reference)
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


@dataclass
class Collected:
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    done: dict = field(default_factory=dict)


class Reply:
    """An instance's answer to one request, read once with `messages()` (each line decoded).
    `cancel()` asks the instance to stop generating (it then ends with its ``done`` line);
    closing the reader (or `close()`) closes the connection, which stops a generation the
    client left. `instance_id`: the instance that serves it. `direct`: the client's
    connection, when the instance is to write the further text on it (`Inference.run`)."""

    def __init__(self, channel: Channel, first: dict, lost: Callable[[], LmhostError],
                 instance_id: str, direct=None):
        self.channel = channel
        self.first = first
        self.lost = lost  # the error to raise when the instance stops answering
        self.instance_id = instance_id
        self.direct = direct
        # `messages()` (its reader's thread) and `cancel` (the SDK's cancel, another thread)
        # both write to the instance: one line at a time
        self._send_lock = threading.Lock()

    def messages(self, template: tuple[bytes, bytes] | None = None,
                 event: str | None = None) -> Iterator[dict]:
        """Each line, decoded. With `direct`, the text's events are `event` events whose data
        is `template` (`workers.protocol.text_template`) around the text: once the caller has
        taken the first text line (and written its event) and asks for the next line, the
        instance is handed the client's connection and writes every further text itself; the
        other lines still come here.

        Once the caller has taken the first text and asks for more, the instance hears that it
        was written on (the hand-off, or ``first_written``: `workers.instance.jobs`), for which
        it waits before decoding the next token."""
        try:
            if self.direct is not None and template is None:  # the instance would wait for it
                raise ValueError("a reply to hand off needs its text events' template")
            message, written = self.first, False
            while True:
                if "error" in message:
                    raise from_wire(message["error"])
                yield message
                if not written and "text" in message:  # its event is written by now
                    self._first_written(template, event)
                    written = True
                if "result" in message or "done" in message:
                    return
                message = self._next()
        finally:
            self.channel.close()

    def _next(self) -> dict:
        try:
            return json.loads(self.channel.recv_line())
        except (OSError, ProtocolError, ValueError):
            raise self.lost() from None

    def collect(self) -> "Collected":
        """A whole generation: its text, log-probability entries, tool calls, ``done`` line."""
        answer = Collected()
        for message in self.messages():
            if "text" in message:
                answer.text.append(message["text"])
                answer.logprobs.extend(message.get("logprobs", ()))
            elif "tool_calls" in message:
                answer.tool_calls = message["tool_calls"]
            elif "done" in message:
                answer.done = message["done"]
        return answer

    def _first_written(self, template: tuple[bytes, bytes] | None, event: str | None) -> None:
        """Tell the instance that the first text was written on; with `direct`, by giving it
        the client's connection (a plain socket whose response head and earlier chunks are
        written): it writes every further text itself, each as one HTTP chunk ``before`` + the
        text as JSON + ``after`` (`DirectText.around` of the text events' `template` and
        `event`; `workers.instance.handoff`)."""
        if self.direct is None:
            self._tell({"op": "first_written"})
        else:
            before, after = self.direct.around(template, event)
            self._tell({"op": "hand_off", "before": before.decode(), "after": after.decode()},
                       fds=(self.direct.sock.fileno(),))

    def cancel(self) -> None:
        self._tell({"op": "cancel"})

    def _tell(self, message: dict, fds: tuple[int, ...] = ()) -> None:
        """One line to the instance; nothing when it ended already, or died (`messages()`
        says which)."""
        try:
            with self._send_lock:
                self.channel.send(message, fds=fds)
        except OSError:
            pass

    def close(self) -> None:
        self.channel.close()
