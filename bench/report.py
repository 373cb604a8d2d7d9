#!/usr/bin/env python3
"""The benchmarks' figures in one table and one picture: reads the JSON files the benchmarks
wrote with ``--json`` (``make bench`` puts them in ``.bench/results/``) and writes
``bench/RESULTS.md`` (every figure next to its baseline, the ratio, the target and whether it
is met, the machine, how it was measured) and ``bench/results.png`` (matplotlib, Agg).

A benchmark whose file is missing is reported as not measured. Figures are never rounded in
lmhost's favour: a ratio that must reach a target is shown rounded down, a time that must stay
under one rounded up, and "met" is decided on the unrounded figure.

    .venv/bin/python bench/report.py [--results .bench/results] [--markdown bench/RESULTS.md]
                                     [--png bench/results.png]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH.parent / ".bench" / "results"
BENCHMARKS = ("throughput", "list_models", "load_overhead", "sdk_clients", "engine_steps")

TPS_RATIO_TARGET = 0.97     # every wire's decode tok/s / in-process
PEER_RATIO_TARGET = 1.0     # every wire's decode tok/s / llama-server's: at least even
TTFT_ADDED_TARGET_S = 0.005
WARM_LISTING_TARGET_S = 0.020
WARM_LISTING_AT = 1000
COLD_SPEEDUP_TARGET = 50.0
LOAD_OVERHEAD_TARGET_S = 0.100
LOAD_OVERHEAD_SPARE_TARGET_S = 0.030
SDK_OVERHEAD_TARGET_S = 0.010
LISTING_P99_RATIO_TARGET = 2.0
SCALING_TARGET = 1.6

# side key in throughput.json -> label
BENCH_SIDES = (("in_process", "in-process"), ("llama_server", "llama-server"),
               ("socket", "instance socket"), ("v1", "/v1/completions"))
SIDE_COLOURS = {"in_process": "tab:gray", "inproc": "tab:gray", "llama_server": "tab:green",
                "in_process_huge_pages": "tab:olive", "inproc_huge_pages": "tab:olive"}
REAL_SIDES = (("inproc", "in-process"), ("llama_server", "llama-server"),
              ("v1", "/v1/chat/completions"), ("native", "/api/v1/chat"),
              ("sdk", "SDK respond_stream"), ("sdk_wire", "SDK wire, minimal client"),
              ("socket", "instance socket"))
HUGE_LABEL = "in-process loaded as lmhost loads, weights in huge pages"
# measured for what it explains, with no target of its own: the SDK wire read by a one-thread
# client (bench/sdk_wire.py), the server's part of the SDK's figures
INFO_SIDES = ("sdk_wire",)


def p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) / 2)) - 1]


def middle_half(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (nearest rank), as `p50` takes the median."""
    ordered = sorted(values)
    return (ordered[max(1, math.ceil(len(ordered) / 4)) - 1],
            ordered[max(1, math.ceil(3 * len(ordered) / 4)) - 1])


def down(value: float, digits: int) -> float:
    return math.floor(value * 10 ** digits) / 10 ** digits


def up(value: float, digits: int) -> float:
    return math.ceil(value * 10 ** digits) / 10 ** digits


