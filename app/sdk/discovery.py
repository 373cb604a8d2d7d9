"""Zero-config discovery: the official clients, given no host, probe ``GET /lmstudio-greeting``
on 127.0.0.1 at these ports (Python in this order, TypeScript all at once) — not at 1234.
``lmhost serve`` therefore also listens on the first of them that is free (gunicorn's
``when_ready`` adds the listener, config/gunicorn.conf.py); ``LMHOST_SDK_DISCOVERY=0`` turns
that off. Binding *is* the test for "free": nothing races between a check and the bind.

Plain sockets: the gunicorn master calls it.
"""

from __future__ import annotations

from typing import Callable

DISCOVERY_HOST = "127.0.0.1"
DISCOVERY_PORTS = (41343, 52993, 16141, 39414, 22931)


def open_discovery_listener(bind: Callable[[tuple[str, int]], object], service_port: int,
                            service_host: str):
    """``(port, listener)`` for the first discovery port `bind` manages to listen on, or
    ``(port, None)`` when the service's own address is already one the clients probe, or
    ``(None, None)`` when every port is taken. `bind(address)` raises OSError when taken."""
    if service_port in DISCOVERY_PORTS and service_host in (DISCOVERY_HOST, "0.0.0.0", "localhost"):
        return service_port, None
    for port in DISCOVERY_PORTS:
        if port == service_port:
            continue
        try:
            return port, bind((DISCOVERY_HOST, port))
        except OSError:
            continue
    return None, None


def announce(port: int | None, listener, log_info, log_warning) -> None:
    """The one log line that says where SDK clients without a host will find the service."""
    ports = ", ".join(str(p) for p in DISCOVERY_PORTS)
    if port is None:
        log_warning(f"SDK discovery: none of the ports {ports} on {DISCOVERY_HOST} is free; "
                    "SDK clients must be given this service's host and port")
    elif listener is None:
        log_info(f"SDK discovery: the service's own port {port} is a discovery port")
    else:
        log_info(f"SDK discovery: also listening at http://{DISCOVERY_HOST}:{port} "
                 f"(first free of {ports})")
