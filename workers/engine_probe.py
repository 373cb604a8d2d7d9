"""Can this llama.cpp build run on this host? Checked once per engine build, CPU and boot.

Why: ggml chooses CPU kernels by what the CPU *advertises*. In some VMs, containers and
sandboxes the CPU advertises AMX and the kernel grants the tile permission
(``arch_prctl(ARCH_REQ_XCOMP_PERM)``), yet tile instructions trap: llama-cpp-python's default
build (``-march=native``) then dies with SIGILL on the first decode of a Q4_0, Q4_1 or Q8_0
model, in ggml's AMX kernels, which work on weights kept in llama.cpp's "extra buffer types".
Loading with ``use_extra_bufts=False`` avoids them at no measurable cost (NOTES.md).

The probe: a child process (its crash must not take the caller down) loads a tiny generated
Q8_0 model and decodes a batch and a few single tokens, first with extra buffer types on:

- it decodes: instances use extra buffer types (nothing changes where AMX works);
- it dies by SIGILL: once more with them off. It decodes: instances load with them off, and one
  log line says why. It dies by SIGILL again: the engine was built for another CPU; the service
  refuses to start and says how to rebuild it for this one;
- anything else (a timeout, a failed load): inconclusive; defaults, a warning, nothing cached.

A conclusive verdict is cached in ``<cache_dir>/engine-probe.json`` under a key made of the
engine build (llama-cpp-python's version and its shared libraries' sizes and mtimes), the CPU
(model name and flags) and the boot id: the same image on another host is probed again.

This module does not import llama_cpp (the child does): ``python -m workers.engine_probe``
``decode MODEL --extra-bufts 0|1`` runs one probe, ``system-info`` prints the engine's build and
system info as JSON (for ``lmhost doctor``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from workers.probe_model import N_VOCAB, write_probe_model

log = logging.getLogger(__name__)

CACHE_FILE = "engine-probe.json"
MODEL_FILE = "engine-probe-q8_0-v2.gguf"
CACHE_VERSION = 2
PROBE_TIMEOUT = 60.0
STDERR_TAIL_LINES = 6

# CPU flags that decide which ggml kernels a build may use (shown by `lmhost doctor`).
RELEVANT_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                  "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# flag -> the ggml CMake option that uses it (a portable build for this host, without AMX)
CMAKE_OPTIONS = (("avx", "GGML_AVX"), ("avx2", "GGML_AVX2"), ("fma", "GGML_FMA"),
                 ("f16c", "GGML_F16C"), ("avx_vnni", "GGML_AVX_VNNI"), ("avx512f", "GGML_AVX512"),
                 ("avx512_vnni", "GGML_AVX512_VNNI"), ("avx512_bf16", "GGML_AVX512_BF16"))


@dataclass(frozen=True)
class Outcome:
    """How one probe child ended."""

    ok: bool
    signal: int | None = None   # the signal that killed it, if one did
    detail: str = ""            # why it failed: exit status and the tail of its stderr


@dataclass(frozen=True)
class Verdict:
    usable: bool          # False: the engine cannot decode on this host at all
    extra_bufts: bool     # load every instance with use_extra_bufts set to this
    conclusive: bool      # decided by the probe (and cached), not a fallback
    reason: str           # one line for the log (and, when unusable, the whole fix)


def cpu_info() -> dict:
    """The CPU's model name and flags, from /proc/cpuinfo (first processor)."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name == "model name" and model == "unknown":
                    model = value.strip()
                elif name == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    return {"model": model, "flags": flags}


