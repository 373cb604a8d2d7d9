"""The client commands, after LM Studio's `lms`: ls, ps, load (and load --estimate-only),
unload, status (with the memory of GET /api/v1/resources).

They talk to a running lmhost over HTTP (`lmhost.client`), found through ``--url``, else
``LMHOST_URL``, else http://127.0.0.1:1234. Each `add_*` function adds one subcommand to the
parser; `lmhost.cli` lists them.
"""

from __future__ import annotations

import argparse
import json

from lmhost import output
from lmhost.client import CliError, Client, ServerError


def _with_url(sub, name: str, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    parser.add_argument("--url", help="lmhost's address (LMHOST_URL, default http://127.0.0.1:1234)")
    return parser


def client(args) -> Client:
    from config import ConfigError, client_token, client_url
    try:
        return Client(client_url(args.url), client_token())
    except ConfigError as exc:  # "url: ..." is the flag, "LMHOST_URL: ..." the variable
        message = str(exc)
        raise CliError("--" + message if message.startswith("url:") else message, exit_code=2)


def print_json(value) -> None:
    print(json.dumps(value, indent=2))


def instances(models: list[dict]) -> list[dict]:
    """Every loaded or loading instance of the listing, one flat object each (`ps --json`)."""
    return [{"identifier": instance["id"], "model": model["key"], "type": model["type"],
             "status": instance.get("status", "loaded"), "size_bytes": model.get("size_bytes"),
             "context_length": instance.get("config", {}).get("context_length"),
             "ttl_seconds": instance.get("ttl_seconds"), "config": instance.get("config", {})}
            for model in models for instance in model.get("loaded_instances", [])]


# -- ls ----------------------------------------------------------------------------------------

def add_ls(sub) -> None:
    parser = _with_url(sub, "ls", "list the models on disk")
    parser.add_argument("--json", action="store_true", help="print GET /api/v1/models's objects")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--llm", dest="type", action="store_const", const="llm",
                      help="only LLMs")
    kind.add_argument("--embedding", dest="type", action="store_const", const="embedding",
                      help="only embedding models")
    parser.set_defaults(func=cmd_ls)


def cmd_ls(args) -> int:
    models = [m for m in client(args).models() if args.type in (None, m.get("type"))]
    if args.json:
        print_json(models)
        return 0
    console = output.stdout_console()
    if not models:
        console.print("No models found.")
        return 0
    first = True
    for kind, title in (("llm", "LLM"), ("embedding", "EMBEDDING")):
        rows = [m for m in models if m.get("type") == kind]
        if rows:
            if not first:
                console.print()
            console.print(_models_table(title, rows, with_arch=kind == "llm"))
            first = False
    return 0


def _models_table(title: str, models: list[dict], with_arch: bool):
    """Embedding models have no architecture (seed 004), so their table has no ARCH column."""
    columns = (title, "PARAMS", *(("ARCH",) if with_arch else ()), "QUANT", "SIZE", "CONTEXT",
               "LOADED")
    grid = output.table(*columns, right=("SIZE", "CONTEXT", "LOADED"))
    for m in models:
        quant = (m.get("quantization") or {}).get("name") or "-"
        extra = len(m.get("variants") or []) - 1
        grid.add_row(m["key"], m.get("params_string") or "-",
                     *((m.get("architecture") or "-",) if with_arch else ()),
                     f"{quant} (+{extra} variant{'s' * (extra > 1)})" if extra else quant,
                     output.size(m.get("size_bytes")), str(m.get("max_context_length") or "-"),
                     str(len(m.get("loaded_instances") or []) or ""))
    return grid


# -- ps ----------------------------------------------------------------------------------------

def add_ps(sub) -> None:
    parser = _with_url(sub, "ps", "list the loaded model instances")
    parser.add_argument("--json", action="store_true", help="print one JSON object per instance")
    parser.set_defaults(func=cmd_ps)


def instances_table(loaded: list[dict]):
    grid = output.table("IDENTIFIER", "MODEL", "STATUS", "SIZE", "CONTEXT", "TTL",
                        right=("SIZE", "CONTEXT", "TTL"))
    for i in loaded:
        grid.add_row(i["identifier"], i["model"], i["status"], output.size(i["size_bytes"]),
                     str(i["context_length"] or "-"), output.duration(i["ttl_seconds"]))
    return grid


def cmd_ps(args) -> int:
    loaded = instances(client(args).models())
    if args.json:
        print_json(loaded)
        return 0
    console = output.stdout_console()
    console.print(instances_table(loaded) if loaded else "No models loaded.")
    return 0


# -- load --------------------------------------------------------------------------------------

def _gpu_ratio(raw: str):
    if raw in ("max", "off"):
        return raw
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be a number from 0 to 1, "max" or "off", got {raw!r}')
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}")
    return value


