"""The control server: what HTTP workers ask the supervisor over ``<state>/supervisor.sock``
(`workers.client` is the other end). One JSON request per connection: ``ping``, ``status``,
``load`` (progress events, then the result), ``unload``, ``estimate`` (a load's memory, loading
nothing), ``resources`` (memory now), ``shutdown``. An engine error is
answered in API.md's error shape; nothing a request does can take the supervisor down.
"""

from __future__ import annotations

import logging
import os

from workers.errors import LmhostError, to_wire
from workers.protocol import Channel, ProtocolError, UnixServer

log = logging.getLogger("workers.supervisor")


class ControlServer(UnixServer):
    def __init__(self, path, supervisor):
        self.supervisor = supervisor
        super().__init__(path, self.answer)

    def answer(self, channel: Channel) -> None:
        try:
            request = channel.recv()
            channel.send({"result": self._dispatch(request, channel)})
            if request.get("op") == "shutdown":
                self.supervisor.done.set()  # answered: now the process may exit
        except LmhostError as exc:
            self._reply(channel, {"error": to_wire(exc)})
        except (ProtocolError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must not take the supervisor down
            log.exception("control request failed")
            self._reply(channel, {"error": {"type": "internal_error", "message": "supervisor error"}})

    def _dispatch(self, request: dict, channel: Channel):
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "status":
            return self.supervisor.status()
        if op == "load":
            return self.supervisor.load(request["request"], lambda event: self._reply(channel, event))
        if op == "unload":
            return self.supervisor.unload(request["instance_id"])
        if op == "estimate":
            return self.supervisor.estimate(request["request"])
        if op == "resources":
            return self.supervisor.resources()
        if op == "shutdown":
            self.supervisor.stop()
            return {"stopped": True}
        raise LmhostError(f"unknown op {op!r}", code="unknown_op")

    @staticmethod
    def _reply(channel: Channel, message: dict) -> None:
        try:
            channel.send(message)
        except OSError:
            pass  # the HTTP worker went away; a load goes on regardless
