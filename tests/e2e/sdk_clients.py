"""Hold many official Python SDK clients connected to one lmhost (a helper process for the
tests and bench/sdk_clients.py; not a test itself).

    python tests/e2e/sdk_clients.py HOST:PORT COUNT

Connects COUNT ``lmstudio.Client``s, each touching the llm, embedding and system namespaces
(three websockets per client), prints ``connected N``, then for each line on stdin: ``check``
-> every client calls ``list_loaded()`` and it prints ``ok N failed M`` (the first failure's
type and message follow on the same line). Exits at EOF, closing the clients.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

import lmstudio


def check(clients) -> str:
    ok, failures = 0, []
    for client in clients:
        try:
            client.llm.list_loaded()
            ok += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    first = f" {failures[0]}" if failures else ""
    return f"ok {ok} failed {len(failures)}{first}"


def main() -> int:
    host, count = sys.argv[1], int(sys.argv[2])
    lmstudio.set_sync_api_timeout(30)
    with ExitStack() as stack:
        clients = [stack.enter_context(lmstudio.Client(host)) for _ in range(count)]
        for client in clients:
            client.llm.list_loaded()
            client.embedding.list_loaded()
            client.list_downloaded_models()
        print(f"connected {len(clients)}", flush=True)
        for line in sys.stdin:
            if line.strip() == "check":
                print(check(clients), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
