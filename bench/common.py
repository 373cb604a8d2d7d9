"""Helpers shared by the benchmark scripts in bench/ (not a benchmark itself).

Importing it puts the repository root on ``sys.path`` (so that ``workers.*`` imports work from a
checkout without the editable install). Holds: `BenchError`, `log`, `percentile`/`p50`,
`ms`/`ms_list`, `verdict`, `free_port`, `get`/`post`/`sse_lines`, the `Server` (``lmhost
serve`` as a subprocess, with `wait_instances` for its spare pool), `in_process_baseline`
(``llama_cpp.Llama()`` timed in a fresh interpreter) on `json_child` (a child Python process
with a JSON result), the /proc process helpers `processes_with`/`spare_ready`, `sweep`
(leftover processes naming a work dir), and `add_json_option`/`write_json` (every benchmark's
``--json PATH``: its figures for ``bench/report.py``, with `machine`, the host they were
measured on).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
HEALTH_DEADLINE_S = 60.0
STOP_DEADLINE_S = 20.0
SERVER_START_ATTEMPTS = 3
SPARE_DEADLINE_S = 10.0
BASELINE_TIMEOUT_S = 600.0
MAX_STATE_DIR_BYTES = 79  # <state>/instances/<12 hex>.sock must fit AF_UNIX's 107 bytes


class BenchError(Exception):
    """The benchmark's result is wrong, a request failed or a server did not come up: the run
    exits non-zero."""


def log(message: str = "") -> None:
    print(message, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def p50(values: list[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    """How a benchmark prints a target (never asserted)."""
    return "PASS" if ok else "FAIL"


def ms_list(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values) + " ms"


# -- processes ----------------------------------------------------------------------------------

def processes_with(*markers: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process (not this one) whose cmdline contains every marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline and all(m in cmdline for m in markers):
            found.append((int(entry.name), cmdline.strip()))
    return found


def spare_ready(pid: int) -> bool:
    """The process has llama.cpp mapped (``import llama_cpp`` got that far) and is sleeping
    (waiting for its spec on stdin), not still importing."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return "libllama" in maps and state == "S"


def sweep(work: Path) -> bool:
    """Kill (and report) any process left whose cmdline names the work dir (and so a state dir
    under it); True when none was left."""
    left = processes_with(str(work))
    for pid, cmdline in left:
        log(f"LEFT OVER: pid {pid}: {cmdline[:200]} -- killing it")
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if not left:
        log(f"\nno process naming {work} is left")
    return not left


# -- the real service ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def lmhost_command() -> list[str]:
    exe = Path(sys.executable).with_name("lmhost")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "lmhost.cli"]


def get(port: int, path: str, timeout: float) -> tuple[int, bytes, float]:
    """One GET on a fresh loopback connection: (status, body, seconds until the body is read)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.perf_counter() - started
    finally:
        conn.close()


def post(port: int, path: str, payload: dict, timeout: float) -> tuple[int, bytes, float, float]:
    """One POST on a fresh loopback connection: (status, body, seconds until the body is read,
    wall-clock time.time() when the request started)."""
    body = json.dumps(payload).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        sent_at = time.time()
        started = time.perf_counter()
        conn.request("POST", path, body=body,
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - started, sent_at
    finally:
        conn.close()


def sse_lines(port: int, path: str, payload: dict, what: str, timeout: float):
    """(perf_counter stamp, event name, data) of each event of a streamed POST on a fresh
    loopback connection, as it arrives (`timeout`: between reads)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(payload).encode(),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise BenchError(f"{what}: HTTP {resp.status}: {resp.read()[:500]!r}")
        name = None
        while True:
            line = resp.readline()
            now = time.perf_counter()
            if not line:
                return
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                yield now, name, line[5:].strip()
                name = None
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{what}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


