#!/usr/bin/env python3
"""Benchmark: listing many models with large (32k-token) vocabularies.

One run does it all, for each N of ``--counts`` (default 10, 100, 1,000), smallest first, the
models dir growing from one N to the next:

1. writes N GGUF files in LM Studio's ``<publisher>/<folder>/<file>.gguf`` layout: one file
   from `lmhost.synthetic.write_vocab_heavy_llama`, copied N times (every copy is a separate
   file with its own path and mtime, so every one is parsed on a cold listing);
2. times a cold in-process listing (a fresh `Catalog` with an empty state dir);
3. starts the real service (``lmhost serve --workers 1`` on a free 127.0.0.1 port, fresh state
   dir) and times ``GET /api/v1/models`` over loopback: the first (cold) request, then warm ones;
4. time to first token through ``/v1`` with those N models in the dir: a tiny model
   (`lmhost.synthetic.write_dense_llama`, ~0.5 MB, so that its own work is small next to the
   service's) is put in the dir and loaded, and ``POST /v1/completions`` (streamed, 8 tokens)
   is timed ``--ttft-requests`` times to its first text (the hot path routes a loaded model from
   the instance table, never the dir: the figure should not grow with N); then it is unloaded
   and removed;
then, on the largest N:
5. times the reference reader `gguf.GGUFReader` on a sample of the same files and extrapolates
   to N files;
6. prints a summary table with the targets (information only; the exit status is non-zero only
   when a listing is wrong or the server fails).

    .venv/bin/python bench/list_models.py [--counts 10,100,1000] [--requests 50]
                                          [--ttft-requests 20] [--reader-sample 5]
                                          [--json PATH] [--keep DIR]

Nothing but 127.0.0.1 is contacted. The temporary directory is removed at the end unless
``--keep DIR`` is given (then DIR/models is kept and reused by the next run with --keep DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402 (puts the repo on sys.path)
from common import (HOST, BenchError, Server, get, log, percentile, post,  # noqa: E402
                    run_bench, sse_lines)
from workers.catalog import Catalog  # noqa: E402
from lmhost.synthetic import write_dense_llama, write_vocab_heavy_llama  # noqa: E402

PUBLISHERS = 10
COLD_REQUEST_TIMEOUT_S = 300.0
WARM_REQUEST_TIMEOUT_S = 30.0
WARM_P50_TARGET_MS = 20.0
COLD_SPEEDUP_TARGET = 50.0
TINY = ("bench-ttft", "tiny-llama-GGUF", "tiny-llama-Q8_0.gguf")  # the model TTFT is timed on
TTFT_TOKENS = 8
LOAD_TIMEOUT_S = 120.0


# -- 1. the models dir -----------------------------------------------------------------------

def layout(n: int) -> list[tuple[str, str, str]]:
    """(publisher, folder, file) for n models, dealt round the PUBLISHERS publishers: the
    layout of n models holds that of fewer, so the dir grows from one count to the next."""
    return [(f"bench-pub-{i % PUBLISHERS:02d}", f"vocab-heavy-{i:05d}-GGUF",
             f"vocab-heavy-{i:05d}-Q8_0.gguf") for i in range(n)]


def expected_keys(n: int) -> set[str]:
    return {folder.lower()[:-5] for _, folder, _ in layout(n)}


def make_models(work: Path, n: int) -> tuple[Path, int, int, float]:
    """Writes (or reuses) the models dir; returns (models_dir, file size, files written, s)."""
    models_dir = work / "models"
    template = work / "template" / "vocab-heavy-Q8_0.gguf"
    started = time.perf_counter()
    if not template.is_file():
        write_vocab_heavy_llama(template, vocab_size=32000, seed=0)
    size = template.stat().st_size
    wanted = {models_dir / p / f / name for p, f, name in layout(n)}
    if models_dir.is_dir():
        present = set(models_dir.glob("*/*/*"))
        stray = sorted(present - wanted)
        if stray:
            raise BenchError(f"{models_dir} holds {len(stray)} file(s) this benchmark did not "
                             f"write (e.g. {stray[0]}); use an empty or dedicated --keep DIR")
    written = 0
    for path in sorted(wanted):
        if path.is_file() and path.stat().st_size == size:
            continue  # reused from an earlier --keep run
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        written += 1
    return models_dir, size, written, time.perf_counter() - started


# -- 2. cold listing in-process --------------------------------------------------------------

def cold_listing_in_process(models_dir: Path, state_dir: Path, n: int) -> tuple[float, float]:
    state_dir.mkdir(mode=0o700, parents=True)
    catalog = Catalog(models_dir, state_dir)
    started = time.perf_counter()
    models = catalog.list_models()
    cold = time.perf_counter() - started
    check_keys([m.key for m in models], n, "in-process cold listing")
    if catalog.parsed_files != n:
        raise BenchError(f"in-process cold listing parsed {catalog.parsed_files} files, "
                         f"expected {n}")
    started = time.perf_counter()
    again = catalog.list_models()
    warm = time.perf_counter() - started
    if catalog.parsed_files != n or len(again) != n:
        raise BenchError("in-process warm listing re-parsed files or changed")
    return cold, warm


def check_keys(keys: list[str], n: int, what: str) -> None:
    if len(keys) != n:
        raise BenchError(f"{what}: {len(keys)} models listed, expected {n}")
    if set(keys) != expected_keys(n):
        raise BenchError(f"{what}: the listed keys are not the {n} models written")


# -- 3. the real service ----------------------------------------------------------------------

def listing_keys(status: int, body: bytes, what: str) -> list[str]:
    if status != 200:
        raise BenchError(f"{what}: HTTP {status}: {body[:500]!r}")
    try:
        models = json.loads(body)["models"]
        return [m["key"] for m in models]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{what}: not a model listing: {exc}") from None


def http_listing(server: Server, n: int, requests: int) -> dict:
    status, body, cold = get(server.port, "/api/v1/models", COLD_REQUEST_TIMEOUT_S)
    check_keys(listing_keys(status, body, "first GET /api/v1/models"), n,
               "first GET /api/v1/models")
    warm = []
    for i in range(requests):
        status, body_i, seconds = get(server.port, "/api/v1/models", WARM_REQUEST_TIMEOUT_S)
        if status != 200 or len(body_i) != len(body):
            check_keys(listing_keys(status, body_i, f"warm GET #{i + 1}"), n, f"warm GET #{i + 1}")
        warm.append(seconds)
    if warm:
        check_keys(listing_keys(status, body_i, "last warm GET"), n, "last warm GET")
    return {"cold": cold, "warm": warm, "body_bytes": len(body)}


# -- 4. time to first token with N models in the dir ------------------------------------------

def first_text(port: int, what: str) -> float:
    """Seconds from a streamed ``POST /v1/completions`` (a fresh connection) to its first text."""
    payload = {"model": "ttft", "prompt": "Once upon a time", "max_tokens": TTFT_TOKENS,
               "temperature": 0.8, "seed": 1, "stream": True}
    first = None
    started = time.perf_counter()
    for now, _, data in sse_lines(port, "/v1/completions", payload, what, WARM_REQUEST_TIMEOUT_S):
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise BenchError(f"{what}: {chunk['error']}")
        if first is None and chunk["choices"] and chunk["choices"][0].get("text"):
            first = now
    if first is None:
        raise BenchError(f"{what}: no text in the stream")
    return first - started


def ttft_with_models(server: Server, models_dir: Path, tiny: Path, requests: int) -> list[float]:
    """The tiny model put in the dir and loaded (identifier ``ttft``), then timed to first text
    through /v1 `requests` times after one warm-up; unloaded and taken out of the dir again."""
    folder = models_dir / TINY[0]
    (folder / TINY[1]).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny, folder / TINY[1] / TINY[2])
    try:
        status, body, _, _ = post(server.port, "/api/v1/models/load",
                                  {"model": TINY[1].lower()[:-5], "identifier": "ttft"},
                                  LOAD_TIMEOUT_S)
        if status != 200:
            raise BenchError(f"load of the tiny model: HTTP {status}: {body[:300]!r}")
        try:
            server.wait_instances(2)  # it and the spare the supervisor refills: both idle
            times = [first_text(server.port, f"/v1 TTFT #{i}") for i in range(requests + 1)]
        finally:
            post(server.port, "/api/v1/models/unload", {"instance_id": "ttft"}, LOAD_TIMEOUT_S)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return times[1:]


# -- 5. the reference reader -----------------------------------------------------------------

def gguf_reader_sample(models_dir: Path, n: int, sample: int) -> list[float]:
    from gguf import GGUFReader
    files = sorted(models_dir.glob("*/*/*.gguf"))
    if not files or sample <= 0:
        return []
    step = max(1, len(files) // sample)
    picked = files[::step][:sample]
    times = []
    for path in picked:
        started = time.perf_counter()
        reader = GGUFReader(path)
        fields = len(reader.fields)
        times.append(time.perf_counter() - started)
        if fields == 0:
            raise BenchError(f"GGUFReader read no fields from {path}")
        del reader
    return times


# -- main -------------------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def counts(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=counts, default=[10, 100, 1000],
                        help="model counts, comma-separated (default 10,100,1000)")
    parser.add_argument("--requests", type=int, default=50,
                        help="warm GET /api/v1/models requests per count (default 50)")
    parser.add_argument("--ttft-requests", type=int, default=20, dest="ttft_requests",
                        help="timed /v1 completions per count (default 20; 0: none)")
    parser.add_argument("--reader-sample", type=int, default=5, dest="reader_sample",
                        help="files read with gguf.GGUFReader (default 5)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep (and reuse) its models dir")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.requests < 0 or args.reader_sample < 0 or args.ttft_requests < 0:
        parser.error("--requests, --ttft-requests and --reader-sample must not be negative")
    return args


def measure_count(n: int, args, work: Path, tiny: Path) -> dict:
    """[1]-[4] for n models: the dir grown to n, cold listing in-process, the service's cold
    and warm listings and its time to first token."""
    models_dir, size, written, took = make_models(work, n)
    log(f"\n[1] models dir: {n} files of {size / 1e6:.2f} MB in {min(PUBLISHERS, n)} publishers "
        f"({took:.2f} s, {written} written, {n - written} reused)")
    log("    one file written with write_vocab_heavy_llama, then copied with shutil.copyfile;"
        " every copy is its own file (own path and mtime) and is parsed on a cold listing")

    state_root = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    cold_ip, warm_ip = cold_listing_in_process(models_dir, state_root / "inproc", n)
    log(f"[2] cold listing in-process (fresh Catalog, empty state dir): {fmt_s(cold_ip)}, "
        f"{fmt_ms(cold_ip / n)} per file; a second list_models(): {fmt_ms(warm_ip)}")
    log("    (cold = no metadata cache; the files are in the OS page cache, just written)")

    server = Server(models_dir, state_root / "server", work / "server.log")
    try:
        up = server.start()
        log(f"[3] lmhost serve --workers 1 on {HOST}:{server.port}: healthy after {up:.2f} s")
        result = http_listing(server, n, args.requests)
        ttft = ttft_with_models(server, models_dir, tiny, args.ttft_requests) \
            if args.ttft_requests else []
    except BenchError as exc:
        raise BenchError(f"{exc}\nserver log (tail):\n{server.log_tail()}") from None
    finally:
        how = server.stop()
    log(f"    server {how}")
    warm = result["warm"]
    log(f"    first GET /api/v1/models: {fmt_s(result['cold'])} "
        f"({result['body_bytes'] / 1e3:.0f} kB body, {n} models)")
    if warm:
        log(f"    {len(warm)} warm GETs (fresh loopback connection each): "
            f"p50 {fmt_ms(percentile(warm, 50))}, p90 {fmt_ms(percentile(warm, 90))}, "
            f"max {fmt_ms(max(warm))}, mean {fmt_ms(statistics.fmean(warm))}")
    if ttft:
        log(f"[4] /v1/completions to the first text, the tiny model loaded next to these {n}: "
            f"p50 {fmt_ms(percentile(ttft, 50))}, min {fmt_ms(min(ttft))}, "
            f"max {fmt_ms(max(ttft))} ({len(ttft)} requests)")
    return {"file_bytes": size, "cold_in_process": cold_ip, "warm_in_process": warm_ip,
            "cold_http": result["cold"], "body_bytes": result["body_bytes"], "warm_http": warm,
            "warm_http_p50": percentile(warm, 50) if warm else None, "ttft_v1": ttft,
            "ttft_v1_p50": percentile(ttft, 50) if ttft else None}


def run(args, work: Path) -> int:
    n = args.counts[-1]
    log(f"lmhost listing benchmark: {', '.join(map(str, args.counts))} models, 32k-token "
        f"vocabularies, work dir {work}")
    log(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    tiny = work / "template" / "tiny-llama-Q8_0.gguf"
    if not tiny.is_file():
        write_dense_llama(tiny, file_type="Q8_0", name="Bench TTFT Llama")
    by_count = {}
    for count in args.counts:
        log(f"\n== {count} models ==")
        by_count[count] = measure_count(count, args, work, tiny)
    last = by_count[n]
    cold_ip, warm = last["cold_in_process"], last["warm_http"]

    reader = gguf_reader_sample(work / "models", n, args.reader_sample)
    if reader:
        log(f"\n[5] gguf.GGUFReader on {len(reader)} of the files: "
            + ", ".join(fmt_s(t) for t in reader)
            + f"; mean {fmt_s(statistics.fmean(reader))} per file")

    # -- summary ------------------------------------------------------------------------------
    w = 52
    rows = [(f"listing {n} models (32k-token vocabularies)", "time", "per file"),
            ("cold listing, lmhost catalog (in-process)", fmt_s(cold_ip), fmt_ms(cold_ip / n)),
            ("cold listing through HTTP (first request)", fmt_s(last["cold_http"]),
             fmt_ms(last["cold_http"] / n))]
    if warm:
        p50, p90 = percentile(warm, 50), percentile(warm, 90)
        rows.append((f"warm listing through HTTP, p50 / p90 / max (n={len(warm)})",
                     f"{p50 * 1000:.1f} / {p90 * 1000:.1f} / {max(warm) * 1000:.1f} ms", ""))
    ratio = None
    if reader:
        per = statistics.fmean(reader)
        rows.append((f"gguf.GGUFReader (sampled {len(reader)} files, x{n}) [extrapolated]",
                     fmt_s(per * n), fmt_ms(per)))
        ratio = per / (cold_ip / n)
    log("\n" + "\n".join(f"{a:<{w + 12}}{b:<22}{c}" for a, b, c in rows))
    if ratio is not None:
        log(f"{'ratio: GGUFReader / lmhost cold (per file, in-process)':<{w + 12}}{ratio:.0f}x")
    log(f"\n{'models in the dir':<{w + 12}}{'cold (in-process)':<22}{'warm HTTP p50':<18}"
        f"{'/v1 TTFT p50'}")
    for count, r in by_count.items():
        log(f"{count:<{w + 12}}{fmt_s(r['cold_in_process']):<22}"
            f"{fmt_ms(r['warm_http_p50']) if r['warm_http_p50'] is not None else '-':<18}"
            f"{fmt_ms(r['ttft_v1_p50']) if r['ttft_v1_p50'] is not None else '-'}")
    targets = []
    if warm:
        targets.append(f"warm p50 <= {WARM_P50_TARGET_MS:.0f} ms: "
                       f"{'PASS' if percentile(warm, 50) * 1000 <= WARM_P50_TARGET_MS else 'FAIL'}")
    if ratio is not None:
        targets.append(f"cold >= {COLD_SPEEDUP_TARGET:.0f}x faster than GGUFReader: "
                       f"{'PASS' if ratio >= COLD_SPEEDUP_TARGET else 'FAIL'}")
    if targets:
        log("targets: " + "; ".join(targets))
    common.write_json(args, "list_models", {
        "vocab_size": 32000, "counts": {str(c): r for c, r in by_count.items()},
        "gguf_reader": reader, "gguf_reader_per_file": statistics.fmean(reader) if reader else None,
        "cold_speedup": ratio, "ttft_tokens": TTFT_TOKENS})
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.keep:
        work = args.keep.expanduser().absolute()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="lmhost-bench-"))

    def clean_up(rc: int) -> int:
        if args.keep:  # keep the models (reused next time), not the per-run state and log
            for state in work.glob("state-*"):
                shutil.rmtree(state, ignore_errors=True)
            (work / "server.log").unlink(missing_ok=True)
            log(f"\nkept {work / 'models'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        return rc
    return run_bench(run, args, work, started, clean_up)


if __name__ == "__main__":
    sys.exit(main())