class Table:
    """The rows of RESULTS.md: figure, value, baseline, ratio, target, met."""

    def __init__(self):
        self.rows: list[tuple[str, ...]] = []

    def section(self, title: str) -> None:
        self.rows.append((f"**{title}**", "", "", "", "", ""))

    def at_least(self, figure: str, value: float, base: float, base_label: str, unit: str,
                 target: float | None, ratio: "Rounds | None" = None) -> None:
        """`value` / `base` (higher is better) must reach `target` (None: shown, no target).
        `ratio`: the ratio to show and judge, with the middle half of its rounds, when taken
        round by round rather than as `value` / `base`."""
        shown = value / base if ratio is None else ratio.p50
        met = "" if target is None else ("yes" if shown >= target else "**no**")
        spread = "" if ratio is None else (f" ({down(ratio.q1, 2):.2f}–"
                                           f"{down(ratio.q3, 2):.2f})")
        self.rows.append((figure, f"{down(value, 1):.1f} {unit}",
                          f"{up(base, 1):.1f} {unit} ({base_label})",
                          f"{down(shown, 3):.3f}×{spread}",
                          "" if target is None else f"≥ {target:.2f}×", met))

    def at_most_added(self, figure: str, value: float, base: float, base_label: str,
                      target: float | None, strict: bool = False,
                      added: "Rounds | None" = None) -> None:
        """`value` - `base` (seconds, lower is better) must stay under `target` (`strict`:
        below it). `added`: the difference to show and judge, with the middle half of its
        rounds, when taken round by round rather than as `value` - `base`."""
        shown = value - base if added is None else added.p50
        ok = shown < target if strict else shown <= target if target is not None else None
        spread = "" if added is None else (f" ({up(added.q1 * 1000, 1):+.1f} to "
                                           f"{up(added.q3 * 1000, 1):+.1f})")
        self.rows.append((figure, ms(value), f"{ms(base, worse=False)} ({base_label})",
                          f"{up(shown * 1000, 1):+.1f} ms{spread}",
                          "" if target is None else
                          f"{'<' if strict else '≤'} +{target * 1000:.0f} ms",
                          "" if ok is None else ("yes" if ok else "**no**")))

    def plain(self, figure: str, value: str, base: str = "", ratio: str = "", target: str = "",
              met: bool | None = None) -> None:
        self.rows.append((figure, value, base, ratio, target,
                          "" if met is None else ("yes" if met else "**no**")))

    def markdown(self) -> str:
        head = ("figure", "value", "baseline", "ratio / added", "target", "met")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def ms(seconds: float, worse: bool = True) -> str:
    """Milliseconds, one decimal, rounded the way that makes lmhost look worse: up for its own
    times, down (``worse=False``) for a baseline's."""
    return f"{(up if worse else down)(seconds * 1000, 1):.1f} ms"


def us(seconds: float, worse: bool = True) -> str:
    """Microseconds, whole, rounded as `ms` rounds."""
    return f"{(math.ceil if worse else math.floor)(seconds * 1e6):.0f} µs"


# -- the table, benchmark by benchmark --------------------------------------------------------

@dataclass(frozen=True)
class Rounds:
    """A comparison taken round by round: its p50 over rounds, and the middle half of them."""

    p50: float
    q1: float
    q3: float


def by_round(side: dict, base: dict, figure: str, compare) -> Rounds | None:
    """`compare(side's run, base's run of the same round)` over the rounds: the machine's
    drift (10% and more over a minute here) hits both runs of a round alike. None when the
    runs were not recorded round by round."""
    mine, theirs = side.get(f"{figure}_runs"), base.get(f"{figure}_runs")
    if not mine or not theirs or len(mine) != len(theirs):
        return None
    values = [compare(a, b) for a, b in zip(mine, theirs)]
    return Rounds(p50(values), *middle_half(values))


def tps_rounds(side: dict, base: dict) -> Rounds | None:
    return by_round(side, base, "decode_tps", lambda a, b: a / b)


def ttft_rounds(side: dict, base: dict) -> Rounds | None:
    return by_round(side, base, "ttft", lambda a, b: a - b)


def tps_ratio(side: dict, base: dict) -> float | None:
    """`side`'s decode tok/s over `base`'s, the p50 over rounds."""
    rounds = tps_rounds(side, base)
    return rounds and rounds.p50


def ttft_added(side: dict, base: dict) -> float | None:
    """`side`'s time to first token less `base`'s, the p50 over rounds."""
    rounds = ttft_rounds(side, base)
    return rounds and rounds.p50


