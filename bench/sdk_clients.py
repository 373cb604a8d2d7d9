#!/usr/bin/env python3
"""Benchmark: LM Studio's SDK protocol next to plain HTTP, side by side in one run.

1. writes the bench model once (`lmhost.synthetic.write_bench_model`, ~153M parameters, Q8_0)
   into a temporary models dir, key ``bench-150m``;
2. in-process baseline: ``llama_cpp.Llama(...)`` construction ``--runs`` times in a fresh
   interpreter (`common.in_process_baseline`);
3. starts the real service: ``lmhost serve --workers 1`` on a free 127.0.0.1 port, with
   ``LMHOST_SDK_MAX_SOCKETS=400`` so that 100 clients of three sockets each fit one worker;
4. listing latency: ``GET /api/v1/models`` ``--requests`` times (a fresh connection each) with
   0, then 40, then 100 official Python clients connected (``tests/e2e/sdk_clients.py`` holds
   them: llm, embedding and system sockets each), p50 and p99, and the worker's threads and RSS;
5. load time, ``--runs`` times each, interleaved: ``POST /api/v1/models/load`` and the official
   Python client's ``client.llm.load_new_instance`` (connected beforehand), same model and
   context length; each instance is unloaded and the spare pool settles between runs;
6. prints a summary with the targets (information only: the exit status is non-zero only when
   a request fails or a server does not come up): the SDK adds at most 10 ms to a REST load
   (p50), and the p99 listing with 40 clients is at most twice the idle one.

    .venv/bin/python bench/sdk_clients.py [--runs 10] [--requests 200] [--context-length 2048]
                                          [--threads 2] [--json PATH] [--keep]

Nothing but 127.0.0.1 is contacted. The temporary directory (under /tmp: the state dirs hold
Unix sockets) is removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402 (puts the repo on sys.path)
from common import (HOST, BenchError, Server, get, in_process_baseline,  # noqa: E402
                    log, ms, p50, percentile, post, run_in_work_dir, verdict)
from tests.e2e.sdk_clients import Holder  # noqa: E402 (three sockets per client)
from lmhost.synthetic import write_bench_model  # noqa: E402

MODEL_KEY = "bench-150m"
MODEL_RELPATH = Path("bench") / "bench-150m-GGUF" / "bench-150m-Q8_0.gguf"
CLIENT_COUNTS = (0, 40, 100)
SOCKETS_PER_CLIENT = 3
MAX_SOCKETS = 400
LOAD_TIMEOUT_S = 180.0
SDK_OVERHEAD_TARGET_S = 0.010
LISTING_P99_TARGET_RATIO = 2.0


# -- 4. listing latency with clients connected ------------------------------------------------

def worker_usage(master_pid: int) -> tuple[int, int]:
    """(threads, RSS bytes) of the service's one HTTP worker (the gunicorn master's child)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if not children:
        raise BenchError("the service has no HTTP worker")
    status = Path(f"/proc/{children[0]}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


def listing_latency(server: Server, requests: int) -> list[float]:
    for _ in range(5):  # warm: the catalog and the serialized listing are cached
        get(server.port, "/api/v1/models", timeout=10)
    latencies = []
    for i in range(requests):
        status, body, seconds = get(server.port, "/api/v1/models", timeout=10)
        if status != 200:
            raise BenchError(f"listing #{i}: HTTP {status}: {body[:300]!r}")
        latencies.append(seconds)
    return latencies


# -- 5. loads through REST and through the SDK --------------------------------------------------

def rest_load(server: Server, n_ctx: int) -> tuple[float, str]:
    status, body, wall, _ = post(server.port, "/api/v1/models/load",
                                 {"model": MODEL_KEY, "context_length": n_ctx}, LOAD_TIMEOUT_S)
    if status != 200:
        raise BenchError(f"REST load: HTTP {status}: {body[:500]!r}")
    return wall, json.loads(body)["instance_id"]


def sdk_load(client, n_ctx: int) -> tuple[float, str]:
    started = time.perf_counter()
    handle = client.llm.load_new_instance(MODEL_KEY, config={"contextLength": n_ctx}, ttl=None)
    return time.perf_counter() - started, handle.identifier


def unload_and_settle(server: Server, instance_id: str) -> None:
    status, body, _, _ = post(server.port, "/api/v1/models/unload", {"instance_id": instance_id},
                              LOAD_TIMEOUT_S)
    if status != 200:
        raise BenchError(f"unload of {instance_id!r}: HTTP {status}: {body[:300]!r}")
    ok, _ = server.wait_instances(1)  # the spare is back and ready: the next load is like this one
    if not ok:
        log("    note: the spare pool did not settle within its deadline")


def loads(server: Server, runs: int, n_ctx: int) -> dict[str, list[float]]:
    import lmstudio

    times: dict[str, list[float]] = {"rest": [], "sdk": []}
    with lmstudio.Client(f"{HOST}:{server.port}") as client:
        client.llm.list_loaded()  # the llm socket is open, as in a client that runs a while
        server.wait_instances(1)
        for _ in range(runs):
            for name in ("rest", "sdk"):  # interleaved: drift hits both alike
                wall, instance_id = (rest_load(server, n_ctx) if name == "rest"
                                     else sdk_load(client, n_ctx))
                times[name].append(wall)
                unload_and_settle(server, instance_id)
    return times


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="loads of each kind (default 10)")
    parser.add_argument("--requests", type=int, default=200,
                        help="listing requests per client count (default 200)")
    parser.add_argument("--context-length", type=int, default=2048, dest="context_length",
                        help="n_ctx of every load (default 2048)")
    parser.add_argument("--threads", type=int, default=2,
                        help="llama.cpp threads (LMHOST_INSTANCE_THREADS) (default 2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (model, logs, state dir)")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.requests < 1:
        parser.error("--runs and --requests must be at least 1")
    if not 1 <= args.context_length <= 4096:
        parser.error("--context-length must be between 1 and 4096 (the model's trained context)")
    return args


