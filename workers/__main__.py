"""``python -m workers``: the supervisor process.

Started by gunicorn's master at start (config/gunicorn.conf.py) or, after a crash, by the first
HTTP worker that cannot reach it (`workers.client.start_supervisor`). With ``--daemon`` it forks
once and the starter's child exits at once, so no HTTP worker keeps a zombie. An exclusive
``flock`` on ``<state>/supervisor.lock``, held for life, makes a second supervisor exit quietly.

Before anything else it asks `workers.engine_probe` whether the llama.cpp engine runs on this
host (cached; a fresh probe takes about half a second). An engine that cannot decode here at all
makes it exit with `EXIT_ENGINE_UNUSABLE` and the fix in its log, before it forks: the starter
sees it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading

from config import ConfigError, load_settings, logs
from workers import engine_probe, hugepages, procs
from workers.statedir import StateDir
from workers.supervisor import Supervisor

log = logging.getLogger("workers.supervisor")

EXIT_ENGINE_UNUSABLE = 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--state-dir", help="overrides LMHOST_STATE_DIR")
    parser.add_argument("--daemon", action="store_true", help="fork and let the starter go")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(state_dir=args.state_dir)
    except ConfigError as exc:
        print(f"lmhost supervisor: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level, sys.stderr,
                   text_format="%(asctime)s [supervisor %(process)d] %(levelname)s %(message)s")
    state_dir = StateDir(settings.state_dir).create()
    engine = engine_probe.check_engine(settings.cache_dir)
    if not engine.usable:
        log.error("%s", engine.reason)
        return EXIT_ENGINE_UNUSABLE
    if not (engine.extra_bufts and engine.conclusive):
        log.warning("%s", engine.reason)  # one line, at every start: why instances load so
    if args.daemon and os.fork():
        os._exit(0)  # single-threaded here: forking is safe

    lock_fd = os.open(state_dir.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another supervisor holds %s: exiting", state_dir.lock_file)
        return 0

    terminate = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: terminate.set())  # handlers only enqueue
    supervisor = Supervisor(settings, engine,
                            host_allows_huge_pages=hugepages.host_allows_here(settings.huge_pages))
    supervisor.start()
    state_dir.pid_file.write_text(f"{os.getpid()} {procs.start_time(os.getpid())}\n")
    log.info("supervising %s (models in %s)", state_dir.path, settings.models_dir)

    while not (terminate.wait(0.5) or supervisor.done.is_set()):
        supervisor.registry.flush()  # a table write that failed (state dir full) is retried
    if not supervisor.done.is_set():  # a signal, not the "shutdown" op (which stopped all)
        log.info("stopping: unloading every instance")
        supervisor.stop()
    supervisor.close()
    state_dir.pid_file.unlink(missing_ok=True)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
