#!/usr/bin/env python3
"""Check lmhost's GPU path for real, on a host with an NVIDIA GPU and llama-cpp-python built with CUDA.

The suite tests the GPU code against a fake `pynvml` (this project's CI has no GPU); this script
is what to run where a GPU is lent. Its parts, each reported even when another fails:

1. **NVML as lmhost reads it** (`workers.nvml.Nvml`) next to ``nvidia-smi``'s own query of the
   same GPUs: name, total, used, free, the driver's reserve.
2. **The service on the GPU** (``lmhost serve``: real gunicorn, supervisor, instance, NVML):
   ``GET /api/v1/resources`` in GPU mode; the bench model loaded with the default
   ``gpu_offload`` (``"max"``); its row (the estimate's GPU part, NVML's reading of the
   instance's pid) next to ``nvidia-smi``'s per-process memory; the unload, after which the pid
   leaves NVML's list and the GPU's used memory comes back.
3. **Tokens/s on the GPU**: ``/v1/completions`` streamed through lmhost against in-process
   llama-cpp-python with every layer on the GPU, same model, prompt and sampling, interleaved
   rounds (`throughput.py`'s sides), and against ``llama-server`` with every layer on the GPU
   where ``--llama-server`` names a binary built with CUDA.
4. **Partial offload through the CLI**: ``lmhost load --gpu 0.5``; the instance's row (the
   estimate's GPU and RAM parts) next to NVML and its resident memory, a completion, then
   ``lmhost unload``.
5. **The official Python SDK in GPU mode**: ``load_new_instance`` with ``gpu: {ratio}``, the
   load config it reads back, a completion, the instance's memory, ``unload()``.
6. **The official TypeScript SDK in GPU mode**, where ``--node`` names a node binary:
   ``client.llm.load`` with ``gpu: {ratio}``, ``getLoadConfig()``, a completion, the instance's
   memory, ``client.llm.unload``; each step a fresh node process running a script as a user
   writes one, with ``@lmstudio/sdk`` from ``--node-modules`` (default: the end-to-end tests'
   ``tests/e2e/node/node_modules``, after ``npm ci`` there).

    python bench/gpu_check.py [--rounds N] [--tokens N] [--llama-server PATH] [--node PATH]
                              [--node-modules DIR] [--json PATH] [--keep]

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
from llama_server import LlamaServer  # noqa: E402
from throughput import (IGNORE_EOS, MODEL_KEY, MODEL_RELPATH, N_CTX, InProc, Server,  # noqa: E402
                        settle, stream_completion, summary)

MiB = 1 << 20
IDENTIFIER = "gpu-check"
PARTIAL_ID, PARTIAL_RATIO = "gpu-half", 0.5     # [4], through the CLI
SDK_ID, SDK_RATIO = "gpu-sdk", 0.25             # [5], through the official Python client
TS_ID, TS_RATIO = "gpu-ts", 0.5                 # [6], through the official TypeScript client
ALL_LAYERS = 999                                # llama-server's -ngl for every layer
CLI_TIMEOUT_S = 120.0
NODE_TIMEOUT_S = 120.0
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


def instance_row(report: dict, identifier: str = IDENTIFIER) -> dict:
    """An instance's row in a ``GET /api/v1/resources`` answer."""
    return next(i for i in report["instances"] if i["id"] == identifier)


def gpu_error(row: dict) -> float | None:
    """(estimate - measured) / measured on the GPU; None when NVML measured nothing."""
    used = row["measured"]["gpu_bytes"]
    return (row["estimate"]["gpu_bytes"] - used) / used if used else None


def memory_line(row: dict) -> str:
    """An instance row's estimate next to what was measured, on the GPU and in RAM."""
    estimate, measured = row["estimate"], row["measured"]
    error = gpu_error(row)
    ram_error = (estimate["ram_bytes"] - measured["ram_bytes"]) / measured["ram_bytes"]
    return (f"GPU estimate {mib(estimate['gpu_bytes'])}, measured (NVML) "
            f"{mib(measured['gpu_bytes'])}: "
            + (f"{error:+.1%}" if error is not None else "NOTHING measured")
            + f"; RAM estimate {mib(estimate['ram_bytes'])}, measured {mib(measured['ram_bytes'])}"
            f" (peak {mib(measured['ram_peak_bytes'])}): {ram_error:+.1%}")


