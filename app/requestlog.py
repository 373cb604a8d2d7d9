"""One log line per request, and the request metrics: a WSGI middleware around the Flask app.

`RequestLog` sees each request from its arrival to the last byte of its answer, so that a
stream is logged, with its whole duration, when it ends (or its client leaves). The line (logger
``lmhost.access``; text or JSON, config/logs.py) has: method, path (never the query string:
nothing a client put in a URL is logged), status, duration_ms, request_id, instance (the
instance that served it, when the engine noted one: `workers.served`), client (its address)
and scope (of its API token). No body, so no prompt text, ever.

``X-Request-ID``: a client's (or nginx's) id is kept when it is a sane token, else one is made;
either way it is answered in the same header, logged, and in an internal error's message.
With ``LMHOST_FORWARDED_PROXIES=N`` werkzeug's ProxyFix, outside this middleware, takes the
client's address, scheme and host from the last N proxies' ``X-Forwarded-*`` headers.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import ClosingIterator

from workers import served

log = logging.getLogger("lmhost.access")

HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:+=@/-]{1,128}")
UNMATCHED = "(unmatched)"  # the route label of a request no route matched (404, 405)
SWITCHING_PROTOCOLS = 101


def request_id() -> str | None:
    """The current request's id (inside a request)."""
    return request.environ.get("lmhost.request_id")


class RequestLog:
    def __init__(self, wsgi_app, metrics):
        self.wsgi_app = wsgi_app
        self.metrics = metrics

    def __call__(self, environ, start_response):
        started = time.monotonic()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        environ["lmhost.request_id"] = rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        served.clear()
        answered: list[int] = []

        def start(status, headers, exc_info=None):
            answered[:] = [int(status.split(None, 1)[0])]
            headers = [(k, v) for k, v in headers if k.lower() != HEADER.lower()]
            return start_response(status, headers + [(HEADER, rid)], exc_info)

        def finish():
            # A websocket's handshake is answered by simple-websocket itself, under gunicorn
            # without start_response: the socket's whole life ends up here as a 101.
            status = answered[0] if answered else (
                SWITCHING_PROTOCOLS if environ.get("HTTP_UPGRADE", "").lower() == "websocket"
                else 500)
            self._record(environ, status, time.monotonic() - started)

        try:
            body = self.wsgi_app(environ, start)
        except BaseException:
            finish()
            raise
        return ClosingIterator(body, finish)

    def _record(self, environ, status: int, seconds: float) -> None:
        route = environ.get("lmhost.route", UNMATCHED)
        method = environ.get("REQUEST_METHOD", "")
        self.metrics.observe_request(route, method, status, seconds)
        log.info("request", extra={"fields": {
            "method": method, "path": environ.get("PATH_INFO", ""), "status": status,
            "duration_ms": round(seconds * 1000, 1), "request_id": environ["lmhost.request_id"],
            "instance": served.instance(), "client": environ.get("REMOTE_ADDR"),
            "scope": environ.get("lmhost.scope")}})


def _note_route():
    """``before_request``: the matched rule, for the metrics' route label."""
    rule = request.url_rule
    request.environ["lmhost.route"] = rule.rule if rule is not None else UNMATCHED


def init_app(app: Flask, metrics, forwarded_proxies: int) -> None:
    """Wrap `app`: request log and metrics, inside ProxyFix when there are proxies to trust.
    Call before other ``before_request`` hooks are added (an early answer, a 401, still gets
    its route label)."""
    app.before_request(_note_route)
    app.wsgi_app = RequestLog(app.wsgi_app, metrics)
    if forwarded_proxies:
        n = forwarded_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
