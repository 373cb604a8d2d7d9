"""The CLI's pure parts: it talks HTTP only, and formats what it shows."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from lmhost import output


def test_client_commands_import_neither_flask_nor_llama_cpp_nor_the_engine():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code = ("import sys; from lmhost.cli import main; rc = main(['ps', '--url', sys.argv[1]]); "
            "print(rc, sorted(m.split('.')[0] for m in sys.modules "
            "if m.split('.')[0] in ('flask', 'llama_cpp', 'workers', 'app')))")
    proc = subprocess.run([sys.executable, "-c", code, dead],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "1 []", proc.stderr
    assert "cannot reach lmhost" in proc.stderr


@pytest.mark.parametrize("seconds, shown", [
    (None, ""), (30, "30s"), (90, "90s"), (300, "5m"), (3600, "1h"), (5400, "90m"), (7200, "2h")])
def test_ttl_is_shown_in_its_largest_whole_unit(seconds, shown):
    assert output.duration(seconds) == shown
