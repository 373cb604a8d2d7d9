#!/usr/bin/env python3
"""Benchmark: generation throughput and time to first token, in-process vs through lmhost.

One run does it all, on the synthetic bench model (~153M parameters, Q8_0, ~163 MB), whose
generation is tamed (it never samples end-of-generation or byte tokens): every completion runs
exactly ``--tokens`` tokens of printable text, so every run does the same amount of work.

1. writes the model once (`lmhost.synthetic.write_bench_model`) into a temporary models dir,
   as ``bench/bench-150m-GGUF/bench-150m-Q8_0.gguf`` (model key ``bench-150m``);
2. in-process vs through the API, side by side, ``--threads`` T llama.cpp threads:
   - in-process: a fresh interpreter (the parent never imports llama_cpp) builds
     ``llama_cpp.Llama(model_path, n_ctx=2048, n_threads=T, n_threads_batch=T, verbose=False)``
     and streams ``create_completion(prompt, max_tokens, temperature, top_p, seed, stream=True)``;
   - through the API: the real service (``lmhost serve --workers 1`` on a free 127.0.0.1 port,
     ``LMHOST_INSTANCE_THREADS=T``), one instance loaded with ``POST /api/v1/models/load``
     (identifier ``a``), and the same request as ``POST /v1/completions`` with
     ``"stream": true`` over `http.client` (a fresh loopback connection per request, SSE lines
     read as they arrive);
   - for where the time goes, the same completion straight on the instance's Unix socket, as
     lmhost's HTTP worker sends it (a ``generate`` job; no HTTP, gunicorn or SSE);
   - the peer a user would otherwise run: llama.cpp's own ``llama-server``, built from the
     llama.cpp that llama-cpp-python vendors (`llama_server.ensure_llama_server`, cached under
     ``.bench/``), the same model, context, threads, flash attention (off) and extra buffer
     types (``--no-repack`` where the engine probe turned them off), one slot, and the same
     request as ``POST /v1/completions`` plus ``ignore_eos`` (every side generates exactly
     ``--tokens`` tokens: checked);
   all alive all along, one untimed warm-up each, then ``--runs`` rounds of one run each, in
   a new order each round (`shuffled_rounds`, from ``--order-seed``, new and logged each run
   unless given), with an untimed spacer run in another process, drawn at random, where a
   side would come straight after a run in its own. The
   machine's speed drifts by 10% and more over a minute on a small VM, and a completion's
   first token comes later (6 -> 15 ms here) when the run before it was in another process:
   interleaving gives every side the same of both, and the shuffle keeps any one side from
   always following the same other one. Every timed run starts `SETTLE_S` after the
   run before it, whose llama.cpp threads would otherwise still spin on the cores. Also: the
   CPU time the HTTP path costs per token outside the instance (gunicorn, this client), and
   whether all generate the same text (same seed and threads);
3. 1 vs 2 instances under 2 concurrent clients (two threads here), 1 llama.cpp thread per
   instance (``LMHOST_INSTANCE_THREADS=1``): two instances loaded (``a`` and ``b``); "one
   instance" rounds send both requests to ``a`` (they queue), "two instances" rounds name the
   model key (``bench-150m``), which the server routes (least busy first). Aggregate tokens/s =
   tokens of both / wall time from the first request sent to the last stream ended. For
   reference, the same without lmhost: two in-process interpreters with 1 thread each, one
   doing both completions in turn vs both at once: what the machine itself allows. One
   warm-up round each, then ``--runs`` rounds each, the four kinds interleaved;
4. llama.cpp's extra buffer types (AMX and repacked weights) on vs off, in-process, the same
   completions interleaved, where the host runs both (a host that traps AMX dies with SIGILL
   with them on: then the table says so). Every in-process interpreter elsewhere loads as
   lmhost's instances do on this host: with the engine probe's verdict (`workers.engine_probe`);
5. the real model (SmolLM2-135M-Instruct, placed with `lmhost.realmodel.place_smollm2`) on
   every wire, ``--threads`` T, the same chat (its GGUF template), sampling and seed on every
   side, 128 tokens of a story, interleaved as in [2]: in-process
   ``Llama.create_chat_completion(stream=True)``, ``POST /v1/chat/completions`` (streamed,
   ``include_usage``), ``POST /api/v1/chat`` (streamed, ``message.delta`` events), the official
   Python SDK's ``respond_stream`` (fragments), the same prediction read by a minimal
   one-thread client (`sdk_wire`: what the server's SDK path adds, without the official
   client's own work), the instance's socket (the HTTP worker's job,
   as in [2]), and llama-server's ``/v1/chat/completions`` (``ignore_eos``; the token counts
   of every side are printed and compared); then structured output, a JSON schema,
   in-process (llama-cpp-python's own grammar sampling) and through ``/v1``: structured /
   plain tok/s is its own ratio on each side;
6. prints a summary table with the targets (information only: the exit status is non-zero only
   when a request fails, a completion is not what the tamed model must produce, a server does
   not come up, or a process is left behind).

Metrics of one streamed completion (the same definitions on both sides; for the real model,
which may end early, decode tok/s counts the tokens the side reports, not the text chunks):
  TTFT          from the call (in-process: ``create_completion``; HTTP: before the connection
                is opened) to the first chunk carrying text;
  decode tok/s  (tokens - 1) / (last text chunk - first text chunk);
  overall tok/s tokens / (end of the stream - the call) (HTTP: end = the ``data: [DONE]`` line).
Figures are p50 over ``--runs`` (nearest rank).

Other work on the machine skews every figure (llama.cpp's threads wait for each other at every
step, so one descheduled thread stalls them all). Before each measurement the run waits
(bounded, ``--quiet-wait``) until the CPUs are quiet, and every timed run is checked for CPU
time used by processes other than this benchmark's own (this process, its children, the
server's processes); a run where others used more than 0.1 core is done again (up to
``--retries`` times per measurement), and marked DISTURBED if it still was. Mind the cores:
[3] needs one per instance, and with ``--threads`` equal to the cores, [2]'s HTTP worker and
client compete with llama.cpp's threads for them, which the in-process runs do not.

    .venv/bin/python bench/throughput.py [--tokens 256] [--runs 3] [--threads 2]
                                         [--prompt "Once upon a time"] [--quiet-wait 60]
                                         [--retries 6] [--no-llama-server] [--json PATH]
                                         [--keep]

Nothing but 127.0.0.1 is contacted. The temporary directory (under /tmp: the state dirs must be
short, they hold Unix sockets) is removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import select
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402 (puts the repo on sys.path)
from common import (HOST, REPO, BenchError, log, p50, percentile,  # noqa: E402
                    run_in_work_dir, spare_ready, sse_lines)
from llama_server import LlamaServer, ensure_llama_server  # noqa: E402
from sdk_wire import WireClient  # noqa: E402
from report import tps_ratio, ttft_added  # noqa: E402
from workers.protocol import Channel, ProtocolError  # noqa: E402
from lmhost.realmodel import KEY as REAL_KEY, place_smollm2  # noqa: E402
from lmhost.synthetic import write_bench_model  # noqa: E402
from workers import hugepages  # noqa: E402
from workers.table import InstanceTable  # noqa: E402

MODEL_KEY = "bench-150m"
MODEL_RELPATH = Path("bench") / "bench-150m-GGUF" / "bench-150m-Q8_0.gguf"
N_CTX = 2048
TEMPERATURE = 0.8
TOP_P = 0.95
SEED = 1
LOAD_TIMEOUT_S = 180.0
UNLOAD_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 300.0   # socket timeout of a completion request (between reads)
INPROC_TIMEOUT_S = 300.0    # an in-process interpreter's load, or one of its completions
SETTLE_DEADLINE_S = 15.0    # the supervisor's spare process, refilled after a load
TPS_RATIO_TARGET = 0.97     # HTTP decode tok/s / in-process decode tok/s
TTFT_EXTRA_TARGET_S = 0.005
PEER_RATIO_TARGET = 1.0     # lmhost decode tok/s / llama-server's: at least even
IGNORE_EOS = {"ignore_eos": True}  # llama-server's: every side generates the same token count
SCALING_TARGET = 1.6        # 2 instances / 1 instance, 2 concurrent clients
QUIET_BUSY = 0.10           # CPU use (fraction of all CPUs) that counts as quiet
QUIET_SAMPLE_S = 1.0
FOREIGN_LIMIT = 0.10        # CPU used by other processes during a run, in cores, averaged
# llama.cpp's OpenMP threads spin at a barrier after a side's last token before they sleep:
# libgomp's default is ~17 ms here (in-process, llama-server), lmhost's instances ~1 ms
# (workers.supervisor.processes.OPENMP_SPIN_COUNT). A run started at once shares the cores with
# the threads of the side before it: on 2 cores, a first token through /v1 right after an
# in-process run came 2.1-2.4 ms later than one 50 ms after it (30 rounds each, p50). So every
# timed run starts this long after whatever ran before it.
SETTLE_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def tps(value: float) -> str:
    return f"{value:.1f} tok/s"


# -- the machine: quiet, and who used the CPUs during a run --------------------------------------

def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_busy(seconds: float) -> float:
    """Fraction of all CPUs busy (any process) over `seconds`."""
    busy0, total0 = _busy_jiffies()
    time.sleep(seconds)
    busy1, total1 = _busy_jiffies()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(limit_s: float, what: str) -> None:
    """Bounded wait until the machine is quiet (nothing else using the CPUs); logs it."""
    started = time.perf_counter()
    busy = cpu_busy(QUIET_SAMPLE_S)
    while busy > QUIET_BUSY and time.perf_counter() - started < limit_s:
        busy = cpu_busy(QUIET_SAMPLE_S)
    waited = time.perf_counter() - started
    if busy > QUIET_BUSY:
        log(f"    WARNING: other processes use {busy:.0%} of the CPUs before {what} (waited "
            f"{waited:.0f} s for quiet): the figures below may be disturbed")
    else:
        log(f"    CPUs before {what}: {busy:.0%} busy ({waited:.1f} s to see that)")


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, utime + stime of all its threads in jiffies, cmdline)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(stat[1]), int(stat[11]) + int(stat[12]), cmdline)
    return table


class CpuWatch:
    """CPU time used during a window by processes that are not this benchmark's own: this
    process, its descendants, and processes whose cmdline names the work dir (the supervisor
    daemonizes) and their descendants."""

    def __init__(self, work: Path):
        self.marker = str(work)

    def _own_jiffies(self) -> int:
        table = _proc_table()
        own = {os.getpid()} | {pid for pid, (_, _, cmd) in table.items() if self.marker in cmd}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = list(own)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in own:
                    own.add(child)
                    stack.append(child)
        return sum(table[pid][1] for pid in own if pid in table)

    def start(self) -> tuple[float, int, int]:
        busy, _ = _busy_jiffies()
        return time.perf_counter(), busy, self._own_jiffies()

    def foreign(self, mark: tuple[float, int, int]) -> float:
        """Cores' worth of CPU that others used since `mark` (averaged over the window)."""
        started, busy0, own0 = mark
        busy1, _ = _busy_jiffies()
        own1 = self._own_jiffies()
        elapsed = max(1e-3, time.perf_counter() - started)
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / CLK_TCK / elapsed)


