#!/usr/bin/env python3
"""Check lmhost's GPU path for real, on a host with an NVIDIA GPU and llama-cpp-python built with CUDA.

The suite tests the GPU code against a fake `pynvml` (this project's CI has no GPU); this script
is what to run where a GPU is lent. Three parts, each reported even when another fails:

1. **NVML as lmhost reads it** (`workers.nvml.Nvml`) next to ``nvidia-smi``'s own query of the
   same GPUs: name, total, used, free, the driver's reserve.
2. **The service on the GPU** (``lmhost serve``: real gunicorn, supervisor, instance, NVML):
   ``GET /api/v1/resources`` in GPU mode; the bench model loaded with the default
   ``gpu_offload`` (``"max"``); its row (the estimate's GPU part, NVML's reading of the
   instance's pid) next to ``nvidia-smi``'s per-process memory; the unload, after which the pid
   leaves NVML's list and the GPU's used memory comes back.
3. **Tokens/s on the GPU**: ``/v1/completions`` streamed through lmhost against in-process
   llama-cpp-python with every layer on the GPU, same model, prompt and sampling, interleaved
   rounds (`throughput.py`'s sides; no ``llama-server``).

    python bench/gpu_check.py [--rounds N] [--tokens N] [--json PATH] [--keep]

Exit status 0 when every part ran, 2 when one failed (its reason printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import (BenchError, add_json_option, get, log, p50, run_in_work_dir,  # noqa: E402
                    write_json)
from throughput import (MODEL_KEY, MODEL_RELPATH, InProc, Server, settle,  # noqa: E402
                        stream_completion, summary)

MiB = 1 << 20
IDENTIFIER = "gpu-check"
SMI_TIMEOUT_S = 20.0
RELEASE_DEADLINE_S = 15.0


def mib(n) -> str:
    return "-" if n is None else f"{n / MiB:,.0f} MiB"


def smi(query: str, what: str) -> list[list[str]]:
    """Rows of ``nvidia-smi --query-<query> --format=csv,noheader,nounits`` (MiB figures)."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"nvidia-smi ({what}): {exc}") from None
    return [[cell.strip() for cell in line.split(",")] for line in out.stdout.splitlines() if line]


def smi_processes() -> dict[int, int]:
    """pid -> bytes, as nvidia-smi reports compute processes."""
    rows = smi("compute-apps=pid,used_memory", "compute processes")
    return {int(pid): int(used) * MiB for pid, used in rows if pid.isdigit() and used.isdigit()}


def nvml_readings():
    from workers.nvml import Nvml
    nvml = Nvml()
    readings = nvml.read()
    if not readings:
        raise BenchError(f"lmhost's NVML reads no GPU: {nvml.reason}")
    return nvml, readings


def check_nvml(figures: dict) -> None:
    log("\n[1] NVML as lmhost reads it, next to nvidia-smi")
    nvml, readings = nvml_readings()
    rows = smi("gpu=index,name,memory.total,memory.used,memory.free,memory.reserved", "GPUs")
    log(f"    driver {nvml.driver_version}")
    out = []
    for reading, row in zip(readings, rows):
        total, used, free, reserved = (int(v) * MiB if v.isdigit() else None for v in row[2:6])
        log(f"    GPU {reading.index} {reading.name!r} (nvidia-smi: {row[1]!r})")
        for name, ours, theirs in (("total", reading.total, total), ("used", reading.used, used),
                                   ("free", reading.free, free),
                                   ("reserved", reading.reserved, reserved)):
            log(f"      {name:<9} lmhost {mib(ours):>12}   nvidia-smi {mib(theirs):>12}")
        out.append({"lmhost": {"total": reading.total, "used": reading.used,
                               "free": reading.free, "reserved": reading.reserved},
                    "nvidia_smi": {"total": total, "used": used, "free": free,
                                   "reserved": reserved}})
    if len(readings) != len(rows):
        raise BenchError(f"lmhost reads {len(readings)} GPUs, nvidia-smi lists {len(rows)}")
    figures["nvml"] = out


