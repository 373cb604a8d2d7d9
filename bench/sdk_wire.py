"""A minimal LM Studio SDK client for the benchmark: one thread, a blocking socket, wsproto.

The official Python client (`lmstudio`) receives every frame on a websocket thread and hands
it to the caller's thread, two thread hops a frame; on a host whose cores the model uses, that
is part of what its figures measure. This client reads the frames in the caller's thread, as a
client in a single-threaded runtime would, so its figures are what the server's SDK path adds.
"""

from __future__ import annotations

import json
import socket
from typing import Iterator

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, \
    TextMessage

AUTH = {"authVersion": 1, "clientIdentifier": "bench-sdk-wire", "clientPasskey": "bench"}


class WireClient:
    """It reads only while it predicts: call `refresh()` before each prediction, untimed."""

    def __init__(self, host: str, port: int, timeout: float, namespace: str = "llm"):
        self.address, self.timeout, self.namespace = (host, port), timeout, namespace
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        host, port = self.address
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.texts: list[str] = []   # whole messages received, not yet taken
        self.partial: list[str] = []
        self.next_channel = 0
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}",
                                               target=f"/{self.namespace}")))
        self._read(until_accepted=True)
        self.send(AUTH)
        if self.receive() != {"success": True}:
            raise ConnectionError("the SDK socket refused the authentication frame")

    def refresh(self) -> None:
        """Answer the pings that came while it was idle, and connect again if the server
        closed the socket meanwhile: lmhost closes a socket whose ping goes unanswered for its
        ping interval (25 s), and a benchmark's round can idle this client longer."""
        self.sock.setblocking(False)
        try:
            while True:
                self._read()
        except BlockingIOError:  # all read
            self.sock.settimeout(self.timeout)
            return
        except ConnectionError:  # closed, reset, or a broken pipe for the pong
            self.sock.close()
        self.reconnects += 1
        self._connect()

    def send(self, frame: dict) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(frame))))

    def receive(self) -> dict:
        while not self.texts:
            self._read()
        return json.loads(self.texts.pop(0))

    def _read(self, until_accepted: bool = False) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the SDK socket")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                until_accepted = False
            elif isinstance(event, (RejectConnection, CloseConnection)):
                raise ConnectionError(f"the SDK socket was refused or closed: {event!r}")
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, TextMessage):
                self.partial.append(event.data)
                if event.message_finished:
                    self.texts.append("".join(self.partial))
                    self.partial = []
        if until_accepted:
            self._read(until_accepted=True)

    def predict(self, identifier: str, messages: list[dict], fields: list[dict]) -> Iterator[dict]:
        """The messages of a ``predict`` channel (a chat, as ``respond_stream`` sends it)."""
        channel = self.next_channel
        self.next_channel += 1
        history = {"messages": [{"role": m["role"], "content": [{"type": "text",
                                                                  "text": m["content"]}]}
                                for m in messages]}
        self.send({"type": "channelCreate", "endpoint": "predict", "channelId": channel,
                   "creationParameter": {
                       "modelSpecifier": {"type": "query", "query": {"identifier": identifier}},
                       "history": history, "predictionConfigStack": {"layers": [
                           {"layerName": "apiOverride", "config": {"fields": fields}}]}}})
        while True:
            frame = self.receive()
            if frame.get("channelId") != channel:
                continue
            if frame["type"] == "channelSend":
                yield frame["message"]
            elif frame["type"] == "channelError":
                raise ConnectionError(f"predict failed: {frame.get('error')}")
            elif frame["type"] == "channelClose":
                return

    def close(self) -> None:
        self.sock.close()