class Measure:
    """Timed runs checked for disturbance: each result is tagged with ``foreign`` (cores' worth
    of CPU that other processes used while it ran); a disturbed run is done again, up to
    ``--retries`` times per measurement (all its runs together)."""

    def __init__(self, watch: CpuWatch, args, what: str):
        self.watch, self.args, self.what = watch, args, what
        self.retries = 0

    def one(self, action: Callable[[], dict]) -> dict:
        while True:
            time.sleep(SETTLE_S)  # the side before it has let go of the cores
            mark = self.watch.start()
            result = action()
            result["foreign"] = self.watch.foreign(mark)
            if result["foreign"] <= FOREIGN_LIMIT or self.retries >= self.args.retries:
                return result
            self.retries += 1
            log(f"    (a run of {self.what} was disturbed: other processes used "
                f"{result['foreign']:.2f} cores; doing it again, retry {self.retries}/"
                f"{self.args.retries})")
            wait_quiet(self.args.quiet_wait, "the retry")

    def runs(self, action: Callable[[], dict]) -> list[dict]:
        return [self.one(action) for _ in range(self.args.runs)]


def shuffled_rounds(runs: int, sides: dict[str, Callable[[], dict]], process: dict[str, str],
                    spacers: dict[str, Callable[[], object]], seed: int,
                    last: str | None) -> dict[str, list[dict]]:
    """`runs` rounds of one timed run of every side, in a new order each round, drawn from
    `seed` (``--order-seed``; logged, so a run of the bench can be repeated). In one fixed order
    a side would always follow the same other side, and what that one leaves behind (its
    threads, its process's last work, the cores' state) would count for or against it in
    every round. A side whose run would come straight after a run in its own process
    (`process`: side -> the process that serves it; `last`: where the runs before these ran,
    the warm-ups) first gets an untimed run in another one, drawn from `spacers` (process ->
    an untimed run there): every timed run follows a run in another process, as a request
    to a server usually does, and not always the same one."""
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(runs):
        order = list(sides)
        rng.shuffle(order)
        for side in order:
            if process[side] == last:
                last = rng.choice(sorted(p for p in spacers if p != last))
                spacers[last]()
            out[side].append(sides[side]())
            last = process[side]
    return out


def disturbed_note(result: dict) -> str:
    f = result.get("foreign", 0.0)
    return f"  DISTURBED: others used {f:.2f} cores" if f > FOREIGN_LIMIT else ""


# -- metrics ------------------------------------------------------------------------------------

def metrics(start: float, stamps: list[float], end: float, text: str, finish: str | None,
            tokens_wanted: int, what: str) -> dict:
    """One streamed completion, from perf_counter() stamps: the call, each text chunk, the end."""
    n = len(stamps)
    if n != tokens_wanted or finish != "length":
        raise BenchError(f"{what}: {n} text chunks and finish_reason {finish!r}; the tamed bench "
                         f"model must give exactly {tokens_wanted} and 'length'")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"ttft": stamps[0] - start,
            "decode_tps": (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else 0.0,
            "overall_tps": n / (end - start), "total": end - start,
            "tail": end - stamps[-1], "gaps": gaps, "tokens": n, "text": text,
            "start": start, "end": end}


def summary(runs: list[dict]) -> dict:
    """A side's p50s, and its runs' own figures in round order (``*_runs``), for ratios taken
    round by round against the baseline's run of the same round (bench/report.py)."""
    gaps = sorted(g for r in runs for g in r["gaps"])
    return {"ttft": p50([r["ttft"] for r in runs]), "ttft_min": min(r["ttft"] for r in runs),
            "ttft_runs": [r["ttft"] for r in runs],
            "decode_tps_runs": [r["decode_tps"] for r in runs],
            "decode_tps": p50([r["decode_tps"] for r in runs]),
            "overall_tps": p50([r["overall_tps"] for r in runs]),
            "tail": p50([r["tail"] for r in runs]),
            "gap_p50": percentile(gaps, 50), "gap_p99": percentile(gaps, 99), "gap_max": gaps[-1],
            "texts": {r["text"] for r in runs}}


def report_runs(runs: list[dict]) -> None:
    for i, r in enumerate(runs, 1):
        log(f"    run {i}: TTFT {ms(r['ttft'])}, decode {tps(r['decode_tps'])}, overall "
            f"{tps(r['overall_tps'])} ({r['tokens']} tokens in {r['total']:.3f} s)"
            f"{disturbed_note(r)}")
    s = summary(runs)
    log(f"    p50: TTFT {ms(s['ttft'])}, decode {tps(s['decode_tps'])}, overall "
        f"{tps(s['overall_tps'])}; gap between text chunks p50 {ms(s['gap_p50'])}, p99 "
        f"{ms(s['gap_p99'])}, max {ms(s['gap_max'])}; last text chunk -> end of stream "
        f"{ms(s['tail'])}")


def aggregate(results: list[dict]) -> dict:
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"aggregate_tps": tokens / (end - start), "wall": end - start, "tokens": tokens,
            "clients": results}


def report_rounds(rounds: list[dict], who: str) -> float:
    for i, rd in enumerate(rounds, 1):
        t0 = min(c["start"] for c in rd["clients"])
        per = "; ".join(f"{who} {j + 1}: TTFT {ms(c['ttft'])}, done at {c['end'] - t0:.2f} s, "
                        f"decode {tps(c['decode_tps'])}" for j, c in enumerate(rd["clients"]))
        log(f"    round {i}: {rd['tokens']} tokens in {rd['wall']:.2f} s = "
            f"{tps(rd['aggregate_tps'])}  ({per}){disturbed_note(rd)}")
    agg = p50([rd["aggregate_tps"] for rd in rounds])
    log(f"    p50 aggregate: {tps(agg)}")
    return agg


# -- in-process ---------------------------------------------------------------------------------