def add_load(sub) -> None:
    parser = _with_url(sub, "load", "load a model into memory, as a new instance")
    parser.add_argument("key", metavar="KEY",
                        help="model key, publisher/key or key@variant (see `lmhost ls`)")
    parser.add_argument("--identifier", help="the new instance's id (default: KEY, then KEY:2, ...)")
    parser.add_argument("--ttl", type=_positive_int, metavar="SECONDS",
                        help="unload after this many idle seconds (default: stay loaded)")
    parser.add_argument("--context-length", dest="context_length", type=_positive_int, metavar="N",
                        help="context length in tokens (default: the server's, capped by the model's)")
    parser.add_argument("--gpu", type=_gpu_ratio, metavar="RATIO",
                        help='share of layers on the GPU: 0..1, "max" or "off"')
    parser.add_argument("-y", "--yes", action="store_true",
                        help="answer yes to prompts: when KEY matches several models or variants, "
                             "take the default")
    parser.add_argument("--estimate-only", dest="estimate_only", action="store_true",
                        help="print the memory the load would take and whether it fits now; "
                             "load nothing")
    parser.add_argument("--json", action="store_true", help="print the load's JSON answer")
    parser.set_defaults(func=cmd_load)


def _pick(question: str, candidates: list[str], default: str, assume_yes: bool,
          refusal: str) -> str:
    if assume_yes:
        return default
    if output.interactive():
        return output.choose(question, candidates, default)
    raise CliError(f"{refusal}: {', '.join(candidates)}; name one, or pass -y to take {default}")


def resolve(key: str, models: list[dict], assume_yes: bool) -> str:
    """The reference to load for KEY. An exact key with several variants, or a KEY that names
    no model but is part of some keys, needs a choice: asked on a terminal, the default with
    -y, an error listing the candidates otherwise. Anything else goes to the server as typed
    (an unknown model gets the server's own 404 message)."""
    name, at, variant = key.partition("@")
    wanted = name.lower().removesuffix("-gguf")
    for model in models:
        if wanted in (model["key"], f"{model.get('publisher', '').lower()}/{model['key']}"):
            variants = model.get("variants") or []
            if at or len(variants) < 2:
                return key
            choice = _pick(f"{key} has several variants; which one?", variants,
                           model.get("selected_variant") or variants[0], assume_yes,
                           f"{key!r} has several variants")
            # the default variant keeps KEY as typed, so the instance id is KEY, as without variants
            return key if choice == model.get("selected_variant") else choice
    # a publisher's copy of a colliding key ("publisher/KEY") is the likeliest meaning, first
    candidates = sorted((m["key"] for m in models if wanted and wanted in m["key"]),
                        key=lambda k: (not k.endswith("/" + wanted), k))
    if not candidates:
        return key
    choice = _pick(f"{key!r} is not a model key; which model?", candidates, candidates[0],
                   assume_yes, f"{key!r} is not a model key; it is part of")
    return choice + at + variant


def cmd_load(args) -> int:
    api = client(args)
    reference = resolve(args.key, api.models(), args.yes)
    body = {"model": reference}
    for field, value in (("identifier", args.identifier), ("ttl", args.ttl),
                         ("context_length", args.context_length), ("gpu_offload", args.gpu)):
        if value is not None:
            body[field] = value
    if args.estimate_only:
        answer = api.estimate(body)
        if args.json:
            print_json(answer)
        else:
            print_estimate(answer, output.stdout_console())
        return 0
    try:
        with output.load_progress(reference) as report:
            loaded = api.load(body, on_progress=report)
    except KeyboardInterrupt:
        raise CliError("interrupted; the load goes on at the server (see `lmhost ps`)",
                       exit_code=130) from None
    if args.json:
        print_json(loaded)
    else:
        print(f"Loaded {reference} as {loaded['instance_id']!r} "
              f"in {loaded.get('load_time_seconds', 0):.2f} s")
    return 0


PARTS = (("weights", "weights"), ("kv_cache", "KV cache"), ("compute", "compute"),
         ("overhead", "overhead"))


def print_estimate(answer: dict, console) -> None:
    """`load --estimate-only`: the estimate by part, in RAM and on the GPUs, and the verdict."""
    estimate, gpu = answer["estimate"], answer["mode"] == "gpu"
    console.print(f"Estimate for {answer['model_key']}@{answer['variant']} "
                  f"(context {answer['load_config'].get('context_length', '-')}, "
                  f"{answer['mode'].upper()} mode):")
    grid = output.table("PART", *(("RAM", "GPU") if gpu else ()), "TOTAL",
                        right=("RAM", "GPU", "TOTAL"))
    for part, label in PARTS:
        total, on_gpu = estimate[f"{part}_bytes"], estimate["on_gpu"][f"{part}_bytes"]
        grid.add_row(label, *((output.size(total - on_gpu), output.size(on_gpu)) if gpu else ()),
                     output.size(total))
    grid.add_row("total", *((output.size(estimate["ram_bytes"]),
                             output.size(estimate["gpu_bytes"])) if gpu else ()),
                 output.size(estimate["total_bytes"]))
    console.print(grid)
    available = ", ".join(f"{output.size(answer['available'][f'{pool}_bytes'])} of {name}"
                          for pool, name in (("gpu", "GPU memory"), ("ram", "RAM"))
                          if f"{pool}_bytes" in answer["available"])
    console.print(f"Available now: {available}")
    verdict = ("fits" if answer["fits"] else
               "does not fit; the evict guardrail would unload idle instances first"
               if answer["passes_guardrail"] and answer["guardrail"] == "evict" else
               "does not fit; it would load anyway (guardrail off)"
               if answer["passes_guardrail"] else
               f"does not fit: a load would be refused (guardrail {answer['guardrail']})")
    console.print(f"Verdict: {verdict}")


