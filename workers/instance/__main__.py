"""``python -m workers.instance --state-dir S --handle H``: the instance process (see the
package's docstring for its pipes and its socket)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from workers import hugepages, llama_params
from workers.instance.server import Instance
from workers.statedir import StateDir

log = logging.getLogger("workers.instance")

PROGRESS_STEP = 0.01  # report progress in steps of at least 1%


class Events:
    """The stdout pipe to the supervisor. A broken pipe while loading means it died."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "w", buffering=1)
        self.broken = False

    def send(self, **event) -> None:
        try:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        except (BrokenPipeError, OSError):
            self.broken = True


def install_log_filter():
    """Send llama.cpp's warnings and errors (not its per-tensor info lines) to fd 2, the log.

    `Llama(verbose=True)` keeps llama-cpp-python from pointing fd 2 at /dev/null while it loads,
    which would lose llama.cpp's reason for a failed load; this callback keeps the log short.
    Returns the ctypes callback, which must stay referenced.
    """
    import llama_cpp

    # ggml's levels (ggml.h; llama-cpp-python's _logger comment predates them): NONE 0,
    # DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous message). The corrupt
    # model test checks that a failed load still quotes llama.cpp.
    wanted = {3, 4}
    last = [0]

    @llama_cpp.llama_log_callback
    def on_log(level, text, _user_data):
        if level != 5:
            last[0] = level
        if last[0] in wanted:
            os.write(2, text)

    llama_cpp.llama_log_set(on_log, None)
    return on_log


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.instance")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--handle", required=True)
    parser.add_argument("--queue-size", type=int, default=8)
    args = parser.parse_args(argv)

    # Our events go to a private copy of stdout; fd 1 joins stderr (the log file), so nothing
    # llama.cpp or a library prints can corrupt the event stream.
    events = Events(os.dup(1))
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [instance {args.handle}] %(levelname)s %(message)s")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    terminate = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminate.set())  # handlers only enqueue

    import llama_cpp  # the slow imports, done before the spec arrives (spare process)
    from workers.instance.generation import Engine  # ~5 ms more off a load's critical path
    llama_cpp.llama_backend_init()
    log_filter = install_log_filter()  # noqa: F841 - must outlive the process's llama.cpp use

    line = sys.stdin.readline()
    if not line:
        return 0  # dismissed spare
    spec = json.loads(line)
    log.info("loading %s for instance %r", spec["path"], spec["instance_id"])

    last = [-1.0]

    def report(progress: float) -> bool:
        if progress >= 1.0 or progress - last[0] >= PROGRESS_STEP:
            last[0] = progress
            events.send(event="progress", progress=round(min(progress, 1.0), 4))
        return not events.broken  # supervisor gone: abandon the load

    # The engine probe's verdict (workers.engine_probe): extra buffer types off where this
    # host traps their instructions.
    llama_params.install(extra_bufts=spec.get("extra_bufts", True), on_progress=report)
    started = time.monotonic()
    try:
        llm = llama_cpp.Llama(**spec["llama_kwargs"])
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which quotes stderr
        sys.stderr.flush()
        events.send(event="failed", message=str(exc))
        return 1
    if events.broken:
        return 1
    load_time = time.monotonic() - started
    llm.verbose = False  # no per-request timing prints from llama-cpp-python

    socket_path = str(StateDir(args.state_dir).instance_socket(args.handle))
    instance = Instance({**spec, "load_time_seconds": load_time}, Engine(llm), socket_path,
                        args.queue_size)
    instance.listen()  # before "loaded" is reported: the supervisor may call at once
    threading.Thread(target=instance.serve, name="serve", daemon=True).start()
    events.send(event="loaded", load_time_seconds=load_time, socket=socket_path,
                pid=os.getpid())
    in_huge_pages = "" if spec["llama_kwargs"].get("use_mmap", True) else (
        f", {hugepages.resident_in_huge_pages() >> 20} MiB in huge pages")
    log.info("loaded in %.3f s%s, serving %s", load_time, in_huge_pages, socket_path)
    terminate.wait()
    instance.stop(30.0)
    threading.Event().wait()  # Instance._finish exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