# A fresh interpreter: argv[1] is a JSON spec. It loads the model, prints one JSON line, then
# for every "go" line on stdin runs one streamed completion and prints its timings as JSON
# (perf_counter() is CLOCK_MONOTONIC: comparable between processes). EOF ends it.
INPROC_LOAD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import llama_cpp
from workers.llama_params import install
install(extra_bufts=spec["extra_bufts"])
started = time.perf_counter()
llm = llama_cpp.Llama(model_path=spec["path"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
                      n_threads_batch=spec["threads"], n_gpu_layers=spec.get("n_gpu_layers", 0),
                      use_mmap=not spec.get("huge_pages"), verbose=False)
print(json.dumps({"version": llama_cpp.__version__, "load_s": time.perf_counter() - started}),
      flush=True)
"""
INPROC_SCRIPT = INPROC_LOAD + r"""
for line in sys.stdin:
    stamps, text, finish = [], [], None
    start = time.perf_counter()
    for chunk in llm.create_completion(spec["prompt"], max_tokens=spec["tokens"],
                                       temperature=spec["temperature"], top_p=spec["top_p"],
                                       seed=spec["seed"], stream=True):
        now = time.perf_counter()
        choice = chunk["choices"][0]
        if choice["text"]:
            stamps.append(now)
            text.append(choice["text"])
        finish = choice.get("finish_reason") or finish
    end = time.perf_counter()
    print(json.dumps({"start": start, "stamps": stamps, "end": end, "text": "".join(text),
                      "finish": finish}), flush=True)
"""


class InProc:
    """One in-process interpreter with its own `llama_cpp.Llama`: as llama-cpp-python loads by
    default (the file mapped), or with `huge_pages` as lmhost's instances load on a host
    without GPUs (`workers.hugepages`: the weights read into huge pages)."""

    def __init__(self, model: Path, n_threads: int, args, work: Path, name: str,
                 extra_bufts: bool | None = None, n_gpu_layers: int = 0,
                 huge_pages: bool = False):
        spec = {"path": str(model), "n_ctx": N_CTX, "threads": n_threads, "prompt": args.prompt,
                "tokens": args.tokens, "temperature": TEMPERATURE, "top_p": TOP_P, "seed": SEED,
                "extra_bufts": args.extra_bufts if extra_bufts is None else extra_bufts,
                "n_gpu_layers": n_gpu_layers}
        self._start(INPROC_SCRIPT, spec, args, work, name, huge_pages)

    def _start(self, script: str, spec: dict, args, work: Path, name: str,
               huge_pages: bool) -> None:
        self.args, self.name = args, name
        self.stderr_path = work / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-c", script,
                                          json.dumps({**spec, "huge_pages": huge_pages})],
                                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, env=common.child_environment(huge_pages))
        try:
            self.info = self._read(f"{name}: loading the model")
        except BaseException:
            self.close()
            raise

    def _read(self, what: str) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], INPROC_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        try:
            return json.loads(line)
        except ValueError:
            tail = "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-20:])
            raise BenchError(f"{what}: no answer from the in-process interpreter "
                             f"({'timed out' if not ready else repr(line[:300])}):\n{tail}"
                             ) from None

    def go(self) -> None:
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"{self.name}: the in-process interpreter is gone: {exc}") from None

    def result(self, what: str) -> dict:
        r = self._read(what)
        return metrics(r["start"], r["stamps"], r["end"], r["text"], r["finish"],
                       self.args.tokens, what)

    def completion(self, what: str) -> dict:
        self.go()
        return self.result(what)

    def died_of(self) -> int | None:
        """The signal that killed the interpreter, if one did (after a BenchError)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None
        return -code if code < 0 else None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- through the API ------------------------------------------------------------------------------

def post_json(port: int, path: str, payload: dict,
              timeout: float) -> tuple[int, dict | None, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(payload).encode(),
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    return resp.status, answer if isinstance(answer, dict) else None, body


def stream_completion(port: int, model: str, args, what: str, extra: dict | None = None) -> dict:
    """One ``POST /v1/completions`` with ``"stream": true``; SSE lines read as they arrive.
    `extra`: more fields of the request (llama-server's ``ignore_eos``)."""
    payload = json.dumps({"model": model, "prompt": args.prompt, "max_tokens": args.tokens,
                          "temperature": TEMPERATURE, "top_p": TOP_P, "seed": SEED,
                          "stream": True, **(extra or {})}).encode()
    stamps, text, finish, done = [], [], None, False
    cpu = time.process_time()
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", "/v1/completions", body=payload,
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read()
            hint = ""
            if resp.status == 404 and b"not_found" in body:
                hint = " (is POST /v1/completions there yet?)"
            raise BenchError(f"{what}: HTTP {resp.status}{hint}: {body[:500]!r}")
        while True:
            line = resp.readline()
            now = time.perf_counter()
            if not line:
                break  # the stream ended (without [DONE]: checked below)
            if not line.startswith(b"data:"):
                continue  # the blank line between events, or an SSE comment
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise BenchError(f"{what}: not JSON in the stream: {data[:300]!r}") from None
            if "error" in chunk:
                raise BenchError(f"{what}: error in the stream: {chunk['error']}")
            choice = chunk["choices"][0]
            if choice.get("text"):
                stamps.append(now)
                text.append(choice["text"])
            finish = choice.get("finish_reason") or finish
        end = time.perf_counter()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{what}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if not done:
        raise BenchError(f"{what}: the stream ended without data: [DONE]")
    result = metrics(start, stamps, end, "".join(text), finish, args.tokens, what)
    result["client_cpu"] = time.process_time() - cpu  # all of this process's threads
    return result


def socket_completion(socket_path: str, args, what: str) -> dict:
    """The same completion straight on the instance's Unix socket, as lmhost's HTTP worker
    sends it (`workers.inference`): no HTTP, no gunicorn, no SSE."""
    request = {"op": "run", "kind": "generate", "if_idle": False,
               "params": {"prompt": args.prompt, "max_tokens": args.tokens,
                          "temperature": TEMPERATURE, "top_p": TOP_P, "seed": SEED}}
    start, stamps, text, done = socket_job(socket_path, request, what)
    finish = {"length": "length"}.get(done["stop"], "stop")
    return metrics(start, stamps, time.perf_counter(), "".join(text), finish, args.tokens, what)


def socket_job(socket_path: str, request: dict, what: str):
    """One job on an instance's socket: (start, each text line's time, the texts, ``done``)."""
    stamps, text = [], []
    start = time.perf_counter()
    try:
        with Channel.connect(socket_path, REQUEST_TIMEOUT_S) as channel:
            channel.send(request)
            while True:
                message = channel.recv()
                now = time.perf_counter()
                if "error" in message:
                    raise BenchError(f"{what}: {message['error']}")
                if "done" in message:
                    return start, stamps, text, message["done"]
                if message.get("text"):
                    stamps.append(now)
                    text.append(message["text"])
    except (OSError, ProtocolError, KeyError, TypeError) as exc:
        raise BenchError(f"{what}: {type(exc).__name__}: {exc}") from None


class Server(common.Server):
    """The shared server, plus load/unload and a look at its instance processes."""

    def http_cpu(self) -> float:
        """CPU seconds used so far by the gunicorn processes (the server process and its
        descendants; the supervisor daemonizes and the instances are its children)."""
        table = _proc_table()
        pids, stack = set(), [self.proc.pid] if self.proc else []
        while stack:
            pid = stack.pop()
            if pid in table and pid not in pids:
                pids.add(pid)
                stack.extend(p for p, (ppid, _, _) in table.items() if ppid == pid)
        return sum(table[pid][1] for pid in pids) / CLK_TCK

    def socket_of(self, identifier: str) -> str:
        try:
            rows = InstanceTable(self.state_dir).read()
        except ValueError as exc:  # TableUnreadable
            raise BenchError(f"the instance table: {exc}") from None
        for row in rows:
            if row.get("id") == identifier and row.get("socket"):
                return row["socket"]
        raise BenchError(f"instance {identifier!r} is not in the instance table")

    def load(self, identifier: str, model: str = MODEL_KEY, seed: int | None = None) -> float:
        """`seed`: the instance's own, for requests that give none."""
        started = time.perf_counter()
        request = {"model": model, "context_length": N_CTX, "identifier": identifier}
        if seed is not None:
            request["seed"] = seed
        status, answer, body = post_json(self.port, "/api/v1/models/load", request,
                                         LOAD_TIMEOUT_S)
        if status != 200 or not answer or answer.get("instance_id") != identifier:
            raise BenchError(f"load of {identifier!r}: HTTP {status}: {body[:500]!r}")
        return time.perf_counter() - started

    def unload(self, identifier: str) -> None:
        status, _, body = post_json(self.port, "/api/v1/models/unload",
                                    {"instance_id": identifier}, UNLOAD_TIMEOUT_S)
        if status != 200:
            raise BenchError(f"unload of {identifier!r}: HTTP {status}: {body[:500]!r}")

    def settle(self, loaded: int) -> tuple[bool, float, int]:
        """Bounded wait until every instance process (the `loaded` ones and the spare the
        supervisor refills after a load) is idle, so that no import or load competes for the CPU
        with the measurement. Returns (settled, seconds waited, processes seen)."""
        started = time.perf_counter()
        deadline = started + SETTLE_DEADLINE_S
        while True:
            pids = self.instance_pids()
            if len(pids) >= loaded and all(spare_ready(pid) for pid in pids):
                time.sleep(0.2)  # and stays so
                again = self.instance_pids()
                if again == pids and all(spare_ready(pid) for pid in again):
                    return True, time.perf_counter() - started, len(pids)
            if time.perf_counter() >= deadline:
                return False, time.perf_counter() - started, len(pids)
            time.sleep(0.05)


def settle(server: Server, loaded: int) -> None:
    ok, waited, procs = server.settle(loaded)
    state = "idle" if ok else f"NOT all idle after {SETTLE_DEADLINE_S:.0f} s"
    log(f"    instance processes (loaded + spare): {procs}, {state} ({waited:.2f} s wait)")


def concurrent_round(port: int, model: str, clients: int, args, what: str) -> dict:
    """`clients` threads start one streamed completion each at the same moment."""
    barrier = threading.Barrier(clients)
    results: list[dict | None] = [None] * clients
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = stream_completion(port, model, args, f"{what}, client {i + 1}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(REQUEST_TIMEOUT_S + 30)
    if errors:
        raise errors[0] if isinstance(errors[0], BenchError) else BenchError(
            f"{what}: {type(errors[0]).__name__}: {errors[0]}")
    if any(r is None for r in results) or any(t.is_alive() for t in pool):
        raise BenchError(f"{what}: a client did not finish")
    return aggregate(results)


def shut_down(server: Server, *closers) -> None:
    """Calls each closer given (None: skipped: what never started), then stops the server and
    says how."""
    for close in closers:
        if close is not None:
            close()
    log(f"    server {server.stop()}")


def start_llama_server(model: Path, args, work: Path, name: str) -> LlamaServer | None:
    """llama.cpp's own server on `model` (as lmhost's instances load it), or None with
    ``--no-llama-server``."""
    if args.llama_server is None:
        return None
    peer = LlamaServer(args.llama_server, model, args.threads, N_CTX, args.extra_bufts,
                       work / f"{name}.log")
    up = peer.start()
    log(f"    llama-server {peer.flags()} on {HOST}:{peer.port}: healthy after {up:.2f} s")
    return peer


def side_by_side(model: Path, models_dir: Path, args, work: Path, watch: CpuWatch) -> dict:
    """In-process, HTTP, instance-socket and llama-server runs interleaved, all alive all
    along, so that the drift of the machine's speed and the state each run finds the CPUs in
    (the run before it was in another process) are the same for all. HTTP twice: as served
    (the instance writes the stream after its first token: LMHOST_STREAM_HANDOFF) and by a
    second server whose HTTP worker relays every token (LMHOST_STREAM_HANDOFF=0)."""
    state_dir = Path(tempfile.mkdtemp(prefix="s-", dir=work))
    server = Server(models_dir, state_dir, work / "server-single.log",
                    {"LMHOST_INSTANCE_THREADS": str(args.threads)})
    relay = Server(models_dir, Path(tempfile.mkdtemp(prefix="s-", dir=work)),
                   work / "server-relay.log", {"LMHOST_INSTANCE_THREADS": str(args.threads),
                                               "LMHOST_STREAM_HANDOFF": "0"})
    inproc, inproc_hp, peer = None, None, None
    try:
        for each, name in ((server, ""), (relay, ", LMHOST_STREAM_HANDOFF=0")):
            up = each.start()
            log(f"    lmhost serve --workers 1 on {HOST}:{each.port}, "
                f"LMHOST_INSTANCE_THREADS={args.threads}{name}: healthy after {up:.2f} s")
            took = each.load("a")
            log(f"    POST /api/v1/models/load (identifier 'a'): {took:.2f} s")
            settle(each, 1)
        inproc = InProc(model, args.threads, args, work, "inproc")
        log(f"    in-process interpreter: llama_cpp {inproc.info['version']}, Llama() in "
            f"{inproc.info['load_s']:.2f} s")
        if args.huge_pages:
            inproc_hp = InProc(model, args.threads, args, work, "inproc-hp", huge_pages=True)
            log(f"    in-process interpreter loaded as lmhost's instances load (weights in huge "
                f"pages): Llama() in {inproc_hp.info['load_s']:.2f} s")
        socket_path = server.socket_of("a")
        peer = start_llama_server(model, args, work, "llama-server-bench")
        warmups = (inproc.completion("in-process warm-up"),
                   stream_completion(server.port, "a", args, "HTTP warm-up"))
        if inproc_hp is not None:
            inproc_hp.completion("in-process, huge pages, warm-up")
        log(f"    warm-up TTFT: in-process {ms(warmups[0]['ttft'])}, HTTP {ms(warmups[1]['ttft'])}")
        stream_completion(relay.port, "a", args, "relayed HTTP warm-up")
        if peer is not None:
            stream_completion(peer.port, "bench", args, "llama-server warm-up", IGNORE_EOS)
        wait_quiet(args.quiet_wait, "the runs")

        def http_run(on: Server, what: str) -> dict:
            before = on.http_cpu()
            result = stream_completion(on.port, "a", args, what)
            result["worker_cpu"] = on.http_cpu() - before
            return result
        actions = {
            "in": lambda: inproc.completion("in-process run"),
            "http": lambda: http_run(server, "HTTP run"),
            "sock": lambda: socket_completion(socket_path, args, "instance socket run"),
            "peer": lambda: stream_completion(peer.port, "bench", args, "llama-server run",
                                              IGNORE_EOS),
            "relay": lambda: http_run(relay, "relayed HTTP run"),
            "inhp": lambda: inproc_hp.completion("in-process run, huge pages"),
        }
        if peer is None:
            del actions["peer"]
        if inproc_hp is None:
            del actions["inhp"]
        names = {"in": "in-process", "http": "HTTP", "sock": "instance socket",
                 "peer": "llama-server", "relay": "HTTP, relayed", "inhp": "in-process, huge pages"}
        sides = {side: partial(Measure(watch, args, names[side]).one, action)
                 for side, action in actions.items()}
        # /v1 and the socket are the same instance's; the relaying server has its own
        process = {"in": "in", "http": "a", "sock": "a", "peer": "peer", "relay": "relay",
                   "inhp": "inhp"}
        # a spacer is an untimed run of a side: in-process, the socket or llama-server
        spacers = {process[side]: actions[side] for side in ("in", "sock", "peer")
                   if side in actions}
        runs = shuffled_rounds(args.runs, sides, process, spacers, args.order_seed,
                               last="peer" if peer is not None else "relay")  # the warm-ups'

        in_runs, sock_runs, http_runs, relay_runs = (runs["in"], runs["sock"], runs["http"],
                                                     runs["relay"])
        peer_runs, inhp_runs = runs.get("peer", []), runs.get("inhp", [])
        server.unload("a")
        relay.unload("a")
    except (BenchError, OSError) as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}\nrelaying server "
                         f"log (tail):\n{relay.log_tail()}") from None
    finally:
        shut_down(server, inproc and inproc.close, inproc_hp and inproc_hp.close,
                  peer and peer.stop, lambda: log(f"    relaying server {relay.stop()}"))
    return {"in_runs": in_runs, "sock_runs": sock_runs, "http_runs": http_runs,
            "relay_runs": relay_runs, "peer_runs": peer_runs, "inhp_runs": inhp_runs}


def scaling(model: Path, models_dir: Path, args, work: Path, watch: CpuWatch) -> dict:
    """2 concurrent completions, 1 llama.cpp thread each: through lmhost with two instances
    loaded ("a" and "b"), both requests naming "a" (one instance: they queue) or the model key
    (routed to both); and, for reference, two in-process interpreters (one does both
    completions in turn, or each does one at once). The four kinds of round are interleaved."""
    state_dir = Path(tempfile.mkdtemp(prefix="s-", dir=work))
    server = Server(models_dir, state_dir, work / "server-scaling.log",
                    {"LMHOST_INSTANCE_THREADS": "1"})
    procs: list[InProc] = []
    try:
        up = server.start()
        log(f"    lmhost serve --workers 1 on {HOST}:{server.port}, LMHOST_INSTANCE_THREADS=1: "
            f"healthy after {up:.2f} s")
        for identifier in ("a", "b"):
            took = server.load(identifier)
            log(f"    POST /api/v1/models/load (identifier {identifier!r}): {took:.2f} s")
        settle(server, 2)
        for name in ("inproc-1t-a", "inproc-1t-b"):
            procs.append(InProc(model, 1, args, work, name))
        a, b = procs

        def lmhost_one() -> dict:
            return concurrent_round(server.port, "a", 2, args, "lmhost, one instance")

        def lmhost_two() -> dict:
            return concurrent_round(server.port, MODEL_KEY, 2, args, "lmhost, two instances")

        def inproc_one() -> dict:
            return aggregate([a.completion("in-process 1 thread, first"),
                              a.completion("in-process 1 thread, second")])

        def inproc_two() -> dict:
            a.go()
            b.go()
            return aggregate([a.result("in-process 1 thread, process A"),
                              b.result("in-process 1 thread, process B")])
        kinds = {"lmhost_one": lmhost_one, "inproc_one": inproc_one, "lmhost_two": lmhost_two,
                 "inproc_two": inproc_two}
        for action in kinds.values():
            action()  # warm-up: every instance and interpreter
        wait_quiet(args.quiet_wait, "the rounds")
        measures = {kind: Measure(watch, args, kind.replace("_", ", ")) for kind in kinds}
        rounds: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for _ in range(args.runs):
            for kind, action in kinds.items():
                rounds[kind].append(measures[kind].one(action))
        for identifier in ("a", "b"):
            server.unload(identifier)
    except (BenchError, OSError) as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}") from None
    finally:
        for proc in procs:
            proc.close()
        how = server.stop()
        log(f"    server {how}")
    out = {}
    for kind, title, who in (
            ("lmhost_one", "lmhost, one instance: both requests name 'a' (they queue)", "client"),
            ("lmhost_two", f"lmhost, two instances: both requests name {MODEL_KEY!r} (routed)",
             "client"),
            ("inproc_one", "in-process, one interpreter: the two completions in turn",
             "completion"),
            ("inproc_two", "in-process, two interpreters: one completion each, at once",
             "process")):
        log(f"    {title}:")
        out[kind] = report_rounds(rounds[kind], who)
    return out