def wire_rows(t: Table, sides: dict, wires: tuple, ip: dict, targets: bool = True,
              huge: dict | None = None) -> None:
    """Each wire's decode tok/s against in-process and llama-server (when measured), then
    llama-server's against in-process; the same for the time to first token. Values and
    baselines are each side's p50; ratios and added times are taken round by round.
    `targets` False: wires shown for what they explain, with no target and no reference rows
    (those came with the wires before). `huge`: in-process loaded as lmhost's instances load
    (weights in huge pages), when measured: then the in-process targets, which are lmhost's
    own cost, are judged against it, the engine alike; against in-process as llama-cpp-python
    loads by default (the file mapped) each wire keeps a row with no target, and `huge` a
    reference row."""
    peer = sides.get("llama_server")
    alike, alike_label = (huge, "in-process, huge pages") if huge else (ip, "in-process")
    for key, label in wires:
        side = sides[key]
        if huge:
            t.at_least(f"decode tok/s, {label} vs {HUGE_LABEL}", side["decode_tps"],
                       huge["decode_tps"], alike_label, "tok/s",
                       TPS_RATIO_TARGET if targets else None, tps_rounds(side, huge))
        t.at_least(f"decode tok/s, {label}" + (" vs in-process, the file mapped" if huge else ""),
                   side["decode_tps"], ip["decode_tps"], "in-process", "tok/s",
                   TPS_RATIO_TARGET if targets and not huge else None, tps_rounds(side, ip))
        if peer:
            t.at_least(f"decode tok/s, {label} vs llama-server", side["decode_tps"],
                       peer["decode_tps"], "llama-server", "tok/s",
                       PEER_RATIO_TARGET if targets else None, tps_rounds(side, peer))
    if peer and targets:
        t.at_least("decode tok/s, llama-server (reference)", peer["decode_tps"],
                   ip["decode_tps"], "in-process", "tok/s", None, tps_rounds(peer, ip))
    if huge and targets:
        t.at_least(f"decode tok/s, {HUGE_LABEL} (reference)", huge["decode_tps"],
                   ip["decode_tps"], "in-process", "tok/s", None, tps_rounds(huge, ip))
    for key, label in wires:
        t.at_most_added(f"time to first token, {label}", sides[key]["ttft"], alike["ttft"],
                        alike_label, TTFT_ADDED_TARGET_S if targets else None,
                        added=ttft_rounds(sides[key], alike))
    if peer and targets:  # against in-process as llama-server loads: the file mapped
        t.at_most_added("time to first token, llama-server (reference)", peer["ttft"],
                        ip["ttft"], "in-process", None, added=ttft_rounds(peer, ip))


