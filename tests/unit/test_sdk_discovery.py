"""Which discovery port ``lmhost serve`` takes (pure; the real listener is tested end to end)."""

from __future__ import annotations

from app.sdk.discovery import DISCOVERY_PORTS, announce, open_discovery_listener


def test_discovery_takes_the_first_port_it_can_bind():
    taken = set(DISCOVERY_PORTS[:2])

    def bind(address):
        if address[1] in taken:
            raise OSError("in use")
        return f"listener on {address}"

    assert open_discovery_listener(bind, 1234, "127.0.0.1") == (
        DISCOVERY_PORTS[2], f"listener on {('127.0.0.1', DISCOVERY_PORTS[2])}")
    taken.update(DISCOVERY_PORTS)
    assert open_discovery_listener(bind, 1234, "127.0.0.1") == (None, None)
    # the service's own port is one the clients probe: nothing more to listen on
    assert open_discovery_listener(bind, DISCOVERY_PORTS[3], "0.0.0.0") == (DISCOVERY_PORTS[3], None)


def test_the_log_line_says_which_port_or_warns_once():
    lines = []
    info = lambda m: lines.append(("info", m))  # noqa: E731
    warning = lambda m: lines.append(("warning", m))  # noqa: E731
    announce(41343, object(), info, warning)
    announce(None, None, info, warning)
    assert lines[0] == ("info", "SDK discovery: also listening at http://127.0.0.1:41343 "
                                "(first free of 41343, 52993, 16141, 39414, 22931)")
    assert lines[1][0] == "warning" and "none of the ports" in lines[1][1]