def extra_buffers(model: Path, args, work: Path, watch: CpuWatch) -> dict:
    """In-process decode tok/s with llama.cpp's extra buffer types on and off, interleaved;
    a setting whose first completion dies with SIGILL is reported as such."""
    procs: dict[bool, InProc] = {}
    out: dict[bool, object] = {}
    try:
        for on in (True, False):
            proc = InProc(model, args.threads, args, work, f"inproc-extra-{'on' if on else 'off'}",
                          extra_bufts=on)
            try:
                proc.completion("warm-up")
                procs[on] = proc
            except BenchError:
                sig = proc.died_of()
                proc.close()
                if sig is None:
                    raise
                out[on] = f"dies with {signal.Signals(sig).name}"
                log(f"    extra buffer types {'on' if on else 'off'}: the interpreter died with "
                    f"{signal.Signals(sig).name} on its first completion: not runnable on this host")
        wait_quiet(args.quiet_wait, "the runs")
        runs: dict[bool, list[dict]] = {on: [] for on in procs}
        measures = {on: Measure(watch, args, f"extra buffer types {'on' if on else 'off'}")
                    for on in procs}
        for _ in range(args.runs):
            for on, proc in procs.items():
                runs[on].append(measures[on].one(lambda: proc.completion("run")))
        for on in procs:
            log(f"    extra buffer types {'on' if on else 'off'}:")
            report_runs(runs[on])
            out[on] = summary(runs[on])["decode_tps"]
    finally:
        for proc in procs.values():
            proc.close()
    return out


