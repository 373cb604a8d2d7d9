"""Hold many official Python SDK clients connected to one lmhost (a helper process for the
tests and bench/sdk_clients.py, which drive it through `Holder`; not a test itself).

    python tests/e2e/sdk_clients.py HOST:PORT COUNT

Connects COUNT ``lmstudio.Client``s, each touching the llm, embedding and system namespaces
(three websockets per client), prints ``connected N``, then for each line on stdin: ``check``
-> every client calls ``list_loaded()`` and it prints ``ok N failed M`` (the first failure's
type and message follow on the same line). Exits at EOF, closing the clients.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path


class Holder:
    """This script as a child process holding `count` clients; its log (the clients report
    sockets the server closed as errors) goes to `log`. Failures raise AssertionError."""

    def __init__(self, host: str, count: int, log: Path):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LMHOST_") and k != "LM_API_TOKEN"}
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, host, str(count)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=env,
                                         cwd=Path(__file__).parents[2])
        line = self._line(300)
        if line != f"connected {count}":
            self.close()
            raise AssertionError(f"{count} clients did not connect: {line}\n"
                                 + log.read_text(errors="replace")[-3000:])

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the clients did not answer within {timeout} s")
        return self.proc.stdout.readline().strip()

    def check(self, timeout=60) -> str:
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


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
    import lmstudio

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