def gpu_parts(estimate: dict) -> str:
    """The estimate's GPU part by part."""
    on_gpu = estimate["on_gpu"]
    return (f"weights {mib(on_gpu['weights_bytes'])}, KV {mib(on_gpu['kv_cache_bytes'])}, "
            f"compute {mib(on_gpu['compute_bytes'])}, overhead {mib(on_gpu['overhead_bytes'])}")


def one_completion(port: int, identifier: str, what: str) -> dict:
    """A short streamed ``/v1/completions`` from `identifier`: it must bring tokens."""
    args = argparse.Namespace(tokens=32, prompt="Once upon a time")
    result = stream_completion(port, identifier, args, what)
    if not result["tokens"]:
        raise BenchError(f"{what}: no tokens")
    return result


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
    log(f"    estimate on the GPU {mib(estimate['gpu_bytes'])} ({gpu_parts(estimate)}); "
        f"in RAM {mib(estimate['ram_bytes'])}")
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
    log(f"    {memory_line(row)}")
    figures["service"]["after_use"] = {"measured": row["measured"], "gpu_error": gpu_error(row)}
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
    peer_note = ", llama-server" if args.llama_server else " (no --llama-server)"
    log(f"\n[3] tokens/s on the GPU, {args.rounds} interleaved rounds of {args.tokens} tokens: "
        f"in-process, lmhost /v1{peer_note}")
    inproc = InProc(model, args.threads, args, work, "inproc-gpu", n_gpu_layers=-1)
    sides = {"inproc": [], "v1": []}
    peer = None
    try:
        if args.llama_server:
            peer = LlamaServer(args.llama_server, model, args.threads, N_CTX, args.extra_bufts,
                               work / "llama-server.log", gpu_layers=ALL_LAYERS)
            log(f"    llama-server {peer.flags()}: healthy after {peer.start():.2f} s")
            sides["peer"] = []
            stream_completion(peer.port, MODEL_KEY, args, "warm-up llama-server", IGNORE_EOS)
        inproc.completion("warm-up in-process")
        stream_completion(server.port, IDENTIFIER, args, "warm-up /v1")
        for i in range(1, args.rounds + 1):
            sides["inproc"].append(inproc.completion(f"round {i} in-process"))
            sides["v1"].append(stream_completion(server.port, IDENTIFIER, args, f"round {i} /v1"))
            if peer is not None:
                sides["peer"].append(stream_completion(peer.port, MODEL_KEY, args,
                                                       f"round {i} llama-server", IGNORE_EOS))
            log(f"    round {i}: " + ", ".join(f"{name} {runs[-1]['decode_tps']:.1f} tok/s"
                                               for name, runs in sides.items()))
    finally:
        inproc.close()
        if peer is not None:
            peer.stop()
    result = {k: {key: v for key, v in summary(runs).items() if key != "texts"}
              for k, runs in sides.items()}
    figures["throughput"] = result
    for name, baseline in (("inproc", "in-process"), ("peer", "llama-server")):
        if name not in sides:
            continue
        ratios = [b["decode_tps"] / a["decode_tps"] for a, b in zip(sides[name], sides["v1"])]
        ttft_added = [b["ttft"] - a["ttft"] for a, b in zip(sides[name], sides["v1"])]
        log(f"    p50: {baseline} {result[name]['decode_tps']:.1f} tok/s, lmhost /v1 "
            f"{result['v1']['decode_tps']:.1f} tok/s: x{p50(ratios):.3f} (round by round); "
            f"first token {result[name]['ttft'] * 1000:.1f} vs {result['v1']['ttft'] * 1000:.1f} "
            f"ms (added p50 {p50(ttft_added) * 1000:+.1f} ms)")
        figures["throughput"][f"vs_{name}"] = {"ratio_p50": p50(ratios),
                                               "ttft_added_p50": p50(ttft_added)}