class Server:
    """``lmhost serve`` as a subprocess in its own session, with no ``LMHOST_*`` variable from
    the caller's environment but `overrides`."""

    def __init__(self, models_dir: Path, state_dir: Path, log_path: Path,
                 overrides: dict | None = None):
        self.models_dir, self.state_dir, self.log_path = models_dir, state_dir, log_path
        self.overrides = dict(overrides or {})
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = None

    def start(self) -> float:
        """Starts it and waits for /healthz; returns the seconds that took."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMHOST_")}
        env.update(self.overrides)
        for attempt in range(1, SERVER_START_ATTEMPTS + 1):
            self.port = free_port()
            cmd = lmhost_command() + ["serve", "--host", HOST, "--port", str(self.port),
                                      "--models-dir", str(self.models_dir),
                                      "--state-dir", str(self.state_dir), "--workers", "1"]
            self._log = open(self.log_path, "ab")
            started = time.perf_counter()
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            if self._wait_healthy(started):
                return time.perf_counter() - started
            rc = self.proc.poll()
            self.stop()
            if rc is None:  # still running but never healthy: no point retrying
                break
            # exited early (e.g. another process took the port between free_port and bind)
            log(f"  server exited with status {rc} before it was healthy "
                f"(attempt {attempt}/{SERVER_START_ATTEMPTS})")
        raise BenchError(f"the server did not become healthy; its log:\n{self.log_tail()}")

    def _wait_healthy(self, started: float) -> bool:
        deadline = started + HEALTH_DEADLINE_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _, _ = get(self.port, "/healthz", timeout=2.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)  # poll interval, bounded by the deadline
        return False

    def stop(self) -> str:
        """SIGTERM and a bounded wait; SIGKILL to its process group if it does not stop."""
        how = "not started"
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is not None:
                how = f"had exited ({proc.returncode})"
            else:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_DEADLINE_S)
                    how = f"stopped by SIGTERM (exit {proc.returncode})"
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)  # its own session: gunicorn + worker
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=STOP_DEADLINE_S)
                    how = "killed (did not stop within %.0f s of SIGTERM)" % STOP_DEADLINE_S
            try:  # a worker left behind by a master that exited
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return how

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


    def instance_pids(self) -> list[int]:
        """Pids of its instance processes (``workers.instance`` naming its state dir)."""
        return [pid for pid, _ in processes_with("workers.instance", str(self.state_dir))]

    def wait_instances(self, ready_spares: int) -> tuple[bool, float]:
        """Bounded wait until exactly `ready_spares` instance processes are left (0: none; 1: one,
        ready). Returns (reached, seconds waited)."""
        started = time.perf_counter()
        deadline = started + SPARE_DEADLINE_S
        while True:
            pids = self.instance_pids()
            if len(pids) == ready_spares and all(spare_ready(pid) for pid in pids):
                return True, time.perf_counter() - started
            if time.perf_counter() >= deadline:
                return False, time.perf_counter() - started
            time.sleep(0.02)


# -- the in-process baseline ------------------------------------------------------------------

# Runs in a fresh interpreter: argv[1] is a JSON spec; the last stdout line is a JSON result.
# stderr is a file (llama.cpp's verbose output goes there, as in the instance process).
BASELINE_SCRIPT = r"""
import gc, json, sys, time
spec = json.loads(sys.argv[1])
started = time.perf_counter()
import llama_cpp
import_s = time.perf_counter() - started
from workers.llama_params import install
install(extra_bufts=spec["extra_bufts"])  # as lmhost's instances load on this host

def construct(verbose):
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=spec["path"], n_ctx=spec["n_ctx"],
                          n_threads=spec["threads"], n_threads_batch=spec["threads"],
                          use_mmap=not spec.get("huge_pages"), verbose=verbose)
    seconds = time.perf_counter() - started
    llm.close()
    del llm
    gc.collect()
    return seconds

quiet = [construct(False) for _ in range(spec["runs"])]
verbose = [construct(True) for _ in range(spec["runs"])] if spec["verbose"] else []
print(json.dumps({"import_s": import_s, "quiet": quiet, "verbose": verbose,
                  "version": llama_cpp.__version__}), flush=True)