# -- [5] the real model on every wire -------------------------------------------------------------

REAL_TOKENS = 128
REAL_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
# every side samples alike: llama-cpp-python's chat defaults differ from its completion ones
REAL_SAMPLING = {"temperature": TEMPERATURE, "top_p": TOP_P, "top_k": 40, "min_p": 0.05,
                 "repeat_penalty": 1.0, "seed": SEED}
STORY = {"type": "object", "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
         "required": ["title", "story"]}

# A fresh interpreter for the real model: each stdin line is a JSON job {"structured": bool};
# it streams create_chat_completion and prints the timings and the text's token count.
INPROC_CHAT_SCRIPT = INPROC_LOAD + r"""
for line in sys.stdin:
    job = json.loads(line)
    extra = {"response_format": {"type": "json_object", "schema": spec["schema"]}} if job["structured"] else {}
    stamps, text, finish = [], [], None
    start = time.perf_counter()
    for chunk in llm.create_chat_completion(spec["messages"], max_tokens=spec["tokens"],
                                            stream=True, **spec["sampling"], **extra):
        now = time.perf_counter()
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            stamps.append(now)
            text.append(choice["delta"]["content"])
        finish = choice.get("finish_reason") or finish
    end = time.perf_counter()
    out = "".join(text)
    print(json.dumps({"start": start, "stamps": stamps, "end": end, "text": out, "finish": finish,
                      "tokens": len(llm.tokenize(out.encode(), add_bos=False, special=False))}),
          flush=True)
"""


def real_metrics(start: float, stamps: list[float], end: float, text: str, tokens: int,
                 what: str) -> dict:
    """As `metrics`, for a model that may end early: `tokens` is what it generated (text
    chunks may carry several); decode tok/s = (tokens - 1) / (last chunk - first chunk)."""
    if len(stamps) < 2 or tokens < 2:
        raise BenchError(f"{what}: {len(stamps)} text chunks, {tokens} tokens: too few to time")
    return {"ttft": stamps[0] - start, "decode_tps": (tokens - 1) / (stamps[-1] - stamps[0]),
            "overall_tps": tokens / (end - start), "total": end - start,
            "tail": end - stamps[-1], "gaps": [b - a for a, b in zip(stamps, stamps[1:])],
            "tokens": tokens, "text": text, "start": start, "end": end}


class InProcChat(InProc):
    """An in-process interpreter that runs chat completions of the real model."""

    def __init__(self, model: Path, n_threads: int, args, work: Path, name: str = "inproc-real",
                 huge_pages: bool = False):
        spec = {"path": str(model), "n_ctx": N_CTX, "threads": n_threads, "tokens": REAL_TOKENS,
                "messages": REAL_MESSAGES, "sampling": REAL_SAMPLING, "schema": STORY,
                "extra_bufts": args.extra_bufts}
        self._start(INPROC_CHAT_SCRIPT, spec, args, work, name, huge_pages)

    def chat(self, structured: bool, what: str) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"structured": structured}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"{self.name}: the in-process interpreter is gone: {exc}") from None
        r = self._read(what)
        return real_metrics(r["start"], r["stamps"], r["end"], r["text"], r["tokens"], what)