# -- unload ------------------------------------------------------------------------------------

def add_unload(sub) -> None:
    parser = _with_url(sub, "unload", "unload a model instance, or all of them")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("identifier", nargs="?", metavar="ID", help="the instance's id (`lmhost ps`)")
    which.add_argument("-a", "--all", action="store_true", help="unload every instance")
    parser.set_defaults(func=cmd_unload)


def cmd_unload(args) -> int:
    api = client(args)
    if not args.all:
        print(f"Unloaded {api.unload(args.identifier)['instance_id']}")
        return 0
    ids = [i["identifier"] for i in instances(api.models())]
    if not ids:
        print("No models loaded.")
    for instance_id in ids:
        try:
            api.unload(instance_id)
        except ServerError as exc:
            if exc.type != "instance_not_found":  # gone meanwhile (TTL, another client): done
                raise
        print(f"Unloaded {instance_id}")
    return 0


# -- status ------------------------------------------------------------------------------------

def add_status(sub) -> None:
    parser = _with_url(sub, "status", "say whether lmhost is up at the URL and what is loaded")
    parser.add_argument("--json", action="store_true", help="print the status as one JSON object")
    parser.set_defaults(func=cmd_status)


def _loaded_section(status: dict, console) -> None:
    loaded = status["loaded"]
    console.print(f"{len(status['models'])} model(s) on disk, {len(loaded)} instance(s) loaded")
    if loaded:
        console.print()
        console.print(instances_table(loaded))


def _memory_section(status: dict, console) -> None:
    """Memory per pool (and per GPU), and each instance's estimate next to its use."""
    memory = status["memory"]
    limit = f", limit {output.size(memory['limit_bytes'])}" if memory["limit_bytes"] else ""
    console.print()
    console.print(f"Memory ({memory['mode'].upper()} mode, guardrail {memory['guardrail']}{limit})")
    grid = output.table("POOL", "TOTAL", "FREE", "RESERVED", "INSTANCES", "AVAILABLE",
                        right=("TOTAL", "FREE", "RESERVED", "INSTANCES", "AVAILABLE"))
    for pool in memory["pools"]:
        grid.add_row("GPU" if pool["pool"] == "gpu" else "RAM", output.size(pool["total_bytes"]),
                     output.size(pool["free_bytes"]), output.size(pool["reserved_bytes"]),
                     output.size(pool["instances_bytes"]), output.size(pool["available_bytes"]))
    for gpu in memory["gpus"]:
        grid.add_row(f"  GPU {gpu['index']} {gpu['name']}", output.size(gpu["total_bytes"]),
                     output.size(gpu["free_bytes"]), "", "", "")
    console.print(grid)
    if memory["instances"]:
        console.print()
        grid = output.table("IDENTIFIER", "ESTIMATE", "AFTER LOAD", "IN USE", "PEAK",
                            right=("ESTIMATE", "AFTER LOAD", "IN USE", "PEAK"))
        for i in memory["instances"]:
            def total(use):
                return output.size(use["total_bytes"]) if use else "-"
            grid.add_row(i["id"], total(i["estimate"]), total(i["measured"]), total(i["in_use"]),
                         output.size(i["in_use"]["ram_peak_bytes"]) if i["in_use"] else "-")
        console.print(grid)


# What `status` shows after its first line, in order; each takes (status dict, console).
# A section with its own data (e.g. the memory table from /api/v1/resources) adds its key to
# the status dict in cmd_status and its function here.
STATUS_SECTIONS = (_loaded_section, _memory_section)


def cmd_status(args) -> int:
    api = client(args)
    models = api.models()  # raises "cannot reach lmhost at URL: ..." when it is down
    status = {"url": api.url, "running": True, "models": [m["key"] for m in models],
              "loaded": instances(models), "memory": api.resources()}
    if args.json:
        print_json(status)
        return 0
    console = output.stdout_console()
    console.print(f"lmhost is running at {api.url}")
    for section in STATUS_SECTIONS:
        section(status, console)
    return 0