"""


def child_environment(huge_pages: bool) -> dict | None:
    """The environment of a child that loads as lmhost's instances do with `huge_pages`
    (glibc's malloc advising them, `workers.hugepages`); None: ours."""
    from workers import hugepages
    return hugepages.environment(os.environ) if huge_pages else None


def engine_extra_bufts() -> bool:
    """Whether lmhost's instances use llama.cpp's extra buffer types on this host (the engine
    probe's verdict, `workers.engine_probe`): in-process baselines load the same way."""
    from config import load_settings
    from workers.engine_probe import check_engine
    return check_engine(load_settings(env={}).cache_dir).extra_bufts


def in_process_baseline(model: Path, n_ctx: int, threads: int, runs: int, work: Path,
                        huge_pages: bool = False, verbose: bool = True) -> dict:
    """`Llama()` constructed `runs` times in a fresh interpreter (with `verbose`, `runs` more
    with ``verbose=True``): the file mapped, as llama-cpp-python does by default, or with
    `huge_pages` as lmhost's instances load on a host without GPUs (`workers.hugepages`)."""
    spec = {"path": str(model), "n_ctx": n_ctx, "threads": threads, "runs": runs,
            "extra_bufts": engine_extra_bufts(), "huge_pages": huge_pages, "verbose": verbose}
    return json_child(["-c", BASELINE_SCRIPT, json.dumps(spec)], "the in-process baseline",
                      work / "baseline.stderr", BASELINE_TIMEOUT_S, child_environment(huge_pages))


def json_child(argv: list[str], what: str, stderr_path: Path, timeout: float,
               env: dict | None = None) -> dict:
    """Run ``python ARGV`` in the repository (in `env`, default ours); its last line of stdout
    is its JSON result. Its stderr goes to `stderr_path`, whose tail a failure quotes."""
    with open(stderr_path, "wb") as stderr:
        try:
            proc = subprocess.run([sys.executable, *argv], cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=stderr, timeout=timeout,
                                  env=env)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} took over {timeout:.0f} s") from None
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-20:])
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise BenchError(f"{what} printed no result: {lines[-1][:300]!r}") from None


# -- figures as JSON, for bench/report.py ----------------------------------------------------------

def add_json_option(parser) -> None:
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the figures as JSON to PATH (read by bench/report.py)")


def machine() -> dict:
    """The host the figures were measured on: CPU model, cores, llama-cpp-python's version
    (from its metadata; `llama_cpp` is imported only where there is none), Python, and when."""
    import datetime
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)),
            "llama_cpp_python": _llama_cpp_version(),
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _llama_cpp_version() -> str:
    """The installed llama-cpp-python's version; its module's own where the package has no
    metadata (its Python files beside a llama.cpp built apart, as bench/gpu_check.py ran)."""
    import importlib.metadata
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        import llama_cpp
        return llama_cpp.__version__


def write_json(args, bench: str, figures: dict) -> None:
    """Writes ``{"bench", "machine", "args", "figures"}`` to ``args.json`` (when given), whole
    or not at all. Figures are in seconds, tokens per second and bytes."""
    if getattr(args, "json", None) is None:
        return
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k != "json" and isinstance(v, (str, int, float, bool, Path, type(None)))}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"bench": bench, "machine": machine(), "args": options,
                                   "figures": figures}, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)
    log(f"figures written to {path}")


# -- main ---------------------------------------------------------------------------------------

def run_bench(run: Callable[[object, Path], int], args, work: Path, started: float,
              clean_up: Callable[[int], int]) -> int:
    """``run(args, work)``'s exit status, or 2 after a `BenchError` (reported); whatever
    happens, then ``clean_up(status)`` (returns the status to exit with) and the total run
    time since `started` (perf_counter)."""
    rc = 1
    try:
        rc = run(args, work)
    except BenchError as exc:
        log(f"\nbench FAILED: {exc}")
        rc = 2
    finally:
        rc = clean_up(rc)
        log(f"total run time {time.perf_counter() - started:.1f} s")
    return rc


def run_in_work_dir(run: Callable[[object, Path], int], args, prefix: str) -> int:
    """`run_bench` in a fresh short folder under /tmp (state dirs hold Unix sockets): a process
    left behind naming it fails the run; the folder is removed unless ``args.keep``."""
    import shutil
    import tempfile

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if len(str(work / "s-xxxxxxxx")) > MAX_STATE_DIR_BYTES:  # not with /tmp, but be sure
        log(f"bench FAILED: the work dir {work} is too long for the state dirs' Unix sockets")
        shutil.rmtree(work, ignore_errors=True)
        return 2

    def clean_up(rc: int) -> int:
        if not sweep(work):
            log("bench FAILED: processes were left behind")
            rc = rc or 2
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        return rc
    return run_bench(run, args, work, started, clean_up)