def throughput_rows(t: Table, f: dict) -> None:
    bm, sides = f["bench_model"], f["bench_model"]["sides"]
    t.section(f"Generation, bench model ({bm['params'] / 1e6:.0f}M params, {bm['file_type']}), "
              f"{f['tokens']} tokens, {f['threads']} threads, p50 of {f['runs']}")
    wire_rows(t, sides, (("v1", "/v1/completions"), ("socket", "instance socket")),
              sides["in_process"], huge=sides.get("in_process_huge_pages"))
    relayed = sides.get("v1_relayed")
    if relayed:  # the hand-off's gain, measured in the same rounds (no target of its own)
        t.at_least("decode tok/s, /v1/completions relayed by the HTTP worker "
                   "(`LMHOST_STREAM_HANDOFF=0`)", relayed["decode_tps"],
                   sides["in_process"]["decode_tps"], "in-process", "tok/s", None,
                   tps_rounds(relayed, sides["in_process"]))
        t.at_least("decode tok/s, /v1/completions: handed off / relayed", sides["v1"]["decode_tps"],
                   relayed["decode_tps"], "relayed", "tok/s", None,
                   tps_rounds(sides["v1"], relayed))
        cpu = bm["cpu_per_token"]
        t.plain("HTTP worker CPU per token, /v1/completions", us(cpu["v1"]["worker"]),
                f"{us(cpu['v1_relayed']['worker'], worse=False)} (relayed)")
        t.plain("the client's CPU per token, /v1/completions (the same client)",
                us(cpu["v1"]["client"]), f"{us(cpu['v1_relayed']['client'], worse=False)} (relayed)")
    t.plain("every side generated the same number of tokens", f"{f['tokens']} each",
            target="equal", met=bm["tokens_match"])
    sc = f["scaling"]
    t.plain("2 clients: 2 instances / 1 instance (1 thread each), aggregate tok/s",
            f"{sc['lmhost_two']:.1f} / {sc['lmhost_one']:.1f} tok/s",
            f"{sc['inproc_two'] / sc['inproc_one']:.2f}× (two llama.cpp processes, no lmhost)",
            f"{down(sc['lmhost_two'] / sc['lmhost_one'], 2):.2f}×", f"≥ {SCALING_TARGET}×",
            sc["lmhost_two"] / sc["lmhost_one"] >= SCALING_TARGET)

    real, rs = f["real_model"], f["real_model"]["sides"]
    ip = rs["inproc"]
    t.section(f"Generation, the real model ({real['key']}, Q4_1), {f['real_tokens']} tokens, "
              f"{f['threads']} threads, p50 of {f['runs']}")
    wire_rows(t, rs, tuple(w for w in REAL_SIDES[2:] if w[0] not in INFO_SIDES), ip,
              huge=rs.get("inproc_huge_pages"))
    if rs.get("sdk_wire"):
        wire_rows(t, rs, (("sdk_wire", "SDK wire, a minimal one-thread client (the server's "
                                       "part of the SDK's figures)"),), ip, targets=False,
                  huge=rs.get("inproc_huge_pages"))
    counts = sorted({c for key, _ in REAL_SIDES if rs.get(key) for c in rs[key]["token_counts"]})
    t.plain("tokens generated per run, every plain side", ", ".join(map(str, counts)),
            target="equal", met=real["tokens_match"])
    if "same_story" in real:  # since run K
        t.plain("the same story in every run, in-process and on every lmhost wire (one seed)",
                "yes" if real["same_story"] else "no", target="equal", met=real["same_story"])
    if "inproc_structured" in rs and "v1_structured" in rs:
        t.at_least("JSON schema: structured / plain tok/s, /v1", rs["v1_structured"]["decode_tps"],
                   rs["v1"]["decode_tps"], "/v1 plain", "tok/s", None)
        t.at_least("JSON schema: structured / plain tok/s, in-process",
                   rs["inproc_structured"]["decode_tps"], ip["decode_tps"], "in-process plain",
                   "tok/s", None)


def listing_rows(t: Table, f: dict) -> None:
    counts = sorted(f["counts"], key=int)
    t.section("Listing (`GET /api/v1/models`, 32k-token vocabularies)")
    low = f["counts"][counts[0]]
    for n in counts:
        r = f["counts"][n]
        if r["warm_http_p50"] is None:
            continue
        target = int(n) == WARM_LISTING_AT
        t.plain(f"warm listing p50, {int(n):,} models", ms(r["warm_http_p50"]),
                f"{ms(low['warm_http_p50'], worse=False)} ({int(counts[0]):,} models)"
                if n != counts[0] else "",
                f"{up(r['warm_http_p50'] / low['warm_http_p50'], 2):.2f}×"
                if n != counts[0] else "",
                f"≤ {WARM_LISTING_TARGET_S * 1000:.0f} ms" if target else "",
                r["warm_http_p50"] <= WARM_LISTING_TARGET_S if target else None)
    if str(WARM_LISTING_AT) not in f["counts"]:
        t.plain(f"warm listing p50, {WARM_LISTING_AT:,} models", "not measured",
                target=f"≤ {WARM_LISTING_TARGET_S * 1000:.0f} ms")
    top = f["counts"][counts[-1]]
    if f.get("gguf_reader_per_file"):
        per = top["cold_in_process"] / int(counts[-1])
        t.plain(f"cold listing per file, {int(counts[-1]):,} models", ms(per),
                f"{ms(f['gguf_reader_per_file'], worse=False)} (gguf.GGUFReader)",
                f"{math.floor(f['cold_speedup']):.0f}× faster", f"≥ {COLD_SPEEDUP_TARGET:.0f}×",
                f["cold_speedup"] >= COLD_SPEEDUP_TARGET)
    if len(counts) > 1 and top["ttft_v1_p50"] is not None and low["ttft_v1_p50"] is not None:
        t.at_most_added(f"/v1 time to first token, {int(counts[-1]):,} models in the dir",
                        top["ttft_v1_p50"], low["ttft_v1_p50"], f"{int(counts[0]):,} models",
                        None)