def openai_chat(port: int, structured: bool, what: str, extra: dict | None = None) -> dict:
    """``POST /v1/chat/completions``, streamed, usage in the last chunk. `extra`: more fields
    of the request (llama-server's ``ignore_eos``)."""
    payload = {"model": "smol", "messages": REAL_MESSAGES, "max_tokens": REAL_TOKENS,
               "stream": True, "stream_options": {"include_usage": True}, **REAL_SAMPLING,
               **(extra or {})}
    if structured:
        payload["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "story", "schema": STORY}}
    stamps, text, tokens = [], [], 0
    start = time.perf_counter()
    for now, _, data in sse_lines(port, "/v1/chat/completions", payload, what,
                                  REQUEST_TIMEOUT_S):
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise BenchError(f"{what}: {chunk['error']}")
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk["choices"]:
            if choice["delta"].get("content"):
                stamps.append(now)
                text.append(choice["delta"]["content"])
    return real_metrics(start, stamps, time.perf_counter(), "".join(text), tokens, what)


def native_chat(port: int, what: str) -> dict:
    """``POST /api/v1/chat``, streamed: ``message.delta`` events, the count in ``chat.end``."""
    payload = {"model": "smol", "input": REAL_MESSAGES[1]["content"], "stream": True,
               "system_prompt": REAL_MESSAGES[0]["content"], "max_output_tokens": REAL_TOKENS,
               "store": False, **{k: v for k, v in REAL_SAMPLING.items() if k != "seed"}}
    stamps, text, tokens = [], [], 0
    start = time.perf_counter()
    # /api/v1/chat has no seed: the instance samples with the one it was loaded with (SEED)
    for now, name, data in sse_lines(port, "/api/v1/chat", payload, what,
                                     REQUEST_TIMEOUT_S):
        event = json.loads(data)
        if name == "message.delta":
            stamps.append(now)
            text.append(event["content"])
        elif name == "error":
            raise BenchError(f"{what}: {event['error']}")
        elif name == "chat.end":
            tokens = event["result"]["stats"]["total_output_tokens"]
    return real_metrics(start, stamps, time.perf_counter(), "".join(text), tokens, what)


def socket_chat(socket_path: str, what: str) -> dict:
    """The same chat straight on the instance's Unix socket, as the HTTP worker sends it: the
    instance's share of every wire, without HTTP or a client's parsing of chunks."""
    request = {"op": "run", "kind": "generate", "if_idle": False,
               "params": {"messages": REAL_MESSAGES, "max_tokens": REAL_TOKENS, **REAL_SAMPLING}}
    start, stamps, text, done = socket_job(socket_path, request, what)
    return real_metrics(start, stamps, time.perf_counter(), "".join(text),
                        done["completion_tokens"], what)


def sdk_chat(llm, what: str) -> dict:
    """The official Python client's ``respond_stream``: a fragment per text line."""
    import lmstudio
    chat = lmstudio.Chat(REAL_MESSAGES[0]["content"])
    chat.add_user_message(REAL_MESSAGES[1]["content"])
    config = {"temperature": REAL_SAMPLING["temperature"], "topPSampling": REAL_SAMPLING["top_p"],
              "topKSampling": REAL_SAMPLING["top_k"], "minPSampling": REAL_SAMPLING["min_p"],
              "repeatPenalty": REAL_SAMPLING["repeat_penalty"], "maxTokens": REAL_TOKENS}
    # no seed: lmstudio 1.5's prediction config has none (it drops the key), so the instance
    # samples with the one it was loaded with, SEED (real_model_wires)
    stamps, text = [], []
    start = time.perf_counter()
    stream = llm.respond_stream(chat, config=config)
    for fragment in stream:
        stamps.append(time.perf_counter())
        text.append(fragment.content)
    stats = stream.result().stats
    return real_metrics(start, stamps, time.perf_counter(), "".join(text),
                        stats.predicted_tokens_count, what)


def sdk_wire_chat(wire, what: str) -> dict:
    """`sdk_chat`'s prediction from `sdk_wire.WireClient`: the same frames, read in the
    caller's thread (the server's SDK path without the official client's own work)."""
    fields = [{"key": "llm.prediction.temperature", "value": REAL_SAMPLING["temperature"]},
              {"key": "llm.prediction.topPSampling",
               "value": {"checked": True, "value": REAL_SAMPLING["top_p"]}},
              {"key": "llm.prediction.topKSampling", "value": REAL_SAMPLING["top_k"]},
              {"key": "llm.prediction.minPSampling",
               "value": {"checked": True, "value": REAL_SAMPLING["min_p"]}},
              {"key": "llm.prediction.repeatPenalty",
               "value": {"checked": True, "value": REAL_SAMPLING["repeat_penalty"]}},
              {"key": "llm.prediction.maxPredictedTokens",
               "value": {"checked": True, "value": REAL_TOKENS}}]
    stamps, text, tokens = [], [], 0
    start = time.perf_counter()
    for message in wire.predict("smol", REAL_MESSAGES, fields):
        if message["type"] == "fragment":
            stamps.append(time.perf_counter())
            text.append(message["fragment"]["content"])
        elif message["type"] == "success":
            tokens = message["stats"]["predictedTokensCount"]
    return real_metrics(start, stamps, time.perf_counter(), "".join(text), tokens, what)


def real_model_wires(model: Path, models_dir: Path, args, work: Path, watch: CpuWatch) -> dict:
    """The real model (SmolLM2) streamed through /v1, /api/v1/chat and the SDK, and in-process;
    then structured output (a JSON schema) through /v1 and in-process (llama-cpp-python's own
    grammar sampling): all interleaved."""
    import lmstudio
    state_dir = Path(tempfile.mkdtemp(prefix="s-", dir=work))
    server = Server(models_dir, state_dir, work / "server-real.log",
                    {"LMHOST_INSTANCE_THREADS": str(args.threads)})
    inproc, inproc_hp, client, peer, wire = None, None, None, None, None
    try:
        up = server.start()
        log(f"    lmhost serve --workers 1 on {HOST}:{server.port}, "
            f"LMHOST_INSTANCE_THREADS={args.threads}: healthy after {up:.2f} s")
        # the seed of every request that gives none: /api/v1/chat's, and the official
        # Python SDK's, whose prediction config has no seed (it drops the key)
        took = server.load("smol", model=REAL_KEY, seed=SEED)
        log(f"    POST /api/v1/models/load ({REAL_KEY}, identifier 'smol', seed {SEED}): "
            f"{took:.2f} s")
        settle(server, 1)
        inproc = InProcChat(model, args.threads, args, work)
        if args.huge_pages:
            inproc_hp = InProcChat(model, args.threads, args, work, "inproc-real-hp",
                                   huge_pages=True)
        client = lmstudio.Client(f"{HOST}:{server.port}")
        llm = client.llm.model("smol")
        wire = WireClient(HOST, server.port, REQUEST_TIMEOUT_S)
        socket_path = server.socket_of("smol")
        peer = start_llama_server(model, args, work, "llama-server-real")
        kinds = {
            "inproc": lambda: inproc.chat(False, "in-process"),
            "v1": lambda: openai_chat(server.port, False, "/v1/chat/completions"),
            "native": lambda: native_chat(server.port, "/api/v1/chat"),
            "sdk": lambda: sdk_chat(llm, "SDK respond_stream"),
            "sdk_wire": lambda: sdk_wire_chat(wire, "SDK wire, minimal client"),
            "socket": lambda: socket_chat(socket_path, "instance socket"),
            "llama_server": lambda: openai_chat(peer.port, False, "llama-server", IGNORE_EOS),
            "inproc_structured": lambda: inproc.chat(True, "in-process, structured"),
            "v1_structured": lambda: openai_chat(server.port, True, "/v1, structured"),
            "inproc_huge_pages": lambda: inproc_hp.chat(False, "in-process, huge pages"),
        }
        if peer is None:
            del kinds["llama_server"]
        if inproc_hp is None:
            del kinds["inproc_huge_pages"]
        for action in kinds.values():
            action()  # warm-up
        wait_quiet(args.quiet_wait, "the runs")
        measures = {kind: Measure(watch, args, kind) for kind in kinds}

        def timed(kind: str) -> Callable[[], dict]:
            def run_it() -> dict:
                if kind == "sdk_wire":
                    wire.refresh()  # the pings it left while idle, before the run's settling
                return measures[kind].one(kinds[kind])
            return run_it

        # every lmhost side is the one instance's; in-process plain and structured one process
        process = {kind: ("inhp" if kind == "inproc_huge_pages" else
                          "in" if kind.startswith("inproc") else
                          "peer" if kind == "llama_server" else "smol") for kind in kinds}
        # a spacer is an untimed run of a side: in-process, the socket or llama-server
        spacers = {process[kind]: kinds[kind] for kind in ("inproc", "socket", "llama_server")
                   if kind in kinds}
        runs = shuffled_rounds(args.runs, {kind: timed(kind) for kind in kinds}, process,
                               spacers, args.order_seed + 5,  # [5]'s own draw
                               last=process[list(kinds)[-1]])  # the warm-ups' last
        if wire.reconnects:
            log(f"    the minimal SDK client connected again {wire.reconnects} times: it had "
                "left the server's ping unanswered while idle")
        server.unload("smol")
    except (BenchError, OSError) as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}") from None
    finally:
        shut_down(server, client and client.close, wire and wire.close, inproc and inproc.close,
                  inproc_hp and inproc_hp.close, peer and peer.stop)
    titles = {"inproc": "in-process (create_chat_completion, stream)", "v1": "/v1/chat/completions",
              "native": "/api/v1/chat", "sdk": "SDK (lmstudio respond_stream)",
              "sdk_wire": "SDK wire (bench/sdk_wire.py: one thread, no client library)",
              "socket": "instance socket (the HTTP worker's job, no HTTP)",
              "llama_server": "llama-server /v1/chat/completions (ignore_eos)",
              "inproc_structured": "in-process, JSON schema (llama-cpp-python's grammar)",
              "v1_structured": "/v1/chat/completions, JSON schema",
              "inproc_huge_pages": "in-process, loaded as lmhost's instances load (weights in huge "
                                   "pages)"}
    out = {}
    for kind, title in titles.items():
        if kind in runs:
            log(f"    {title}:")
            report_runs(runs[kind])
            out[kind] = summary(runs[kind])
            out[kind]["token_counts"] = [r["tokens"] for r in runs[kind]]
    texts = {k: out[k]["texts"] for k in ("inproc", "v1", "native", "sdk", "sdk_wire", "socket",
                                          "inproc_huge_pages") if k in out}
    other = [k for k, t in texts.items() if t != texts["inproc"]]
    out["same_story"] = len(set().union(*texts.values())) == 1
    log(f"    the same story everywhere (same seed): "
        f"{'yes' if out['same_story'] else 'NO'}"
        + (f" (not in-process's: {', '.join(other)})" if other else ""))
    plain = [k for k in ("inproc", "v1", "native", "sdk", "sdk_wire", "socket", "llama_server",
                         "inproc_huge_pages") if k in out]
    counts = {k: out[k]["token_counts"] for k in plain}
    out["tokens_match"] = len({c for k in plain for c in counts[k]}) == 1
    log("    tokens generated per side: " + ", ".join(f"{k} {counts[k]}" for k in plain)
        + f": {'all the same' if out['tokens_match'] else 'NOT all the same'}")
    return out


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256,
                        help="max_tokens of every completion (default 256)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed completions (rounds, with 2 clients) per measurement "
                             "(default 3)")
    parser.add_argument("--threads", type=int, default=2,
                        help="llama.cpp threads in-process and of the instance in [2] "
                             "(default 2; [3] uses 1 per instance)")
    parser.add_argument("--prompt", default="Once upon a time",
                        help='the prompt (default "Once upon a time")')
    parser.add_argument("--quiet-wait", type=float, default=60.0, dest="quiet_wait",
                        help="seconds to wait, before each measurement, for other processes "
                             f"to leave the CPUs (under {QUIET_BUSY * 100:.0f}%% busy) "
                             "(default 60)")
    parser.add_argument("--order-seed", type=int, default=None, dest="order_seed",
                        help="the seed of the rounds' orders (default: a new one, logged)")
    parser.add_argument("--retries", type=int, default=6,
                        help="runs done again, per measurement, when other processes used "
                             f"over {FOREIGN_LIMIT:.2f} cores during them (default 6)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (model, logs, state dirs)")
    parser.add_argument("--no-llama-server", action="store_true", dest="no_llama_server",
                        help="leave llama.cpp's own server out (it is built once, on the first "
                             "run: bench/llama_server.py)")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 2 <= args.tokens <= N_CTX - 64:
        parser.error(f"--tokens must be between 2 and {N_CTX - 64}")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if not args.prompt:
        parser.error("--prompt must not be empty")
    if args.quiet_wait < 0 or args.retries < 0:
        parser.error("--quiet-wait and --retries must not be negative")
    if args.order_seed is None:
        args.order_seed = random.SystemRandom().randrange(1 << 31)
    return args