def resources(server: Server) -> dict:
    status, body, _ = get(server.port, "/api/v1/resources", timeout=30.0)
    if status != 200:
        raise BenchError(f"GET /api/v1/resources: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def instance_row(report: dict) -> dict:
    """The checked instance's row in a ``GET /api/v1/resources`` answer."""
    return next(i for i in report["instances"] if i["id"] == IDENTIFIER)


def gpu_error(row: dict) -> float | None:
    """(estimate - measured) / measured on the GPU; None when NVML measured nothing."""
    used = row["measured"]["gpu_bytes"]
    return (row["estimate"]["gpu_bytes"] - used) / used if used else None


def check_service(server: Server, figures: dict) -> None:
    log("\n[2] the service on the GPU: load, its memory, unload")
    before = resources(server)
    log(f"    mode {before['mode']!r}; GPUs: "
        + ", ".join(f"{g['name']} {mib(g['used_bytes'])} used of {mib(g['total_bytes'])}"
                    for g in before["gpus"]))
    load_s = server.load(IDENTIFIER)
    log(f"    loaded {MODEL_KEY} as {IDENTIFIER!r} in {load_s:.2f} s")
    settle(server, 1)
    after = resources(server)
    row = instance_row(after)
    pids = set(server.instance_pids())
    apps = smi_processes()
    on_gpu = {pid: used for pid, used in apps.items() if pid in pids}
    estimate, measured = row["estimate"], row["measured"]
    log(f"    estimate on the GPU {mib(estimate['gpu_bytes'])} (weights "
        f"{mib(estimate['on_gpu']['weights_bytes'])}, KV {mib(estimate['on_gpu']['kv_cache_bytes'])}, "
        f"compute {mib(estimate['on_gpu']['compute_bytes'])}, overhead "
        f"{mib(estimate['on_gpu']['overhead_bytes'])}); in RAM {mib(estimate['ram_bytes'])}")
    log(f"    measured by lmhost (NVML): GPU {mib(measured['gpu_bytes'])}, RAM "
        f"{mib(measured['ram_bytes'])}; nvidia-smi, lmhost's instance processes: "
        + (", ".join(f"pid {pid} {mib(used)}" for pid, used in on_gpu.items()) or "none"))
    error = gpu_error(row)
    log("    estimate vs measured on the GPU: "
        + (f"{error:+.1%}" if error is not None else "NOTHING measured on the GPU"))
    log("    pools: " + "; ".join(f"{p['pool']} instances {mib(p['instances_bytes'])}, "
                                   f"available {mib(p['available_bytes'])}" for p in after["pools"]))
    figures["service"] = {"load_s": load_s, "estimate": estimate, "measured": measured,
                          "nvidia_smi_instances": on_gpu, "gpu_error": error,
                          "used_before": [g["used_bytes"] for g in before["gpus"]],
                          "used_loaded": [g["used_bytes"] for g in after["gpus"]]}
    if before["mode"] != "gpu":
        raise BenchError(f"the service is in CPU mode: {before.get('cpu_mode_reason')}")
    if error is None:
        raise BenchError("the loaded instance holds no GPU memory by NVML")


def check_unload(server: Server, figures: dict) -> None:
    log("\n[2] again, after the generations of [3]: the instance's memory, then the unload")
    row = instance_row(resources(server))
    error = gpu_error(row)
    log(f"    estimate on the GPU {mib(row['estimate']['gpu_bytes'])}, measured by lmhost (NVML) "
        f"{mib(row['measured']['gpu_bytes'])}: "
        + (f"{error:+.1%}" if error is not None else "NOTHING measured")
        + f"; RAM estimate {mib(row['estimate']['ram_bytes'])}, measured "
        f"{mib(row['measured']['ram_bytes'])} (peak {mib(row['measured']['ram_peak_bytes'])})")
    figures["service"]["after_use"] = {"measured": row["measured"], "gpu_error": error}
    gpu_pids = set(smi_processes()) & set(server.instance_pids())
    nvml, _ = nvml_readings()
    server.unload(IDENTIFIER)
    deadline = time.perf_counter() + RELEASE_DEADLINE_S
    while time.perf_counter() < deadline:
        left = gpu_pids & {pid for r in nvml.read() for pid in r.processes}
        if not left:
            break
        time.sleep(0.1)  # poll, bounded by the deadline
    after = resources(server)
    log(f"    unloaded: instance pids on the GPU before {sorted(gpu_pids)}, after "
        f"{sorted(left) or 'none'}; GPU used now "
        + ", ".join(mib(g["used_bytes"]) for g in after["gpus"])
        + f"; instances in the table: {len(after['instances'])}")
    figures["service"]["used_unloaded"] = [g["used_bytes"] for g in after["gpus"]]
    if left:
        raise BenchError(f"pids {sorted(left)} still hold GPU memory after the unload")


def check_throughput(server: Server, model: Path, args, work: Path, figures: dict) -> None:
    log(f"\n[3] tokens/s on the GPU, {args.rounds} interleaved rounds of {args.tokens} tokens")
    inproc = InProc(model, args.threads, args, work, "inproc-gpu", n_gpu_layers=-1)
    sides = {"inproc": [], "v1": []}
    try:
        inproc.completion("warm-up in-process")
        stream_completion(server.port, IDENTIFIER, args, "warm-up /v1")
        for i in range(1, args.rounds + 1):
            sides["inproc"].append(inproc.completion(f"round {i} in-process"))
            sides["v1"].append(stream_completion(server.port, IDENTIFIER, args, f"round {i} /v1"))
            log(f"    round {i}: in-process {sides['inproc'][-1]['decode_tps']:.1f} tok/s, "
                f"lmhost /v1 {sides['v1'][-1]['decode_tps']:.1f} tok/s")
    finally:
        inproc.close()
    result = {k: {key: v for key, v in summary(runs).items() if key != "texts"}
              for k, runs in sides.items()}
    ratios = [b["decode_tps"] / a["decode_tps"] for a, b in zip(sides["inproc"], sides["v1"])]
    ttft_added = [b["ttft"] - a["ttft"] for a, b in zip(sides["inproc"], sides["v1"])]
    log(f"    p50: in-process {result['inproc']['decode_tps']:.1f} tok/s, lmhost /v1 "
        f"{result['v1']['decode_tps']:.1f} tok/s: x{p50(ratios):.3f} (round by round); "
        f"first token {result['inproc']['ttft'] * 1000:.1f} vs {result['v1']['ttft'] * 1000:.1f} ms "
        f"(added p50 {p50(ttft_added) * 1000:+.1f} ms)")
    figures["throughput"] = {**result, "ratio_p50": p50(ratios),
                             "ttft_added_p50": p50(ttft_added)}


def run(args, work: Path) -> int:
    from lmhost.synthetic import write_bench_model
    from config import load_settings
    from workers.engine_probe import check_engine

    settings = load_settings(env={})
    args.threads = settings.threads_per_instance
    args.extra_bufts = check_engine(settings.cache_dir).extra_bufts
    figures, failed = {}, []
    try:
        check_nvml(figures)
    except BenchError as exc:
        failed.append(f"[1] {exc}")
        log(f"    FAILED: {exc}")
    model = work / "models" / MODEL_RELPATH
    write_bench_model(model)
    server = Server(work / "models", work / "state", work / "server.log")
    server.start()
    try:
        for part, check in (("[2]", lambda: check_service(server, figures)),
                            ("[3]", lambda: check_throughput(server, model, args, work, figures)),
                            ("[2] unload", lambda: check_unload(server, figures))):
            try:
                check()
            except (BenchError, StopIteration, KeyError) as exc:
                failed.append(f"{part} {type(exc).__name__}: {exc}")
                log(f"    FAILED: {exc}\n    the server's log:\n{server.log_tail(30)}")
    finally:
        log(f"    server {server.stop()}")
    write_json(args, "gpu_check", figures)
    if failed:
        raise BenchError("; ".join(failed))
    log("\nevery part ran")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (default 5)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per completion (default 256)")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    add_json_option(parser)
    args = parser.parse_args(argv)
    return run_in_work_dir(run, args, "lmh-gpu-")


if __name__ == "__main__":
    sys.exit(main())