def load_rows(t: Table, f: dict) -> None:
    """The API's overhead, judged against in-process `Llama()` loaded as lmhost's instances
    load where that was measured (lmhost's own cost), else against the mapped load; the
    mapped load as llama-cpp-python does it by default in a reference row."""
    mapped = p50(f["in_process"])
    huge = f.get("in_process_huge_pages")
    alike, alike_label = ((p50(huge), "in-process `Llama()`, huge pages") if huge
                          else (mapped, "in-process `Llama()`"))
    t.section(f"Load (`POST /api/v1/models/load`), n_ctx {f['n_ctx']}, {f['threads']} threads, "
              f"p50 of {f['runs']}")
    on, off = p50(f["spare_on"]["wall"]), p50(f["spare_off"]["wall"])
    t.at_most_added("load of the bench model, spare pool on (the default)", on, alike,
                    alike_label, LOAD_OVERHEAD_TARGET_S)
    t.at_most_added("  the same, against the spare pool's own target", on, alike, alike_label,
                    LOAD_OVERHEAD_SPARE_TARGET_S, strict=True)
    t.at_most_added("load of the bench model, spare pool off", off, alike, alike_label, None)
    if huge:  # what lmhost's load mode costs, and the API with it, against the mapped load
        t.at_most_added("load of the bench model, spare pool on, vs in-process, the file mapped",
                        on, mapped, "in-process `Llama()`, mapped", None)
        t.at_most_added(f"load of the bench model, {HUGE_LABEL} (reference)", alike, mapped,
                        "in-process, mapped", None)
    for size in f.get("sizes", []):
        base = size.get("in_process_huge_pages") or size["in_process"]
        t.at_most_added(f"load, {size['name']} ({size['bytes'] / 1e6:.1f} MB)",
                        p50(size["api_wall"]), p50(base),
                        "in-process, huge pages" if size.get("in_process_huge_pages")
                        else "in-process", None)


def sdk_rows(t: Table, f: dict) -> None:
    t.section("SDK clients")
    t.at_most_added("load through the SDK (`load_new_instance`)", p50(f["sdk_load"]),
                    p50(f["rest_load"]), "REST", SDK_OVERHEAD_TARGET_S)
    idle, busy = (sorted(f["listing"][k]["seconds"]) for k in ("0", "40"))
    p99 = lambda v: v[max(1, math.ceil(0.99 * len(v))) - 1]  # noqa: E731
    ratio = p99(busy) / p99(idle)
    t.plain("listing p99 with 40 SDK clients connected", ms(p99(busy)),
            f"{ms(p99(idle), worse=False)} (none)", f"{up(ratio, 2):.2f}×",
            f"≤ {LISTING_P99_RATIO_TARGET:.0f}×", ratio <= LISTING_P99_RATIO_TARGET)


def engine_rows(t: Table, f: dict) -> None:
    steps = f["steps"]
    t.section(f"Engine, per generated token (bench model, {f['threads']} threads, p50 of "
              f"{f['runs']})")
    t.plain("Python around llama_decode and the sampler, engine",
            f"{steps['engine']['python_us']:.1f} µs",
            f"{steps['Llama.eval']['python_us']:.1f} µs (with `Llama.eval` per token)",
            f"{-f['saved_us']:+.1f} µs ({-f['saved_share']:+.2%} of a step)")
    t.plain("the whole step, engine", f"{steps['engine']['wall_us']:.0f} µs",
            f"{steps['floor']['wall_us']:.0f} µs (sample + decode only)")


# -- the document -------------------------------------------------------------------------------

