"""The CLI's HTTP client of lmhost's REST API (API.md). HTTP only: no Flask, no llama_cpp.

Every failure becomes a `CliError` with one line a person can read: the server's own error
message, or "cannot reach lmhost at URL: reason" when nothing answers. Every call is bounded:
a connect timeout, and a read timeout between bytes (a load streams progress events, so a long
load is fine as long as the server keeps reporting).
"""

from __future__ import annotations

import json

import requests

from lmhost import __version__

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# An unload waits for the request in flight (LMHOST_UNLOAD_TIMEOUT, 30 s by default) first.
UNLOAD_READ_TIMEOUT = 300.0
# Longest silence between two events of a streamed load (llama.cpp reports every 1%).
LOAD_EVENT_TIMEOUT = 300.0


class CliError(Exception):
    """A failure to report on one line of stderr, then exit with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ServerError(CliError):
    """The server answered with API.md's error shape; `type` is its error type."""

    def __init__(self, message: str, type: str | None = None, status: int | None = None):
        super().__init__(message)
        self.type = type
        self.status = status


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a connection failure ("connection refused"), which
    requests buries under several layers of wrapping exceptions."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror[0].lower() + seen.strerror[1:]
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


class Client:
    def __init__(self, url: str, token: str = ""):
        self.url = url
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"lmhost-cli/{__version__}"
        if token:  # LMHOST_API_TOKEN: a server with API tokens answers 401 without one
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, *, read_timeout: float = READ_TIMEOUT,
                 **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path,
                                            timeout=(CONNECT_TIMEOUT, read_timeout), **kwargs)
        except requests.Timeout as exc:
            if isinstance(exc, requests.ConnectTimeout):
                raise CliError(f"cannot reach lmhost at {self.url}: connection timed out") from None
            raise CliError(f"lmhost at {self.url} did not answer within {read_timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise CliError(f"cannot reach lmhost at {self.url}: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise CliError(f"request to lmhost at {self.url} failed: {_reason(exc)}") from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: requests.Response) -> ServerError:
        try:
            error = response.json()["error"]
            if error.get("type") == "not_found":  # no such route: not lmhost, or a wrong path
                return ServerError(f"{self.url} has no {response.request.path_url}: is it "
                                   "lmhost's address?", "not_found", response.status_code)
            message = error["message"]
            if error.get("type") in ("unauthorized", "forbidden"):
                message += " (the CLI sends LMHOST_API_TOKEN)"
            return ServerError(message, error.get("type"), response.status_code)
        except (ValueError, KeyError, TypeError):
            return ServerError(f"lmhost at {self.url} answered HTTP {response.status_code} "
                               f"{response.reason} to {response.request.path_url}",
                               status=response.status_code)

    def _json(self, response: requests.Response):
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{self.url} answered {response.request.path_url} with something "
                           "other than JSON: is it lmhost?") from None

    def models(self) -> list[dict]:
        """``GET /api/v1/models``'s ``models`` array."""
        body = self._json(self._request("GET", "/api/v1/models"))
        if not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise CliError(f"{self.url}/api/v1/models has no models list: is it lmhost?")
        return body["models"]

    def resources(self) -> dict:
        """``GET /api/v1/resources``: memory per GPU or RAM, per instance."""
        body = self._json(self._request("GET", "/api/v1/resources"))
        if not isinstance(body, dict) or not isinstance(body.get("pools"), list):
            raise CliError(f"{self.url}/api/v1/resources has no memory pools: is it lmhost?")
        return body

    def estimate(self, body: dict) -> dict:
        """A load with ``estimate_only``: the memory estimate, nothing loaded."""
        return self._json(self._request("POST", "/api/v1/models/load",
                                        json={**body, "estimate_only": True}))

    def unload(self, instance_id: str) -> dict:
        return self._json(self._request("POST", "/api/v1/models/unload",
                                        json={"instance_id": instance_id},
                                        read_timeout=UNLOAD_READ_TIMEOUT))

    def load(self, body: dict, on_progress=None) -> dict:
        """``POST /api/v1/models/load`` as server-sent events: `on_progress(p)` for each
        ``progress`` event (0..1), then the ``loaded`` body is returned or the ``error`` raised."""
        response = self._request("POST", "/api/v1/models/load", json=body, stream=True,
                                 read_timeout=LOAD_EVENT_TIMEOUT,
                                 headers={"Accept": "text/event-stream"})
        with response:
            response.encoding = "utf-8"  # SSE is UTF-8; requests would guess Latin-1 for text/*
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return self._json(response)  # a server that does not stream answers at the end
            try:
                for event, data in _sse_events(response):
                    if event == "progress" and on_progress is not None:
                        on_progress(float(data["progress"]))
                    elif event == "loaded":
                        return data
                    elif event == "error":
                        error = data["error"]
                        raise ServerError(error["message"], error.get("type"))
            except requests.Timeout:
                raise CliError(f"lmhost at {self.url} reported no load progress for "
                               f"{LOAD_EVENT_TIMEOUT:g} s; the load may go on there "
                               "(see `lmhost ps`)") from None
            except requests.RequestException as exc:
                raise CliError(f"connection to lmhost at {self.url} lost during the load: "
                               f"{_reason(exc)}") from None
            except (ValueError, KeyError, TypeError):
                raise CliError(f"lmhost at {self.url} sent a load event this CLI cannot "
                               "read") from None
        raise CliError(f"lmhost at {self.url} ended the load's event stream without a result")


def _sse_events(response: requests.Response):
    """(event, data) pairs of a text/event-stream body whose data lines are JSON."""
    event, data = "message", []
    # chunk_size=None: hand over each chunk as it arrives instead of waiting for 512 bytes
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