def run(args, work: Path) -> int:
    cpus = len(os.sched_getaffinity(0))
    log(f"lmhost throughput benchmark: {args.tokens} tokens per completion, {args.runs} runs, "
        f"{threads(args.threads)} for llama.cpp, work dir {work}")
    log(f"python {sys.version.split()[0]}, {cpus} CPU(s) available; prompt {args.prompt!r}, "
        f"temperature {TEMPERATURE}, top_p {TOP_P}, seed {SEED}, n_ctx {N_CTX}")
    if cpus < 2:
        log("note: 1 CPU: the 2-instance test cannot scale here")
    args.extra_bufts = common.engine_extra_bufts()
    log(f"in-process interpreters load with llama.cpp's extra buffer types "
        f"{'on' if args.extra_bufts else 'off'}, as lmhost's instances do on this host "
        "(the engine probe's verdict)")
    args.huge_pages = hugepages.decided_here()
    log(f"lmhost's instances keep the weights in huge pages here: "
        f"{'yes' if args.huge_pages else 'no'} (THP {hugepages.thp_mode()}; LMHOST_HUGE_PAGES); "
        "the in-process baseline maps the file, as llama-cpp-python does by default"
        + ("; a second in-process side loads as the instances do, and the wires' targets "
           "against in-process are judged against it" if args.huge_pages else ""))
    args.llama_server = None if args.no_llama_server else peer_binary()
    if args.llama_server is not None:
        log(f"llama.cpp's own server: {args.llama_server} (the llama.cpp that llama-cpp-python "
            "vendors), one slot, the same context, threads and sampling, ignore_eos; "
            f"{'' if args.extra_bufts else '--no-repack (extra buffer types off), '}"
            "flash attention off (as lmhost loads)")
    watch = CpuWatch(work)

    models_dir = work / "models"
    started = time.perf_counter()
    model = write_bench_model(models_dir / MODEL_RELPATH)
    took = time.perf_counter() - started
    params_m = model.n_params / 1e6
    log(f"\n[1] bench model written in {took:.2f} s: {model.path.relative_to(work)} "
        f"({params_m:.0f}M params, {model.file_type}, {model.path.stat().st_size / 1e6:.0f} MB)")

    log(f"\n[2] in-process llama-cpp-python vs lmhost's POST /v1/completions vs llama-server's, "
        f"{threads(args.threads)}, stream=true, interleaved in a new order each round (order "
        f"seed {args.order_seed}; an untimed spacer run in another process between two runs "
        f"of one process): 1 warm-up + {args.runs} runs each")
    both = side_by_side(model.path, models_dir, args, work, watch)
    log("    in-process (fresh interpreter; Llama.create_completion(stream=True)):")
    report_runs(both["in_runs"])
    log("    straight on the instance's Unix socket, as lmhost's HTTP worker does (no HTTP):")
    report_runs(both["sock_runs"])
    log("    through lmhost (http.client on loopback, a fresh connection per request, SSE lines "
        "read as they arrive):")
    report_runs(both["http_runs"])
    log("    through lmhost with LMHOST_STREAM_HANDOFF=0 (its HTTP worker relays every token):")
    report_runs(both["relay_runs"])
    cpu = {kind: cpu_per_token(both[f"{kind}_runs"]) for kind in ("http", "relay")}
    for kind, title in (("http", "as served"), ("relay", "relayed")):
        log(f"    CPU per token outside the instance, {title}: gunicorn "
            f"{cpu[kind]['worker'] * 1e6:.0f} us, this client {cpu[kind]['client'] * 1e6:.0f} us "
            f"(jiffies of {1000 / CLK_TCK:.0f} ms and process_time, over "
            f"{len(both[f'{kind}_runs'])} runs)")
    ip, hp = summary(both["in_runs"]), summary(both["http_runs"])
    sp, rp = summary(both["sock_runs"]), summary(both["relay_runs"])
    hpp = None
    if both["inhp_runs"]:
        log("    in-process, loaded as lmhost's instances load (weights in huge pages):")
        report_runs(both["inhp_runs"])
        hpp = summary(both["inhp_runs"])
    texts = ip["texts"] | sp["texts"] | hp["texts"] | rp["texts"] | (hpp["texts"] if hpp else set())
    log(f"    the same text generated everywhere (same seed and threads): "
        f"{'yes' if len(texts) == 1 else 'NO'} ({len(texts)} distinct text(s) in "
        f"{(5 if hpp else 4) * args.runs} runs)")
    pp = None
    if both["peer_runs"]:
        log("    llama-server's POST /v1/completions (the same request, ignore_eos):")
        report_runs(both["peer_runs"])
        pp = summary(both["peer_runs"])
        log(f"    llama-server: {args.tokens} tokens in every run, as every other side (checked); "
            f"the same text as lmhost: {'yes' if pp['texts'] == texts else 'no'} (its own "
            "sampler code, the same seed)")

    log(f"\n[3] 1 vs 2 instances, 2 concurrent clients (threads), 1 llama.cpp thread per "
        f"instance; for reference the same with in-process interpreters; interleaved (lmhost "
        f"one, in-process one, lmhost two, in-process two, ...): 1 warm-up + {args.runs} rounds "
        "each")
    sc = scaling(model.path, models_dir, args, work, watch)

    log(f"\n[4] llama.cpp's extra buffer types (AMX, repacked weights) on vs off, in-process, "
        f"{threads(args.threads)}, interleaved: 1 warm-up + {args.runs} runs each")
    eb = extra_buffers(model.path, args, work, watch)

    real_dir = work / "real-models"
    real = place_smollm2(real_dir)
    log(f"\n[5] the real model ({REAL_KEY}, Q4_1) on every wire, {REAL_TOKENS} tokens of a story "
        f"(chat template, seed {SEED}), {threads(args.threads)}: in-process, /v1/chat/completions, "
        f"/api/v1/chat, the SDK (the official client, and a minimal one), llama-server; then a "
        f"JSON schema in-process and through /v1; interleaved: 1 warm-up + {args.runs} runs each")
    rw = real_model_wires(real, real_dir, args, work, watch)

    # -- summary ----------------------------------------------------------------------------------
    # ratios to a baseline round by round, as bench/report.py takes them
    decode_ratio = tps_ratio(hp, ip)
    overall_ratio = hp["overall_tps"] / ip["overall_tps"]
    ttft_extra = ttft_added(hp, ip)
    scale = sc["lmhost_two"] / sc["lmhost_one"]
    ref_scale = sc["inproc_two"] / sc["inproc_one"]
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    w = 50
    log(f"\nthroughput on the bench model ({params_m:.0f}M params, {model.file_type}), "
        f"{args.tokens} tokens, p50 of {args.runs}, {cpus} CPUs")
    def pair(a: float, b: float) -> str:
        return f"{a * 1000:.2f} / {b * 1000:.2f}"
    rows = [("", "in-process", "instance socket", "lmhost HTTP", "HTTP/in-proc"),
            (f"decode tok/s ({threads(args.threads)})", f"{ip['decode_tps']:.1f}",
             f"{sp['decode_tps']:.1f}", f"{hp['decode_tps']:.1f}", f"{decode_ratio:.3f}"),
            ("overall tok/s (tokens / total time)", f"{ip['overall_tps']:.1f}",
             f"{sp['overall_tps']:.1f}", f"{hp['overall_tps']:.1f}", f"{overall_ratio:.3f}"),
            ("time to first token", ms(ip["ttft"]), ms(sp["ttft"]), ms(hp["ttft"]),
             f"{ttft_extra * 1000:+.1f} ms"),
            ("  min", ms(ip["ttft_min"]), ms(sp["ttft_min"]), ms(hp["ttft_min"]),
             f"{(hp['ttft_min'] - ip['ttft_min']) * 1000:+.1f} ms"),
            ("gap between tokens, p50 / p99 (ms)", pair(ip["gap_p50"], ip["gap_p99"]),
             pair(sp["gap_p50"], sp["gap_p99"]), pair(hp["gap_p50"], hp["gap_p99"]), ""),
            ("relayed by the HTTP worker: decode tok/s", "", "", f"{rp['decode_tps']:.1f}",
             f"{tps_ratio(rp, ip):.3f}"),
            ("in-process loaded as the instances load (huge pages)",
             f"{hpp['decode_tps']:.1f}" if hpp else "not run", "", "",
             f"{tps_ratio(hpp, ip):.3f}" if hpp else ""),
            ("(ratios and the TTFT gap: p50 over rounds of the runs of each round)", "", "",
             "", ""),
            ("", "", "", "", ""),
            ("2 completions at once, 1 thread each (tok/s)", "in-process", "", "lmhost HTTP",
             ""),
            ("  one llama.cpp (the two take turns)", f"{sc['inproc_one']:.1f}", "",
             f"{sc['lmhost_one']:.1f}", ""),
            ("  two llama.cpp (interpreters / instances)", f"{sc['inproc_two']:.1f}", "",
             f"{sc['lmhost_two']:.1f}", ""),
            ("  two / one", f"{ref_scale:.2f}x", "", f"{scale:.2f}x", ""),
            ("", "", "", "", ""),
            ("extra buffer types, in-process decode tok/s", "on", "", "off", "off/on"),
            ("", _tps_or(eb[True]), "", _tps_or(eb[False]),
             f"{eb[False] / eb[True]:.3f}" if all(isinstance(v, float) for v in eb.values())
             else "")]
    if pp is not None:
        rows[7:7] = [("llama-server (llama.cpp's own), same request", "decode tok/s", "TTFT",
                      "HTTP/server", "socket/server"),
                     ("", f"{pp['decode_tps']:.1f}", ms(pp["ttft"]),
                      f"{tps_ratio(hp, pp):.3f}", f"{tps_ratio(sp, pp):.3f}")]
    log("\n".join(f"{a:<{w}}{b:>14}{c:>17}{d:>14}{e:>14}" for a, b, c, d, e in rows))
    # lmhost's own cost: against in-process loaded as the instances load, where it ran
    alike, alike_name = (hpp, "in-process loaded alike") if hpp else (ip, "in-process")
    target_ratio, target_extra = tps_ratio(hp, alike), ttft_added(hp, alike)
    targets = [
        (f"HTTP decode tok/s >= {TPS_RATIO_TARGET:.2f} x {alike_name}", f"{target_ratio:.3f}",
         target_ratio >= TPS_RATIO_TARGET),
        (f"HTTP TTFT <= {alike_name} + {TTFT_EXTRA_TARGET_S * 1000:.0f} ms",
         f"{target_extra * 1000:+.1f} ms", target_extra <= TTFT_EXTRA_TARGET_S),
        (f"2 instances >= {SCALING_TARGET:.1f}x 1 instance (2 clients)", f"{scale:.2f}x",
         scale >= SCALING_TARGET),
    ]
    if pp is not None:
        ratio = tps_ratio(hp, pp)
        targets.append(("HTTP decode tok/s >= llama-server's", f"{ratio:.3f}",
                        ratio >= PEER_RATIO_TARGET))
    base = rw["inproc"]
    peer = rw.get("llama_server")
    real_rows = [("", "tok/s", "x llama-server", "TTFT", "x in-process")]
    for kind, title in (("inproc", "in-process"), ("inproc_huge_pages", "in-process, huge pages"),
                        ("v1", "/v1/chat/completions"),
                        ("native", "/api/v1/chat"), ("sdk", "SDK respond_stream"),
                        ("sdk_wire", "SDK wire, minimal client"),
                        ("socket", "instance socket"),
                        ("llama_server", "llama-server /v1/chat/completions")):
        r = rw.get(kind)
        if r is not None:
            real_rows.append((f"  {title}", f"{r['decode_tps']:.1f}",
                              f"{tps_ratio(r, peer):.3f}" if peer else "",
                              ms(r["ttft"]), f"{tps_ratio(r, base):.3f}"))
    structured_inproc = rw["inproc_structured"]["decode_tps"] / base["decode_tps"]
    structured_lmhost = rw["v1_structured"]["decode_tps"] / rw["v1"]["decode_tps"]
    real_rows += [("  JSON schema, in-process (structured/plain)",
                   f"{rw['inproc_structured']['decode_tps']:.1f}", "",
                   ms(rw["inproc_structured"]["ttft"]), f"{structured_inproc:.3f}"),
                  ("  JSON schema, /v1 (structured/plain)", f"{rw['v1_structured']['decode_tps']:.1f}",
                   "", ms(rw["v1_structured"]["ttft"]), f"{structured_lmhost:.3f}")]
    log(f"\nthe real model ({REAL_KEY}), {REAL_TOKENS} tokens, decode tok/s p50 of {args.runs}")
    log("\n".join(f"{a:<{w}}{b:>14}{c:>17}{d:>14}{e:>14}" for a, b, c, d, e in real_rows))
    real_alike = rw.get("inproc_huge_pages") or base
    for kind, title in (("v1", "/v1"), ("native", "/api/v1/chat"), ("sdk", "SDK"),
                        ("socket", "instance socket")):
        ratio = tps_ratio(rw[kind], real_alike)
        extra = ttft_added(rw[kind], real_alike)
        targets += [(f"real model, {title} tok/s >= {TPS_RATIO_TARGET:.2f} x {alike_name}",
                     f"{ratio:.3f}", ratio >= TPS_RATIO_TARGET),
                    (f"real model, {title} TTFT <= {alike_name} + "
                     f"{TTFT_EXTRA_TARGET_S * 1000:.0f} ms",
                     f"{extra * 1000:+.1f} ms", extra <= TTFT_EXTRA_TARGET_S)]
        if peer is not None:
            ratio = tps_ratio(rw[kind], peer)
            targets.append((f"real model, {title} tok/s >= llama-server's", f"{ratio:.3f}",
                            ratio >= PEER_RATIO_TARGET))
    log("\ntargets (information only)")
    log("\n".join(f"  {a:<{w - 2}}{b:>14}{verdict(ok):>17}" for a, b, ok in targets))
    if scale < SCALING_TARGET and ref_scale < SCALING_TARGET:
        log(f"  (two llama.cpp processes without lmhost reach {ref_scale:.2f}x on this machine: "
            f"the 2-instance target is out of its reach)")
    common.write_json(args, "throughput", {
        "threads": args.threads, "tokens": args.tokens, "runs": args.runs,
        "order_seed": args.order_seed,
        "real_tokens": REAL_TOKENS, "extra_bufts": args.extra_bufts,
        "huge_pages": args.huge_pages,
        "bench_model": {"params": model.n_params, "file_type": model.file_type,
                        "bytes": model.path.stat().st_size,
                        "sides": {"in_process": _figures(ip), "socket": _figures(sp),
                                  "v1": _figures(hp), "v1_relayed": _figures(rp),
                                  "llama_server": _figures(pp) if pp else None,
                                  "in_process_huge_pages": _figures(hpp) if hpp else None},
                        "cpu_per_token": {"v1": cpu["http"], "v1_relayed": cpu["relay"]},
                        "same_text": len(texts) == 1,
                        "tokens_match": True},  # metrics() checked every side's count
        "scaling": sc,
        "extra_buffer_types": {"on": eb.get(True), "off": eb.get(False)},
        "real_model": {"key": REAL_KEY, "tokens_match": rw["tokens_match"],
                       "same_story": rw["same_story"],
                       "sides": {kind: {**_figures(rw[kind]),
                                        "token_counts": rw[kind]["token_counts"]}
                                 for kind in ("inproc", "v1", "native", "sdk", "sdk_wire",
                                              "socket", "llama_server", "inproc_huge_pages",
                                              "inproc_structured", "v1_structured")
                                 if kind in rw}}})
    return 0


def cpu_per_token(runs: list[dict]) -> dict:
    """Seconds of CPU per generated token outside the instance, over `runs`: the HTTP worker
    (and gunicorn's arbiter) and this client."""
    tokens = sum(r["tokens"] for r in runs)
    return {"worker": sum(r["worker_cpu"] for r in runs) / tokens,
            "client": sum(r["client_cpu"] for r in runs) / tokens}


def _figures(s: dict) -> dict:
    """A side's summary without its texts (seconds and tokens/s)."""
    return {k: v for k, v in s.items() if k not in ("texts", "token_counts")}


def peer_binary() -> Path:
    """llama-server, built on the first run (bench/llama_server.py)."""
    try:
        return ensure_llama_server(log)
    except (OSError, subprocess.CalledProcessError, tarfile.TarError) as exc:
        raise BenchError(f"llama-server could not be built ({exc}): it needs cmake, a C++ "
                         "compiler and pip's access to PyPI once; or run with "
                         "--no-llama-server") from None


def _tps_or(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    return run_in_work_dir(run, parse_args(argv), "lmtp-")


if __name__ == "__main__":
    sys.exit(main())