def machine_lines(data: dict) -> list[str]:
    machines = {name: d["machine"] for name, d in data.items()}
    first = next(iter(machines.values()))
    threads = []
    if "throughput" in data:
        th = data["throughput"]["figures"]["threads"]
        threads.append(f"{th} for generation (1 per instance in the 2-client test)")
    if "load_overhead" in data:
        threads.append(f"{data['load_overhead']['figures']['threads']} for loads")
    lines = [f"- CPU: {first['cpu']}, {first['cores']} cores ({first['cores_available']} "
             f"available to the benchmarks)",
             f"- llama.cpp threads: {'; '.join(threads) or 'as each benchmark says'}",
             f"- llama-cpp-python {first['llama_cpp_python']}, Python {first['python']}, "
             f"{first['system']}"]
    if "throughput" in data:
        tp = data["throughput"]["figures"]
        peer = "; llama-server ran with --no-repack" if tp["bench_model"]["sides"].get(
            "llama_server") else ""
        lines.append("- llama.cpp's extra buffer types (AMX, repacked weights): " + (
            "on" if tp["extra_bufts"] else f"off (the engine probe found them unusable here{peer})"))
        if "huge_pages" in tp:
            lines.append("- lmhost's instances: weights " + (
                "read into transparent huge pages (`LMHOST_HUGE_PAGES`, the default on a host "
                "without GPUs); the in-process baseline and llama-server map the file, as they do "
                "by default; a second in-process side loads as the instances do"
                if tp["huge_pages"] else "mapped from the file (no usable transparent huge pages)"))
    dates = sorted({m["date"] for m in machines.values()})
    lines.append(f"- measured {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else ""))
    return lines


HOW = """\
How measured: every benchmark runs the real service (`lmhost serve --workers 1` on
127.0.0.1) and its baseline in the same run, interleaved, so that the machine's drift hits both
alike; figures are p50s (nearest rank). Generation runs in rounds, one run of every side
per round; the wires' rounds in a new order each round (a seed drawn per run, in the log and
the JSON), an untimed run in another process between two of one process; a wire's ratio to a
baseline (and its added time to first token) is the p50 over rounds of its run against the
baseline's run of the same round, so that the drift of this
machine's speed (10% and more within a minute) cancels out; in brackets after it, the middle
half of those rounds (first to third quartile), which shows how far one run's figure can stray
here; the value and baseline columns are each side's own p50. Generation: a streamed
completion of the synthetic
bench model (it never stops early, so every side generates exactly the asked tokens) and a
streamed chat of SmolLM2, the same prompt, sampling and seed on every side, timed by the client
from the request to each text chunk: decode tok/s = (tokens − 1) / (last chunk − first chunk),
time to first token = request to first text. In-process is llama-cpp-python in a fresh
interpreter (`Llama.create_completion` / `create_chat_completion`, `stream=True`), the file
mapped as llama-cpp-python does by default; "in-process loaded as lmhost loads" is a second
such interpreter with the weights read into transparent huge pages (`use_mmap=False`, glibc's
`glibc.malloc.hugetlb=1`), as lmhost's instances load on a host without GPUs: where it ran, the
targets against in-process (tokens/s, first token, load) are judged against it, so that they
measure lmhost's own cost with the engine alike, and the mapped figures are shown too; llama-server
is llama.cpp's own, built from the source llama-cpp-python vendors, run with the same model,
context, threads and flash attention (off), one slot, `ignore_eos`, and its defaults
otherwise (the file mapped). Listing: the models dir
grows from the smallest count to the largest; cold = a fresh catalog, warm = repeated `GET
/api/v1/models` on fresh connections; the time to first token is a tiny model's, loaded next to
those models. Load: wall time of `POST /api/v1/models/load` against `llama_cpp.Llama()` in a
fresh interpreter, same file and context. The scripts (`bench/*.py --help`) say the rest.
"""


def markdown(data: dict, table: Table, missing: list[str], quick: bool) -> str:
    out = ["# lmhost benchmark results", "",
           "Written by `bench/report.py` from the figures of `make bench` "
           "([README: Performance](../README.md#performance)); the picture: "
           "[results.png](results.png).", ""]
    if quick:
        out += ["**Quick mode** (`make bench QUICK=1`: few runs, few tokens): a check that "
                "every benchmark runs, not figures to quote.", ""]
    out += [*machine_lines(data), ""]
    if missing:
        out += [f"Not measured in this run: {', '.join(missing)}.", ""]
    out += [table.markdown(), "", "Every figure is rounded the way that makes lmhost look "
            "worse (its tokens/s and ratios down, its times and added times up, baselines the "
            "other way), so one figure may differ by its last digit from row to row; \"met\" is "
            "decided on the unrounded figures.", "", HOW]
    return "\n".join(out)


# -- the picture --------------------------------------------------------------------------------

def picture(data: dict, path: Path, quick: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    if quick:
        fig.suptitle("QUICK MODE: a check that every benchmark runs, not figures to quote",
                     color="tab:red")
    tp = data.get("throughput", {}).get("figures")
    for col, (model, sides, title) in enumerate((
            ("bench_model", BENCH_SIDES[:1] + (("in_process_huge_pages", "in-process, huge pages"),)
             + BENCH_SIDES[1:], "bench model"),
            ("real_model", REAL_SIDES[:1] + (("inproc_huge_pages", "in-process, huge pages"),)
             + REAL_SIDES[1:], "SmolLM2"))):
        if tp is None:
            for row in (0, 1):
                _empty(axes[row][col * 2 if row == 0 else col * 2 + 1], "throughput not measured")
            continue
        present = [(k, label) for k, label in sides if tp[model]["sides"].get(k)]
        # the targets' baseline: in-process loaded as the instances load, where it ran
        base_key = present[1][0] if "huge_pages" in present[1][0] else present[0][0]
        base = tp[model]["sides"][base_key]
        base_name = "in-process, huge pages" if base_key != present[0][0] else "in-process"
        values = [tp[model]["sides"][k]["decode_tps"] for k, _ in present]
        ax = axes[0][col * 2]
        colours = [SIDE_COLOURS.get(k, "tab:blue") for k, _ in present]
        _bars(ax, [label for _, label in present], values, "{:.1f}", colours)
        ax.axhline(base["decode_tps"] * TPS_RATIO_TARGET, color="tab:red", ls="--", lw=1,
                   label=f"{TPS_RATIO_TARGET}× {base_name}")
        peer = tp[model]["sides"].get("llama_server")
        if peer:
            ax.axhline(peer["decode_tps"], color="tab:green", ls=":", lw=1, label="llama-server")
        ax.set_title(f"decode tokens/s, {title} ({tp['threads']} threads)")
        ax.set_ylabel("tokens/s")
        ax.set_ylim(0, max(values) * 1.3)  # room for the legend above the bars
        ax.legend(loc="upper left", fontsize=8, ncol=2)
        ax = axes[0][col * 2 + 1]
        ttfts = [tp[model]["sides"][k]["ttft"] * 1000 for k, _ in present]
        _bars(ax, [label for _, label in present], ttfts, "{:.1f}", colours)
        ax.axhline(base["ttft"] * 1000 + TTFT_ADDED_TARGET_S * 1000, color="tab:red", ls="--",
                   lw=1, label=f"{base_name} + 5 ms")
        ax.set_title(f"time to first token, {title}")
        ax.set_ylabel("ms")
        ax.set_ylim(0, max(ttfts + [base["ttft"] * 1000 + TTFT_ADDED_TARGET_S * 1000]) * 1.3)
        ax.legend(loc="upper left", fontsize=8)

    lm = data.get("list_models", {}).get("figures")
    ax = axes[1][0]
    if lm:
        counts = sorted(lm["counts"], key=int)
        xs = [int(n) for n in counts]
        for key, label in (("cold_in_process", "cold, in-process"), ("cold_http", "cold, HTTP"),
                           ("warm_http_p50", "warm, HTTP (p50)")):
            ax.plot(xs, [lm["counts"][n][key] * 1000 for n in counts], "o-", label=label)
        ax.axhline(WARM_LISTING_TARGET_S * 1000, color="tab:red", ls="--", lw=1,
                   label="20 ms (warm target at 1,000)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("models in the dir")
        ax.set_ylabel("ms")
        ax.set_title("listing time vs number of models")
        ax.legend(fontsize=8)
        ax = axes[1][2]
        with_ttft = [n for n in counts if lm["counts"][n]["ttft_v1_p50"] is not None]
        _bars(ax, [f"{int(n):,} models" for n in with_ttft],
              [lm["counts"][n]["ttft_v1_p50"] * 1000 for n in with_ttft], "{:.1f}")
        ax.set_title("/v1 time to first token vs models in the dir")
        ax.set_ylabel("ms (p50)")
    else:
        _empty(ax, "listing not measured")
        _empty(axes[1][2], "listing not measured")

    lo = data.get("load_overhead", {}).get("figures")
    ax = axes[1][1]
    if lo and lo.get("sizes"):
        sizes = lo["sizes"]
        mb = [s["bytes"] / 1e6 for s in sizes]
        ax.plot(mb, [p50(s["in_process"]) * 1000 for s in sizes], "o-",
                label="in-process Llama(), mapped")
        if all(s.get("in_process_huge_pages") for s in sizes):
            ax.plot(mb, [p50(s["in_process_huge_pages"]) * 1000 for s in sizes], "o-",
                    label="in-process Llama(), huge pages (as the instances load)")
        ax.plot(mb, [p50(s["api_wall"]) * 1000 for s in sizes], "o-",
                label="POST /api/v1/models/load")
        ax.set_xscale("log")
        ax.set_xlabel("model file (MB)")
        ax.set_ylabel("ms (p50)")
        ax.set_title(f"load time vs model size (n_ctx {lo['n_ctx']})")
        ax.legend(fontsize=8)
    else:
        _empty(ax, "load time vs size not measured")

    es = data.get("engine_steps", {}).get("figures")
    ax = axes[1][3]
    if es:
        kinds = ("engine", "Llama.eval", "floor")
        _bars(ax, ["engine (llama_decode)", "Llama.eval per token", "sample + decode only"],
              [es["steps"][k]["python_us"] for k in kinds], "{:.0f}")
        ax.set_title("per token, Python around llama_decode + sampler")
        ax.set_ylabel("µs")
    else:
        _empty(ax, "engine steps not measured")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _bars(ax, labels: list[str], values: list[float], fmt: str,
          colours: list[str] | None = None) -> None:
    bars = ax.bar(range(len(values)), values, color=colours or "tab:blue")
    for bar, value in zip(bars, values):
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


# -- main ---------------------------------------------------------------------------------------

def load(results: Path) -> tuple[dict, list[str]]:
    data, missing = {}, []
    for name in BENCHMARKS:
        path = results / f"{name}.json"
        try:
            data[name] = json.loads(path.read_text())
        except FileNotFoundError:
            missing.append(name)
    return data, missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"the benchmarks' JSON files (default {RESULTS})")
    parser.add_argument("--markdown", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--png", type=Path, default=BENCH / "results.png")
    parser.add_argument("--quick", action="store_true",
                        help="the figures come from a quick run: say so at the top")
    args = parser.parse_args(argv)
    data, missing = load(args.results)
    if not data:
        print(f"report: no benchmark figures in {args.results} (run `make bench`)",
              file=sys.stderr)
        return 1
    table = Table()
    for name, rows in (("throughput", throughput_rows), ("list_models", listing_rows),
                       ("load_overhead", load_rows), ("sdk_clients", sdk_rows),
                       ("engine_steps", engine_rows)):
        if name in data:
            rows(table, data[name]["figures"])
    args.markdown.write_text(markdown(data, table, missing, args.quick))
    picture(data, args.png, args.quick)
    print(f"wrote {args.markdown} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
