#!/usr/bin/env python3
"""Benchmark: what a load through the API costs on top of llama.cpp's own model load.

One run does it all, on the synthetic bench model (~153M parameters, Q8_0, ~163 MB):

1. writes the model once (`lmhost.synthetic.write_bench_model`) into a temporary models dir,
   as ``bench/bench-150m-GGUF/bench-150m-Q8_0.gguf`` (model key ``bench-150m``);
2. in-process baseline: in a fresh interpreter (the parent never imports llama_cpp), times
   ``import llama_cpp`` once, then ``llama_cpp.Llama(...)`` construction ``--runs`` times
   (load, close, repeat) with ``verbose=False``, then ``--runs`` times more with
   ``verbose=True``, which is what lmhost's instance process passes; and, where lmhost's
   instances read the weights into huge pages (`workers.hugepages`), ``--runs`` times loaded
   that way: the baseline that the API's overhead and its targets are taken against, so that
   they are lmhost's own cost (the mapped load stays in the figures, for reference);
3. through the API with the spare pool on (``LMHOST_SPARE_INSTANCES=1``, the default): starts
   the real service (``lmhost serve --workers 1`` on a free 127.0.0.1 port, fresh state dir),
   then ``--runs`` times: ``POST /api/v1/models/load`` (wall time of the HTTP call, and the
   ``load_time_seconds`` the instance measured), then ``POST /api/v1/models/unload`` (not
   timed), then waits (bounded) until the supervisor's spare process is ready again;
4. the same with the spare pool off (``LMHOST_SPARE_INSTANCES=0``): every load starts a Python
   process that imports llama_cpp;
5. load time vs model size: four more synthetic llamas (`lmhost.synthetic.write_dense_llama`,
   about 1.6, 4.6, 26 and 75 MB in Q8_0) next to the bench model, each loaded ``--runs`` times
   in-process (a fresh interpreter each, as in 2., mapped and loaded alike) and through the
   API (spare pool on, as in 3.; one server for all);
6. prints a summary table with the targets (information only: the exit status is non-zero only
   when a request fails or a server does not come up).

For each load through the API the instance process's own log (``<state>/logs/<handle>.log``)
splits the wall time into: request sent -> instance has the load spec ("loading ..." logged),
spec -> "loaded in ..." logged, and "loaded" -> HTTP response read (log timestamps: 1 ms steps).

    .venv/bin/python bench/load_overhead.py [--runs 10] [--context-length 2048] [--threads 2]
                                            [--json PATH] [--keep]

Nothing but 127.0.0.1 is contacted. The temporary directory (under /tmp: the state dirs must be
short, they hold Unix sockets) is removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402 (puts the repo on sys.path)
from common import (HOST, SPARE_DEADLINE_S, BenchError, Server,  # noqa: E402
                    in_process_baseline, log, ms, ms_list, p50, post,
                    run_in_work_dir, verdict)
from lmhost.synthetic import write_bench_model, write_dense_llama  # noqa: E402
from workers import hugepages  # noqa: E402

MODEL_KEY = "bench-150m"
MODEL_RELPATH = Path("bench") / "bench-150m-GGUF" / "bench-150m-Q8_0.gguf"
LOAD_TIMEOUT_S = 180.0
UNLOAD_TIMEOUT_S = 60.0
OVERHEAD_TARGET_COLD_S = 0.100
OVERHEAD_TARGET_SPARE_S = 0.030
# [5]: (folder in the "sizes" publisher, write_dense_llama's shape); the bench model is the largest
SIZES = (("size-1m", {"n_embd": 256, "n_layer": 2, "n_ff": 512}),
         ("size-4m", {"n_embd": 256, "n_layer": 4, "n_ff": 1024}),
         ("size-26m", {"n_embd": 512, "n_layer": 6, "n_ff": 2048}),
         ("size-75m", {"n_embd": 768, "n_layer": 8, "n_ff": 3072}))


# -- 3./4. the real service ----------------------------------------------------------------------

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_timestamp(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def instance_log_times(state_dir: Path, seen: set[str]) -> tuple[float, float] | None:
    """(time "loading ..." was logged, time "loaded in ..." was logged) from the one instance
    log not in `seen` that records a finished load; adds its handle to `seen`."""
    for path in sorted((state_dir / "logs").glob("*.log")):
        if path.stem in seen:
            continue
        loading = loaded = None
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if " INFO loading " in line and loading is None:
                loading = _log_timestamp(line)
            elif " INFO loaded in " in line and loaded is None:
                loaded = _log_timestamp(line)
        if loading is not None and loaded is not None:
            seen.add(path.stem)
            return loading, loaded
    return None


def api_loads(server: Server, runs: int, n_ctx: int, spares: int, key: str = MODEL_KEY) -> dict:
    walls, reported, to_spec, in_instance, to_response, waits = [], [], [], [], [], []
    seen: set[str] = set()
    ok, waited = server.wait_instances(spares)
    if not ok:
        log(f"    note: the spare pool was not ready within {SPARE_DEADLINE_S:.0f} s of start")
    for i in range(1, runs + 1):
        status, body, wall, sent_at = post(server.port, "/api/v1/models/load",
                                           {"model": key, "context_length": n_ctx},
                                           LOAD_TIMEOUT_S)
        received_at = sent_at + wall
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if (status != 200 or not isinstance(answer, dict) or answer.get("status") != "loaded"
                or not isinstance(answer.get("instance_id"), str)
                or not isinstance(answer.get("load_time_seconds"), (int, float))):
            raise BenchError(f"load #{i}: HTTP {status}: {body[:500]!r}")
        instance_id = answer["instance_id"]
        walls.append(wall)
        reported.append(float(answer["load_time_seconds"]))
        status, body, _, _ = post(server.port, "/api/v1/models/unload",
                                  {"instance_id": instance_id}, UNLOAD_TIMEOUT_S)
        if status != 200:
            raise BenchError(f"unload #{i} of {instance_id!r}: HTTP {status}: {body[:500]!r}")
        times = instance_log_times(server.state_dir, seen)
        if times is not None:
            to_spec.append(times[0] - sent_at)
            in_instance.append(times[1] - times[0])
            to_response.append(received_at - times[1])
        ok, waited = server.wait_instances(spares)
        waits.append(waited)
        if not ok:
            left = len(server.instance_pids())
            log(f"    note: after unload #{i}, {left} instance process(es) instead of "
                f"{spares} {'ready spare' if spares else ''} within {SPARE_DEADLINE_S:.0f} s")
    return {"wall": walls, "reported": reported, "to_spec": to_spec,
            "in_instance": in_instance, "to_response": to_response, "waits": waits}


def api_phase(name: str, spares: int, args, models_dir: Path, work: Path,
              keys: tuple[str, ...] = (MODEL_KEY,)) -> dict:
    """`api_loads` of each model of `keys` on one fresh server; the result of each by key (of
    the one key, when only one is given)."""
    state_dir = Path(tempfile.mkdtemp(prefix="s-", dir=work))
    server = Server(models_dir, state_dir, work / f"server-{name}.log",
                    {"LMHOST_SPARE_INSTANCES": str(spares),
                     "LMHOST_INSTANCE_THREADS": str(args.threads)})
    try:
        up = server.start()
        log(f"    lmhost serve --workers 1 on {HOST}:{server.port}, LMHOST_SPARE_INSTANCES={spares}, "
            f"LMHOST_INSTANCE_THREADS={args.threads}: healthy after {up:.2f} s")
        results = {key: api_loads(server, args.runs, args.context_length, spares, key)
                   for key in keys}
    except (BenchError, OSError) as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}") from None
    finally:
        how = server.stop()
        log(f"    server {how}")
    for result in results.values():
        result["state_dir"] = state_dir
    return results if len(keys) > 1 else results[keys[0]]


def report_phase(result: dict, inproc_p50: float) -> None:
    wall, reported = result["wall"], result["reported"]
    log(f"    wall time of POST load: p50 {ms(p50(wall))}, min {ms(min(wall))}, "
        f"max {ms(max(wall))}  ({ms_list(wall)})")
    log(f"    load_time_seconds:      p50 {ms(p50(reported))}, min {ms(min(reported))}, "
        f"max {ms(max(reported))}  ({ms_list(reported)})")
    log(f"    API overhead (wall p50 - in-process Llama() p50): {ms(p50(wall) - inproc_p50)}; "
        f"wall - load_time_seconds, p50 of the differences: "
        f"{ms(p50([w - r for w, r in zip(wall, reported)]))}")
    if result["to_spec"]:
        log(f"    from the instance logs (p50 of {len(result['to_spec'])}): request sent -> spec "
            f"received {ms(p50(result['to_spec']))}; spec -> loaded "
            f"{ms(p50(result['in_instance']))}; loaded -> response read "
            f"{ms(p50(result['to_response']))}")
    log(f"    wait after each unload for the instance processes to settle: p50 "
        f"{ms(p50(result['waits']))}, max {ms(max(result['waits']))}")


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="loads per measurement (default 10)")
    parser.add_argument("--context-length", type=int, default=2048, dest="context_length",
                        help="n_ctx of every load (default 2048)")
    parser.add_argument("--threads", type=int, default=2,
                        help="llama.cpp threads (n_threads, n_threads_batch) (default 2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (model, logs, state dirs)")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 1 <= args.context_length <= 4096:
        parser.error("--context-length must be between 1 and 4096 (the model's trained context)")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def run(args, work: Path) -> int:
    log(f"lmhost load-overhead benchmark: {args.runs} runs, n_ctx {args.context_length}, "
        f"{args.threads} llama.cpp threads, work dir {work}")
    log(f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} CPU(s) available")

    models_dir = work / "models"
    started = time.perf_counter()
    model = write_bench_model(models_dir / MODEL_RELPATH)
    took = time.perf_counter() - started
    size = model.path.stat().st_size
    params_m = model.n_params / 1e6
    log(f"\n[1] bench model written in {took:.2f} s: {model.path.relative_to(work)} "
        f"({params_m:.0f}M params, {model.file_type}, {size / 1e6:.0f} MB)")

    log("\n[2] in-process baseline (fresh interpreter; llama_cpp.Llama(), close, repeat)")
    base = in_process_baseline(model.path, args.context_length, args.threads, args.runs, work)
    quiet, verbose = base["quiet"], base["verbose"]
    inproc_p50, inproc_min = p50(quiet), min(quiet)
    log(f"    llama_cpp {base['version']}; import llama_cpp: {ms(base['import_s'])}")
    log(f"    Llama(verbose=False): p50 {ms(inproc_p50)}, min {ms(inproc_min)}  ({ms_list(quiet)})")
    log(f"    Llama(verbose=True):  p50 {ms(p50(verbose))}, min {ms(min(verbose))}  "
        f"({ms_list(verbose)})")
    huge = None  # loaded as lmhost's instances load here: the baseline of lmhost's own cost
    if hugepages.decided_here():
        huge = in_process_baseline(model.path, args.context_length, args.threads, args.runs,
                                   work, huge_pages=True, verbose=False)["quiet"]
        log(f"    loaded as lmhost's instances load here (the weights read into huge pages): "
            f"Llama(verbose=False) p50 {ms(p50(huge))}, min {ms(min(huge))}  ({ms_list(huge)})")
    alike_p50, alike_min = (p50(huge), min(huge)) if huge else (inproc_p50, inproc_min)

    log("\n[3] through the API, spare pool on")
    on = api_phase("spare-on", 1, args, models_dir, work)
    report_phase(on, alike_p50)

    log("\n[4] through the API, spare pool off")
    off = api_phase("spare-off", 0, args, models_dir, work)
    report_phase(off, alike_p50)

    log("\n[5] load time vs model size: in-process Llama() and POST /api/v1/models/load (spare "
        "pool on)")
    sizes = load_sizes(args, models_dir, work, model, quiet, huge, on)

    # -- summary ------------------------------------------------------------------------------
    w = 90
    header = (f"load overhead on the bench model ({params_m:.0f}M params, {model.file_type}), "
              f"n_ctx {args.context_length}, {args.threads} threads, {args.runs} runs")
    rows = [
        (header, "p50", "min"),
        ("import llama_cpp (once, fresh interpreter)", ms(base["import_s"]), ""),
        ("Llama() construction, in-process (the file mapped)", ms(inproc_p50), ms(inproc_min)),
        ("  first Llama() of that process (included above)", ms(quiet[0]), ""),
        ("  Llama(verbose=True), as the instance process passes it", ms(p50(verbose)),
         ms(min(verbose))),
        ("Llama() construction, in-process, loaded as the instances load (huge pages)",
         ms(alike_p50) if huge else "not run", ms(alike_min) if huge else ""),
        ("load_time_seconds reported by the API (spare pool on)", ms(p50(on["reported"])),
         ms(min(on["reported"]))),
        ("wall time of POST /api/v1/models/load, spare pool on", ms(p50(on["wall"])),
         ms(min(on["wall"]))),
        ("  API overhead (wall - in-process Llama() loaded alike)",
         ms(p50(on["wall"]) - alike_p50), ms(min(on["wall"]) - alike_min)),
        ("load_time_seconds reported by the API (spare pool off)", ms(p50(off["reported"])),
         ms(min(off["reported"]))),
        ("wall time of POST /api/v1/models/load, spare pool off (cold process + import)",
         ms(p50(off["wall"])), ms(min(off["wall"]))),
        ("  API overhead", ms(p50(off["wall"]) - alike_p50), ms(min(off["wall"]) - alike_min)),
    ]
    log("\n" + "\n".join(f"{a:<{w}}{b:>12}{c:>12}" for a, b, c in rows))
    # The service runs with the spare pool by default (LMHOST_SPARE_INSTANCES=1): that is "the
    # API" of the first target; the pool-off figure is shown for what the pool buys.
    shipped = p50(on["wall"]) - alike_p50
    log(f"\n{'load time vs model size (p50)':<{w}}{'in-process':>12}{'API wall':>12}"
        f"{'overhead':>12}")
    for size in sizes:
        inproc = p50(size["in_process_huge_pages"] or size["in_process"])
        wall = p50(size["api_wall"])
        label = f"  {size['name']} ({size['bytes'] / 1e6:.1f} MB)"
        log(f"{label:<{w}}{ms(inproc):>12}{ms(wall):>12}{ms(wall - inproc):>12}")
    log(f"targets: the API (as shipped, spare pool on) adds <= "
        f"{OVERHEAD_TARGET_COLD_S * 1000:.0f} ms at p50: {verdict(shipped <= OVERHEAD_TARGET_COLD_S)}"
        f" ({shipped * 1000:.1f} ms); with the spare pool < {OVERHEAD_TARGET_SPARE_S * 1000:.0f} ms:"
        f" {verdict(shipped < OVERHEAD_TARGET_SPARE_S)}; without the pool "
        f"{(p50(off['wall']) - alike_p50) * 1000:.1f} ms (a fresh process + import llama_cpp); "
        f"all against in-process Llama() {'loaded alike (huge pages)' if huge else 'mapped'}")
    common.write_json(args, "load_overhead", {
        "n_ctx": args.context_length, "threads": args.threads, "runs": args.runs,
        "model": {"params": model.n_params, "bytes": size_bytes(model),
                  "file_type": model.file_type},
        "import_s": base["import_s"], "in_process": quiet, "in_process_verbose": verbose,
        "in_process_huge_pages": huge,
        "spare_on": {"wall": on["wall"], "reported": on["reported"]},
        "spare_off": {"wall": off["wall"], "reported": off["reported"]},
        "sizes": sizes})
    return 0


def size_bytes(model) -> int:
    return model.path.stat().st_size


def load_sizes(args, models_dir: Path, work: Path, bench_model, bench_inproc: list[float],
               bench_huge: list[float] | None, bench_api: dict) -> list[dict]:
    """[5]: the SIZES models written next to the bench model, loaded in-process (mapped, and
    as the instances load where `bench_huge` was measured) and through the API; the bench
    model's figures (from [2] and [3]) as the largest. Smallest first."""
    folder = models_dir / "sizes"
    written = [(name, write_dense_llama(folder / f"{name}-GGUF" / f"{name}-Q8_0.gguf",
                                        file_type="Q8_0", name=name, **shape))
               for name, shape in SIZES]
    on = api_phase("sizes", 1, args, models_dir, work, tuple(name for name, _ in written))
    out = []
    for name, model in written:
        base = in_process_baseline(model.path, args.context_length, args.threads, args.runs, work,
                                   verbose=False)
        huge = None if bench_huge is None else in_process_baseline(
            model.path, args.context_length, args.threads, args.runs, work, huge_pages=True,
            verbose=False)["quiet"]
        out.append({"name": name, "bytes": size_bytes(model), "params": model.n_params,
                    "in_process": base["quiet"], "in_process_huge_pages": huge,
                    "api_wall": on[name]["wall"], "reported": on[name]["reported"]})
    out.append({"name": MODEL_KEY, "bytes": size_bytes(bench_model),
                "params": bench_model.n_params, "in_process": bench_inproc,
                "in_process_huge_pages": bench_huge,
                "api_wall": bench_api["wall"], "reported": bench_api["reported"]})
    for size in out:
        mapped, wall = p50(size["in_process"]), p50(size["api_wall"])
        alike = p50(size["in_process_huge_pages"]) if size["in_process_huge_pages"] else mapped
        log(f"    {size['name']}: {size['bytes'] / 1e6:.1f} MB, {size['params'] / 1e6:.1f}M "
            f"params: in-process Llama() p50 {ms(mapped)} mapped, {ms(alike)} loaded alike; "
            f"API wall p50 {ms(wall)}, overhead {ms(wall - alike)}")
    return out


def main(argv=None) -> int:
    return run_in_work_dir(run, parse_args(argv), "lmhb-")


if __name__ == "__main__":
    sys.exit(main())