def run(args, work: Path) -> int:
    log(f"lmhost SDK benchmark: {args.runs} loads of each kind, {args.requests} listings per "
        f"client count, n_ctx {args.context_length}, {args.threads} llama.cpp threads, "
        f"work dir {work}")
    log(f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} CPU(s) available")

    models_dir = work / "models"
    model = write_bench_model(models_dir / MODEL_RELPATH)
    log(f"\n[1] bench model written: {model.path.relative_to(work)} "
        f"({model.n_params / 1e6:.0f}M params, {model.file_type})")

    log("\n[2] in-process baseline (fresh interpreter; llama_cpp.Llama(), close, repeat)")
    base = in_process_baseline(model.path, args.context_length, args.threads, args.runs, work)
    inproc = base["verbose"]  # the instance process passes verbose=True
    log(f"    Llama(verbose=True): p50 {ms(p50(inproc))}, min {ms(min(inproc))}")

    server = Server(models_dir, Path(tempfile.mkdtemp(prefix="s-", dir=work)), work / "server.log",
                    {"LMHOST_INSTANCE_THREADS": str(args.threads),
                     "LMHOST_SDK_MAX_SOCKETS": str(MAX_SOCKETS), "LMHOST_SDK_DISCOVERY": "0"})
    listings: dict[int, list[float]] = {}
    usage: dict[int, tuple[int, int]] = {}
    try:
        up = server.start()
        log(f"\n[3] lmhost serve --workers 1 on {HOST}:{server.port}, LMHOST_THREADS=8, "
            f"LMHOST_SDK_MAX_SOCKETS={MAX_SOCKETS}: healthy after {up:.2f} s")
        log("\n[4] GET /api/v1/models with SDK clients connected "
            f"({SOCKETS_PER_CLIENT} websockets each)")
        for count in CLIENT_COUNTS:
            try:
                clients = Holder(f"{HOST}:{server.port}", count, work / f"clients-{count}.log") \
                    if count else None
            except AssertionError as exc:
                raise BenchError(str(exc)) from None
            try:
                usage[count] = worker_usage(server.proc.pid)
                listings[count] = listing_latency(server, args.requests)
            finally:
                if clients is not None:
                    clients.close()
            lat = listings[count]
            log(f"    {count:>3} clients: p50 {ms(p50(lat))}, p99 {ms(percentile(lat, 99))}, "
                f"max {ms(max(lat))}; worker threads {usage[count][0]}, "
                f"RSS {usage[count][1] / 2**20:.0f} MiB")
        log("\n[5] loads, interleaved: REST POST /api/v1/models/load vs "
            "lmstudio client.llm.load_new_instance")
        times = loads(server, args.runs, args.context_length)
    except (BenchError, OSError) as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}") from None
    finally:
        log(f"    server {server.stop()}")

    rest, sdk = times["rest"], times["sdk"]
    w = 78
    rows = [("listing GET /api/v1/models (fresh connection)", "p50", "p99", "threads")]
    for count in CLIENT_COUNTS:
        lat = listings[count]
        rows.append((f"  with {count} SDK clients connected ({count * SOCKETS_PER_CLIENT} sockets)",
                     ms(p50(lat)), ms(percentile(lat, 99)), str(usage[count][0])))
    rows += [("", "", "", ""),
             (f"load of the bench model, n_ctx {args.context_length}", "p50", "min", ""),
             ("  Llama() in-process (verbose, as the instance passes it; the file mapped)",
              ms(p50(inproc)), ms(min(inproc)), ""),
             ("  REST POST /api/v1/models/load (wall)", ms(p50(rest)), ms(min(rest)), ""),
             ("  SDK client.llm.load_new_instance (wall)", ms(p50(sdk)), ms(min(sdk)), ""),
             ("  SDK - REST", ms(p50(sdk) - p50(rest)), ms(min(sdk) - min(rest)), "")]
    log("\n" + "\n".join(f"{a:<{w}}{b:>11}{c:>11}{d:>9}" for a, b, c, d in rows))
    overhead = p50(sdk) - p50(rest)
    ratio = percentile(listings[40], 99) / percentile(listings[0], 99)
    log(f"targets: SDK load within {SDK_OVERHEAD_TARGET_S * 1000:.0f} ms of REST (p50): "
        f"{verdict(overhead <= SDK_OVERHEAD_TARGET_S)} ({overhead * 1000:+.1f} ms); p99 listing "
        f"with 40 clients <= {LISTING_P99_TARGET_RATIO:.0f}x idle: "
        f"{verdict(ratio <= LISTING_P99_TARGET_RATIO)} ({ratio:.2f}x)")
    common.write_json(args, "sdk_clients", {
        "n_ctx": args.context_length, "threads": args.threads,
        "listing": {str(count): {"seconds": listings[count], "worker_threads": usage[count][0],
                                 "worker_rss": usage[count][1]} for count in CLIENT_COUNTS},
        "in_process_verbose": inproc, "rest_load": rest, "sdk_load": sdk})
    return 0


def main(argv=None) -> int:
    return run_in_work_dir(run, parse_args(argv), "lmhs-")


if __name__ == "__main__":
    sys.exit(main())
