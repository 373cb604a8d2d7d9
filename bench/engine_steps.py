#!/usr/bin/env python3
"""Benchmark: where the time of one generated token goes in the instance's engine.

In this interpreter (no server: the engine of `workers.instance.generation`, as an instance
process runs it), on the synthetic bench model (~153M parameters, Q8_0; its generation is
tamed: every completion runs exactly ``--tokens`` tokens), ``--threads`` llama.cpp threads,
loaded as lmhost's instances load on this host (the engine probe's verdict on llama.cpp's extra
buffer types). Three ways of running the same completion (same prompt, sampling and seed: the
same text), interleaved, ``--runs`` times each after one warm-up:

- ``engine``: `Engine.generate` as shipped: each sampled token decoded by the engine's own
  one-token batch (`Engine.next_token_decoder`, straight through ``llama_decode``);
- ``Llama.eval``: the same, with each sampled token decoded by ``Llama.eval([token])``, as the
  engine did before (llama-cpp-python's high-level layer);
- ``floor``: sample and decode only, nothing else (no text, no stop strings, no lines): what
  any caller of llama.cpp through Python pays at least.

Every call of ``llama_decode`` and ``llama_sampler_sample`` (both C) is timed; per token:
decode, sampler, and what is left: the Python around them. The difference engine vs
``Llama.eval`` is what the low-level decode saves.

    .venv/bin/python bench/engine_steps.py [--tokens 128] [--runs 5] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run from a checkout without the editable install too
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402 (puts the repo on sys.path)
from common import BenchError, log, p50, run_in_work_dir  # noqa: E402
from lmhost.synthetic import write_bench_model  # noqa: E402

PROMPT = "Once upon a time"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "seed": 1}
N_CTX = 2048
KINDS = ("engine", "Llama.eval", "floor")


class Clock:
    """Time spent inside two C functions of llama_cpp, wrapped in place."""

    def __init__(self, llama_cpp):
        self.decode = self.sample = 0.0
        self.decodes = 0
        low = llama_cpp.llama_cpp  # the module llama-cpp-python's own classes call through
        real_decode, real_sample = low.llama_decode, low.llama_sampler_sample

        def decode(ctx, batch):
            started = time.perf_counter()
            try:
                return real_decode(ctx, batch)
            finally:
                self.decode += time.perf_counter() - started
                self.decodes += 1

        def sample(chain, ctx, idx):
            started = time.perf_counter()
            try:
                return real_sample(chain, ctx, idx)
            finally:
                self.sample += time.perf_counter() - started
        for module in (low, llama_cpp):
            module.llama_decode, module.llama_sampler_sample = decode, sample

    def reset(self) -> None:
        self.decode = self.sample = 0.0
        self.decodes = 0


def run_once(kind: str, engine, generation, clock: Clock, tokens: int) -> dict:
    """One completion; per-token times of the sampling loop (the prompt excluded)."""
    llm = engine.llm
    params = {"prompt": PROMPT, "max_tokens": tokens, **SAMPLING}
    lines: list[dict] = []
    if kind == "floor":
        llm.reset()
        llm.eval(engine.prompt(params, [], None))
        sampler = generation.Sampler(engine, {**generation.SAMPLING_DEFAULTS, **SAMPLING},
                                     SAMPLING["seed"], None)
        try:
            decode_one = engine.next_token_decoder()
            clock.reset()
            started = time.perf_counter()
            for i in range(tokens):
                token, _ = sampler.sample(None)
                if i < tokens - 1:  # as the engine: the last token is not decoded
                    decode_one(token)
            wall = time.perf_counter() - started
        finally:
            sampler.close()
        return {"wall": wall, "decode": clock.decode, "sample": clock.sample,
                "decodes": clock.decodes, "tokens": tokens, "text": None}
    if kind == "Llama.eval":
        engine.next_token_decoder = lambda: lambda token: llm.eval([token])
    try:
        # the loop starts after the prompt: time it from the prompt's own decode on
        prompt_done = []
        real_eval_prompt = generation.Run._eval_prompt

        def eval_prompt(run, prompt, cached):
            stop = real_eval_prompt(run, prompt, cached)
            clock.reset()
            prompt_done.append(time.perf_counter())
            return stop
        generation.Run._eval_prompt = eval_prompt
        engine.generate(params, lines.append, threading.Event())
        ended = time.perf_counter()
    finally:
        generation.Run._eval_prompt = real_eval_prompt
        engine.__dict__.pop("next_token_decoder", None)
    done = lines[-1].get("done") if lines else None
    if not done or done["completion_tokens"] != tokens or done["stop"] != "length":
        raise BenchError(f"{kind}: the tamed bench model must give {tokens} tokens and stop on "
                         f"length; got {done}")
    return {"wall": ended - prompt_done[0], "decode": clock.decode, "sample": clock.sample,
            "decodes": clock.decodes, "tokens": tokens,
            "text": "".join(line.get("text", "") for line in lines)}


def per_token(result: dict) -> dict:
    n = result["tokens"]
    return {"wall_us": result["wall"] / n * 1e6, "decode_us": result["decode"] / n * 1e6,
            "sample_us": result["sample"] / n * 1e6,
            "python_us": (result["wall"] - result["decode"] - result["sample"]) / n * 1e6}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128,
                        help="tokens of every completion (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each way (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or not 2 <= args.tokens <= N_CTX - 64:
        parser.error(f"--runs and --threads must be at least 1, --tokens between 2 and "
                     f"{N_CTX - 64}")
    return args


def run(args, work: Path) -> int:
    import llama_cpp

    from workers.instance import generation
    from workers.llama_params import install

    extra_bufts = common.engine_extra_bufts()
    log(f"lmhost engine steps: {args.tokens} tokens, {args.runs} runs, {args.threads} "
        f"llama.cpp threads, extra buffer types {'on' if extra_bufts else 'off'} (the engine "
        f"probe's verdict), llama_cpp {llama_cpp.__version__}")
    model = write_bench_model(work / "bench-150m-Q8_0.gguf")
    install(extra_bufts=extra_bufts)
    llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=N_CTX, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    try:
        clock = Clock(llama_cpp)
        engine = generation.Engine(llm)
        for kind in KINDS:
            run_once(kind, engine, generation, clock, args.tokens)  # warm-up
        runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
        for _ in range(args.runs):
            for kind in KINDS:
                runs[kind].append(run_once(kind, engine, generation, clock, args.tokens))
    finally:
        llm.close()
    texts = {r["text"] for kind in ("engine", "Llama.eval") for r in runs[kind]}
    summary = {}
    for kind in KINDS:
        steps = [per_token(r) for r in runs[kind]]
        summary[kind] = {key: p50([s[key] for s in steps]) for key in steps[0]}
        summary[kind]["tokens_per_second"] = 1e6 / summary[kind]["wall_us"]
    rows = [("per generated token, p50 of %d" % args.runs, *KINDS)]
    for key, title in (("wall_us", "the whole step (us)"), ("decode_us", "  llama_decode (C)"),
                       ("sample_us", "  llama_sampler_sample (C)"),
                       ("python_us", "  the rest (Python around them)"),
                       ("tokens_per_second", "tokens/s of the loop")):
        rows.append((title, *(f"{summary[kind][key]:.1f}" for kind in KINDS)))
    log("\n" + "\n".join(f"{a:<40}{b:>12}{c:>12}{d:>12}" for a, b, c, d in rows))
    saved = summary["Llama.eval"]["python_us"] - summary["engine"]["python_us"]
    share = saved / summary["engine"]["wall_us"]
    log(f"the engine's own decode saves {saved:.1f} us a token over Llama.eval "
        f"({share:.1%} of the step); the same text both ways: "
        f"{'yes' if len(texts) == 1 else 'NO'}")
    if len(texts) != 1:
        raise BenchError("the engine and Llama.eval generated different texts")
    common.write_json(args, "engine_steps", {
        "tokens": args.tokens, "runs": args.runs, "threads": args.threads,
        "steps": summary, "saved_us": saved, "saved_share": share})
    return 0


def main(argv=None) -> int:
    return run_in_work_dir(run, parse_args(argv), "lmes-")


if __name__ == "__main__":
    sys.exit(main())
