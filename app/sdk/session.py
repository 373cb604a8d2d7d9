"""One SDK websocket: authentication, then the receive loop that dispatches frames.

Authentication is `authenticate` (the socket's first frame; with API tokens configured, the
app's `app.auth.Auth.sdk_scope` decides), and every RPC and channel is checked against the
scope it needs (`app.auth.SDK_SCOPES`) before it runs.

The loop itself only parses and routes frames; every RPC and channel runs on a thread of its
own, so a socket keeps answering ``keepAlive`` and sees a channel's ``cancel`` while a load is
under way. Sends from those threads go through one lock (frames are never interleaved).

Endpoints a namespace does not serve (whole namespaces such as ``/files``) are answered with an ``rpcError`` / ``channelError`` / ``signalError`` carrying a
proper error object, so neither official client hangs. A channel always ends with
``channelClose`` or ``channelError``.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from simple_websocket import ConnectionClosed

from app.auth import SDK_SCOPES, AuthRefused, allows
from app.sdk import framing
from app.sdk.framing import BadFrame, SdkError
from config import ADMIN
from workers.errors import LmhostError

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0          # seconds for the first frame (LM Studio waits as long)
REFUSE_WAIT = 2.0            # seconds for each frame of a socket over the limit
MAX_IN_FLIGHT = 32           # RPCs and channels running at once on one socket
SEND_TIMEOUT = 60            # seconds a frame may wait for a client that does not read
TRY_AGAIN_LATER = 1013       # websocket close codes
POLICY_VIOLATION = 1008


@dataclass(frozen=True)
class Client:
    """Who is on the other end of a socket, as the authentication frame says, and the scope
    its token gives it."""
    identifier: str
    scope: str = ADMIN


# (authentication frame) -> the socket's scope, or AuthRefused
Gate = Callable[[dict], str]


def authenticate(frame: dict, gate: Gate | None = None) -> Client:
    """The one place a socket's authentication frame is checked (``parse_auth`` has checked its
    shape): `gate` gives its scope or raises `AuthRefused`; no gate (no API tokens) lets
    everyone in as admin."""
    scope = gate(frame) if gate is not None else ADMIN
    return Client(identifier=frame["clientIdentifier"], scope=scope)


@dataclass
class Namespace:
    """What one websocket path serves: RPC handlers ``(params) -> result`` and channel handlers
    ``(params, channel) -> None``. Handlers raise `SdkError` or `LmhostError` for the client."""
    name: str
    rpc: dict[str, Callable]
    channels: dict[str, Callable]
    # the engine error -> SdkError conversion for this namespace (names keys, finds models)
    convert: Callable[[LmhostError], SdkError] = lambda error: SdkError(error.message)


class Channel:
    """A channel as its handler sees it: `send` a message, see whether the client `cancelled`;
    `on_cancel`, when a handler sets it, is called (from the receive loop) on a cancel."""

    def __init__(self, session: "Session", channel_id: int):
        self.session = session
        self.id = channel_id
        self.cancelled = threading.Event()
        self.on_cancel: Callable[[], None] | None = None

    def send(self, message: dict) -> None:
        self.session.send(framing.channel_send(self.id, message))

    def cancel(self) -> None:
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()


def _limit_sends(ws, seconds: int) -> None:
    """A send to a client that never reads fails after `seconds` (SO_SNDTIMEO) instead of
    holding its thread forever; receives are untouched (an idle client is fine)."""
    sock = getattr(ws, "sock", None)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))


class Session:
    def __init__(self, ws, namespace: Namespace, registry, gate: Gate | None = None,
                 local_client: bool = False):
        self.ws = ws
        self.local_client = local_client  # on this machine (`app.auth.is_local_client`)
        _limit_sends(ws, SEND_TIMEOUT)
        self.namespace = namespace
        self.registry = registry
        self.gate = gate
        self.client: Client | None = None  # once authenticated
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._channels: dict[int, Channel] = {}   # guarded by _lock
        self._opened: set[int] = set()            # guarded by _lock: every channel id seen
        self._in_flight = 0                       # guarded by _lock

    # -- the socket --------------------------------------------------------------------------

    def send(self, frame: dict) -> bool:
        """Send a frame; False when the socket is gone (the client left: nothing to do)."""
        text = framing.dumps(frame)
        with self._send_lock:
            try:
                self.ws.send(text)
                return True
            except ConnectionClosed:
                return False
            except OSError:  # it stopped reading (SEND_TIMEOUT), or went: a frame was cut short
                pass
        log.warning("SDK client on /%s does not read its answers: closing its socket",
                    self.namespace.name)
        self.close(POLICY_VIOLATION, "the client does not read")
        return False

    def close(self, code: int, reason: str) -> None:
        """Close the socket from any thread; the receive loop then ends."""
        with self._send_lock:
            try:
                self.ws.close(reason=code, message=reason)
            except (ConnectionClosed, OSError):
                pass
        self.ws.event.set()  # wake a receive() that waits for the client

    def run(self) -> None:
        """Authenticate, then serve frames until the socket closes. A socket counts against
        the worker's limit from the start: one that never authenticates holds a thread too."""
        if not self.registry.admit(self):
            self._refuse(f"lmhost is serving its limit of {self.registry.max_sockets} SDK "
                         "sockets in this worker (LMHOST_SDK_MAX_SOCKETS); try again later or "
                         "close clients that are not in use")
            return
        try:
            if self._authenticate(AUTH_TIMEOUT) is None:
                return
            while True:
                text = self.ws.receive()
                if text is not None:
                    self._dispatch(text)
        except ConnectionClosed:
            pass
        finally:
            self.registry.leave(self)
            self._cancel_channels()  # the client left: what it started must not outlive it

    def _cancel_channels(self) -> None:
        """Cancel every open channel, as if the client had sent ``cancel``: a load it started
        is unloaded once loaded, a prediction stops."""
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            channel.cancel()

    def _authenticate(self, timeout: float) -> Client | None:
        try:
            text = self.ws.receive(timeout=timeout)
        except ConnectionClosed:
            return None
        if text is None:
            self.close(POLICY_VIOLATION, "no authentication frame")
            return None
        frame = None
        try:
            frame = framing.parse_auth(text)
            client = authenticate(frame, self.gate)
        except (BadFrame, AuthRefused) as exc:
            log.warning("SDK socket on /%s refused: %s", self.namespace.name,
                        "no valid API token" if isinstance(exc, AuthRefused) else exc)
            self.send(framing.auth_result(str(exc), frame))
            self.close(POLICY_VIOLATION, "authentication failed")
            return None
        self.send(framing.auth_result())
        self.client = client
        return client

    def _refuse(self, message: str) -> None:
        """A socket over the limit: answer its first call with `message`, then close it. (Failing
        its authentication instead would make the Python client raise a ValueError of its own
        and lose the message.) Clients send both frames at once: the waits are short, since
        this holds one of the threads kept for plain HTTP."""
        log.warning("SDK socket refused: %s", message)
        try:
            if self._authenticate(REFUSE_WAIT) is None:
                return
            text = self.ws.receive(timeout=REFUSE_WAIT)
            frame = framing.parse_frame(text) if text is not None else {}
            error = SdkError(message)
            if frame.get("type") == "rpcCall":
                self.send(framing.rpc_error(frame["callId"], error))
            elif frame.get("type") == "channelCreate":
                self.send(framing.channel_error(frame["channelId"], error))
        except (ConnectionClosed, BadFrame):
            pass
        self.close(TRY_AGAIN_LATER, "too many SDK sockets")

    # -- frames ------------------------------------------------------------------------------

    def _dispatch(self, text) -> None:
        try:
            frame = framing.parse_frame(text)
        except BadFrame as exc:
            self.send(framing.communication_warning(f"lmhost ignored a frame: {exc}"))
            return
        kind = frame["type"]
        if kind == "keepAlive":
            self.send(framing.keep_alive_ack())
        elif kind == "rpcCall":
            self._start_rpc(frame)
        elif kind == "channelCreate":
            self._start_channel(frame)
        elif kind == "channelSend":
            self._channel_message(frame)
        elif kind in ("signalSubscribe", "writableSignalSubscribe"):
            signal_kind = kind[:-len("Subscribe")]
            self.send(framing.signal_error(signal_kind, frame["subscribeId"], framing.not_supported(
                self.namespace.name, "signal", frame["endpoint"])))
        elif kind == "communicationWarning":
            log.warning("SDK client warning on /%s: %s", self.namespace.name, frame["warning"])
        # channelAck, signal unsubscribes and updates: nothing to do

    def _start_rpc(self, frame: dict) -> None:
        call_id, endpoint = frame["callId"], frame["endpoint"]

        def reply_error(error: SdkError) -> None:
            self.send(framing.rpc_error(call_id, error))

        handler = self._take(self.namespace.rpc, endpoint, reply_error)
        if handler is not None:
            self._spawn(f"sdk-rpc-{endpoint}", reply_error, lambda: self.send(framing.rpc_result(
                call_id, self._guarded(endpoint, handler, frame.get("parameter")))))

    def _start_channel(self, frame: dict) -> None:
        channel_id, endpoint = frame["channelId"], frame["endpoint"]

        def reply_error(error: SdkError) -> None:
            self.send(framing.channel_error(channel_id, error))

        with self._lock:
            taken = channel_id in self._channels
        if taken:
            reply_error(SdkError(f"channel {channel_id} is already open on this socket"))
            return
        handler = self._take(self.namespace.channels, endpoint, reply_error)
        if handler is None:
            return
        channel = Channel(self, channel_id)
        with self._lock:
            self._channels[channel_id] = channel
            self._opened.add(channel_id)

        def serve():
            try:
                self._guarded(endpoint, handler, frame.get("creationParameter"), channel)
                self.send(framing.channel_close(channel_id))
            finally:
                with self._lock:
                    self._channels.pop(channel_id, None)

        self._spawn(f"sdk-channel-{endpoint}", reply_error, serve)

    def _take(self, handlers: dict, endpoint: str, reply_error) -> Callable | None:
        """The handler of `endpoint`, counted in flight; None (and the client told why) when
        the namespace does not serve it, the socket's token does not allow it, or the socket
        has too many calls in flight."""
        handler = handlers.get(endpoint)
        if handler is None:
            reply_error(framing.not_supported(self.namespace.name, "endpoint", endpoint))
            return None
        needed = SDK_SCOPES.get(endpoint, ADMIN)
        scope = self.client.scope  # set: frames are dispatched after authentication only
        if not allows(scope, needed):
            reply_error(SdkError(f"This API token's scope is {scope}: {endpoint} needs an "
                                 f"{needed} token", suggestion="Use an admin API token."))
            return None
        with self._lock:
            if self._in_flight >= MAX_IN_FLIGHT:
                reply_error(SdkError(f"more than {MAX_IN_FLIGHT} calls in flight on one socket",
                                     suggestion="Wait for earlier calls to finish."))
                return None
            self._in_flight += 1
        return handler

    def _spawn(self, name: str, reply_error, work: Callable[[], None]) -> None:
        """Run `work` off the receive loop; an `SdkError` it raises goes to the client."""
        def body():
            try:
                work()
            except SdkError as error:
                reply_error(error)
            finally:
                with self._lock:
                    self._in_flight -= 1

        threading.Thread(target=body, name=name, daemon=True).start()

    def _guarded(self, endpoint: str, handler: Callable, *args):
        """Run a handler; whatever it raises reaches the client as an `SdkError`."""
        try:
            return handler(*args)
        except SdkError:
            raise
        except LmhostError as error:
            raise self.namespace.convert(error) from None
        except Exception:  # noqa: BLE001 - a bug must reach the client as an error, not a hang
            request_id = uuid.uuid4().hex[:12]
            log.exception("SDK %s/%s failed, request id %s", self.namespace.name, endpoint,
                          request_id)
            raise SdkError(f"internal error (request id {request_id})") from None

    def _channel_message(self, frame: dict) -> None:
        """A message for an open channel (``cancel``). One for a channel that has just ended
        is a race the client cannot avoid: ignored; one for a channel never opened, or that is
        not a message, is a client bug: answered with a warning."""
        with self._lock:
            channel = self._channels.get(frame["channelId"])
            known = frame["channelId"] in self._opened
        message = frame.get("message")
        if not known or not isinstance(message, dict):
            self.send(framing.communication_warning(
                f"lmhost ignored a channelSend: {'no message object' if known else 'channel '}"
                f"{'' if known else str(frame['channelId']) + ' was never opened'}"))
        elif channel is not None and message.get("type") == "cancel":
            channel.cancel()
        if isinstance(frame.get("ackId"), int):
            self.send({"type": "channelAck", "channelId": frame["channelId"],
                       "ackId": frame["ackId"]})