def cli(server: Server, *argv: str) -> str:
    """``lmhost ARGV --url ...`` as a user runs it; its stdout. A non-zero exit is a failure."""
    command = [sys.executable, "-c", "import sys; from lmhost.cli import main; sys.exit(main())",
               *argv, "--url", f"http://127.0.0.1:{server.port}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"lmhost {' '.join(argv)}: no answer in {CLI_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"lmhost {' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def check_partial_cli(server: Server, figures: dict) -> None:
    log(f"\n[4] partial offload through the CLI: lmhost load --gpu {PARTIAL_RATIO}")
    answer = json.loads(cli(server, "load", MODEL_KEY, "--identifier", PARTIAL_ID,
                            "--gpu", str(PARTIAL_RATIO), "--context-length", str(N_CTX), "--json"))
    log(f"    lmhost load --json: instance {answer.get('instance_id')!r}, "
        f"{answer.get('load_time_seconds', 0):.2f} s")
    settle(server, 1)
    one_completion(server.port, PARTIAL_ID, "a completion from the partly offloaded instance")
    row = instance_row(resources(server), PARTIAL_ID)
    log(f"    after a completion: {memory_line(row)}")
    log(f"    the estimate's GPU part: {gpu_parts(row['estimate'])}")
    ps = cli(server, "ps")
    log("    lmhost ps:\n" + "\n".join("      " + line for line in ps.splitlines()))
    cli(server, "unload", PARTIAL_ID)
    left = [i["id"] for i in resources(server)["instances"]]
    log(f"    lmhost unload {PARTIAL_ID}: instances left {left}")
    figures["partial_cli"] = {"estimate": row["estimate"], "measured": row["measured"],
                              "gpu_error": gpu_error(row)}
    if gpu_error(row) is None:
        raise BenchError("the partly offloaded instance holds no GPU memory by NVML")
    if PARTIAL_ID in left:
        raise BenchError(f"{PARTIAL_ID} is still loaded after lmhost unload")


def check_sdk(server: Server, figures: dict) -> None:
    log(f"\n[5] the official Python SDK in GPU mode: load_new_instance with gpu ratio {SDK_RATIO}")
    import lmstudio
    with lmstudio.Client(f"127.0.0.1:{server.port}") as client:
        llm = client.llm.load_new_instance(MODEL_KEY, SDK_ID, config={
            "gpu": {"ratio": SDK_RATIO}, "contextLength": N_CTX})
        config = llm.get_load_config()
        log(f"    get_load_config(): gpu {config.gpu}, context length {config.context_length}")
        result = llm.complete("Once upon a time", config={"maxTokens": 32})
        log(f"    complete(): {result.stats.predicted_tokens_count} tokens, "
            f"{result.stats.tokens_per_second:.1f} tok/s, stop {result.stats.stop_reason!r}")
        row = instance_row(resources(server), SDK_ID)
        log(f"    {memory_line(row)}")
        llm.unload()
        left = [m.identifier for m in client.llm.list_loaded()]
        log(f"    unload(): loaded now {left}")
    sdk_outcome(figures, "sdk", "the Python SDK", SDK_ID, str(config.gpu),
                result.stats.predicted_tokens_count, row, left)


def sdk_outcome(figures: dict, key: str, who: str, identifier: str, gpu, tokens: int | None,
                row: dict, left: list[str]) -> None:
    """An SDK part's figures, then its checks: tokens came, the instance held GPU memory
    by NVML, and the unload left it unloaded."""
    figures[key] = {"gpu": gpu, "tokens": tokens, "estimate": row["estimate"],
                    "measured": row["measured"], "gpu_error": gpu_error(row)}
    if not tokens:
        raise BenchError(f"{who}'s completion brought no tokens")
    if gpu_error(row) is None:
        raise BenchError(f"the instance {who} loaded holds no GPU memory by NVML")
    if identifier in left:
        raise BenchError(f"{identifier} is still loaded after {who}'s unload")


# [6]'s scripts (argv: the server's ws:// URL, then their own); each prints one JSON line. The
# load and the unload are separate processes so that the instance's memory is read in between.
TS_LOAD = """import { LMStudioClient } from "@lmstudio/sdk";
const [url, key, identifier, ratio, contextLength] = process.argv.slice(2);
const client = new LMStudioClient({ baseUrl: url, verboseErrorMessages: false });
const llm = await client.llm.load(key, { identifier, verbose: false,
  config: { gpu: { ratio: Number(ratio) }, contextLength: Number(contextLength) } });
const config = await llm.getLoadConfig();
const result = await llm.complete("Once upon a time", { maxTokens: 32 });
console.log(JSON.stringify({ identifier: llm.identifier, gpu: config.gpu,
                             contextLength: config.contextLength, stats: result.stats }));
"""
TS_UNLOAD = """import { LMStudioClient } from "@lmstudio/sdk";
const [url, identifier] = process.argv.slice(2);
const client = new LMStudioClient({ baseUrl: url, verboseErrorMessages: false });
await client.llm.unload(identifier);
console.log(JSON.stringify({ loaded: (await client.llm.listLoaded()).map((m) => m.identifier) }));
"""


def node_script(args, work: Path, name: str, code: str, *argv: str) -> dict:
    """Runs `code` as ``WORK/NAME.mjs`` with ``args.node``, as a user runs a script: ES modules
    resolve ``@lmstudio/sdk`` from a node_modules beside the script (a link to
    ``args.node_modules``). Its last line of output is its JSON answer."""
    script = work / f"{name}.mjs"
    script.write_text(code)
    modules = work / "node_modules"
    if not modules.exists():
        modules.symlink_to(Path(args.node_modules).resolve())
    try:
        done = subprocess.run([str(args.node), str(script), *argv], cwd=work, capture_output=True,
                              text=True, timeout=NODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"node {name}.mjs: no answer in {NODE_TIMEOUT_S:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"node {name}.mjs: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(lines[-1])


def check_ts_sdk(server: Server, args, work: Path, figures: dict) -> None:
    log(f"\n[6] the official TypeScript SDK in GPU mode: client.llm.load with gpu ratio {TS_RATIO}")
    if not (Path(args.node_modules) / "@lmstudio" / "sdk").is_dir():
        raise BenchError(f"no @lmstudio/sdk in {args.node_modules} (npm ci in tests/e2e/node, "
                         "or --node-modules)")
    url = f"ws://127.0.0.1:{server.port}"
    loaded = node_script(args, work, "ts-load", TS_LOAD, url, MODEL_KEY, TS_ID, str(TS_RATIO),
                         str(N_CTX))
    stats = loaded.get("stats") or {}
    log(f"    getLoadConfig(): gpu {loaded.get('gpu')}, "
        f"context length {loaded.get('contextLength')}")
    log(f"    complete(): {stats.get('predictedTokensCount')} tokens, "
        f"{stats.get('tokensPerSecond') or 0:.1f} tok/s, stop {stats.get('stopReason')!r}")
    row = instance_row(resources(server), TS_ID)
    log(f"    {memory_line(row)}")
    left = node_script(args, work, "ts-unload", TS_UNLOAD, url, TS_ID)["loaded"]
    log(f"    client.llm.unload(): loaded now {left}")
    sdk_outcome(figures, "ts_sdk", "the TypeScript SDK", TS_ID, loaded.get("gpu"),
                stats.get("predictedTokensCount"), row, left)
    if (loaded.get("gpu") or {}).get("ratio") != TS_RATIO:
        raise BenchError(f"getLoadConfig() gave gpu {loaded.get('gpu')}, not ratio {TS_RATIO}")


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
                            ("[2] unload", lambda: check_unload(server, figures)),
                            ("[4]", lambda: check_partial_cli(server, figures)),
                            ("[5]", lambda: check_sdk(server, figures)),
                            ("[6]", lambda: check_ts_sdk(server, args, work, figures))):
            if part == "[6]" and args.node is None:
                continue
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - each part reported, the others still run
                failed.append(f"{part} {type(exc).__name__}: {exc}")
                log(f"    FAILED: {exc}\n    the server's log:\n{server.log_tail(30)}")
    finally:
        log(f"    server {server.stop()}")
    write_json(args, "gpu_check", figures)
    if failed:
        raise BenchError("; ".join(failed))
    log("\nevery part ran" + ("" if args.node else " ([6] left out: no --node)"))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (default 5)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per completion (default 256)")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--llama-server", type=Path, dest="llama_server",
                        help="a llama-server built with CUDA, run against lmhost in [3]")
    parser.add_argument("--node", type=Path,
                        help="a node binary: [6] drives lmhost with the official TypeScript SDK")
    parser.add_argument("--node-modules", type=Path, dest="node_modules",
                        default=Path(__file__).resolve().parents[1] / "tests/e2e/node/node_modules",
                        help="where @lmstudio/sdk is installed (default: tests/e2e/node's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    add_json_option(parser)
    args = parser.parse_args(argv)
    return run_in_work_dir(run, args, "lmh-gpu-")


if __name__ == "__main__":
    sys.exit(main())