def engine_build() -> dict:
    """llama-cpp-python's version and its shared libraries (name, size, mtime), without
    importing it: a rebuild changes them."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return {"version": None, "libraries": []}
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = None
    libraries = []
    lib_dir = Path(spec.origin).parent / "lib"
    for path in sorted(lib_dir.glob("*.so*")) if lib_dir.is_dir() else []:
        st = path.stat()
        libraries.append([path.name, st.st_size, st.st_mtime_ns])
    return {"version": version, "location": str(Path(spec.origin).parent), "libraries": libraries}


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def cache_key() -> dict:
    return {"version": CACHE_VERSION, "engine": engine_build(), "cpu": cpu_info(),
            "boot_id": boot_id()}


def rebuild_advice(flags: list[str]) -> str:
    """How to rebuild llama-cpp-python for this host: no -march=native, the instruction sets
    the CPU offers, and no AMX (which is what hosts trap)."""
    options = ["-DGGML_NATIVE=OFF"] + [f"-D{option}=ON" for flag, option in CMAKE_OPTIONS
                                       if flag in flags]
    return (f'CMAKE_ARGS="{" ".join(options)}" '
            "pip install --force-reinstall --no-cache-dir llama-cpp-python")


def decide(with_extra: Outcome, without_extra: Outcome | None, flags: list[str]) -> Verdict:
    """The verdict from the probe's outcomes (pure). `without_extra` is the second probe, run
    only when the first died by SIGILL."""
    if with_extra.ok:
        return Verdict(True, True, True, "the llama.cpp engine runs on this CPU with its extra "
                                         "buffer types (AMX, repacked weights) on")
    if with_extra.signal != signal.SIGILL:
        return Verdict(True, True, False, "engine probe inconclusive (keeping llama.cpp's "
                                          f"defaults): {with_extra.detail}")
    if without_extra is not None and without_extra.ok:
        return Verdict(True, False, True, (
            "this CPU advertises instructions that this host traps (SIGILL in llama.cpp's extra "
            "buffer types, e.g. AMX): every instance loads with use_extra_bufts=False"))
    if without_extra is not None and without_extra.signal == signal.SIGILL:
        return Verdict(False, False, True, (
            "the llama.cpp engine was built for another CPU: it dies with SIGILL (illegal "
            "instruction) on this host even without its extra buffer types. Rebuild it for this "
            f"host: {rebuild_advice(flags)} (`lmhost doctor` shows what this CPU offers)"))
    detail = without_extra.detail if without_extra is not None else "no second probe"
    return Verdict(True, False, False, (
        "extra buffer types die with SIGILL on this host; loading without them (the probe "
        f"without them was inconclusive: {detail})"))


def run_child(model: Path, extra_bufts: bool, timeout: float = PROBE_TIMEOUT) -> Outcome:
    """One probe child: decode a few tokens of `model`; how it ended."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.engine_probe", "decode", str(model),
             "--extra-bufts", "1" if extra_bufts else "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout, env=env, cwd=_import_root())
    except subprocess.TimeoutExpired:
        return Outcome(False, None, f"the probe did not finish in {timeout:.0f} s")
    except OSError as exc:
        return Outcome(False, None, f"cannot start the probe: {exc}")
    if done.returncode == 0 and done.stdout.strip() == b"ok":
        return Outcome(True)
    from workers.crashes import exit_status, stderr_tail
    tail = stderr_tail(done.stderr.decode("utf-8", "replace"), STDERR_TAIL_LINES)
    sig = -done.returncode if done.returncode < 0 else None
    return Outcome(False, sig, f"{exit_status(done.returncode)}{': ' + tail if tail else ''}")


def _import_root() -> str:
    """The folder `workers` is imported from, so the child imports the same code."""
    return str(Path(__file__).resolve().parent.parent)


def probe_model(cache_dir: Path) -> Path:
    """The probe's tiny Q8_0 model, written once into the cache dir (atomically: several
    services may probe at once)."""
    path = cache_dir / MODEL_FILE
    if not path.is_file():
        logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer narrates every file
        write_probe_model(path)
    return path


def check_engine(cache_dir: Path, run: Callable[[Path, bool], Outcome] = run_child) -> Verdict:
    """The verdict for this host: from the cache when its key matches, else from the probe
    (cached when conclusive). `run` runs one probe (a fake in unit tests). The caller logs
    `reason` where it matters (the supervisor, at every start)."""
    key = cache_key()
    cache = cache_dir / CACHE_FILE
    cached = read_cache(cache, key)
    if cached is not None:
        return cached
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        model = probe_model(cache_dir)
    except OSError as exc:
        return Verdict(True, True, False, f"engine probe skipped: cannot write its model in "
                                          f"{cache_dir}: {exc}")
    with_extra = run(model, True)
    without_extra = run(model, False) if with_extra.signal == signal.SIGILL else None
    verdict = decide(with_extra, without_extra, key["cpu"]["flags"])
    if verdict.conclusive:
        write_cache(cache, key, verdict)
    return verdict


def read_cache(cache: Path, key: dict) -> Verdict | None:
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == json.loads(json.dumps(key)):
            return Verdict(**data["verdict"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def write_cache(cache: Path, key: dict, verdict: Verdict) -> None:
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"key": key, "verdict": asdict(verdict)}, indent=1))
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("cannot cache the engine probe's verdict in %s: %s", cache, exc)


# -- the child --------------------------------------------------------------------------------

def _decode(model: str, extra_bufts: bool) -> int:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an expected crash writes no core file
    import llama_cpp

    from workers.llama_params import install
    install(extra_bufts=extra_bufts)
    llm = llama_cpp.Llama(model_path=model, n_ctx=256, n_batch=256, n_threads=1,
                          n_threads_batch=1, verbose=False)
    tokens = [3 + i % (N_VOCAB - 3) for i in range(128)]
    llm.eval(tokens)          # a batch: matrix kernels (AMX tiles) run here
    for token in tokens[:4]:  # and single tokens, as generation does
        llm.eval([token])
    print("ok", flush=True)
    return 0


def _system_info() -> int:
    import llama_cpp
    print(json.dumps({
        "version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "location": str(Path(llama_cpp.__file__).parent),
    }), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engine_probe")
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="load MODEL and decode a few tokens; print ok")
    decode.add_argument("model")
    decode.add_argument("--extra-bufts", choices=("0", "1"), required=True)
    sub.add_parser("system-info", help="print the engine's build and system info as JSON")
    args = parser.parse_args(argv)
    if args.command == "decode":
        return _decode(args.model, args.extra_bufts == "1")
    return _system_info()


if __name__ == "__main__":
    sys.exit(main())
