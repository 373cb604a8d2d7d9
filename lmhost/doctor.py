"""``lmhost doctor``: can lmhost run on this host, and if not, what to do about it.

It reports the engine's build and system info (``llama_print_system_info``, from a child
process: this command imports neither llama_cpp nor Flask), the CPU flags that decide which
kernels llama.cpp may use, a fresh run of the engine probe (`workers.engine_probe`), the GPU as
NVML sees it, and the models, state and cache dirs. Every problem comes with its fix; the exit
status is 1 when any check failed, 0 otherwise (warnings included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

OK, WARNING, ERROR = "ok", "warning", "error"
REINSTALL = "pip install --force-reinstall --no-cache-dir llama-cpp-python"


@dataclass
class Check:
    name: str
    status: str        # ok | warning | error
    detail: str
    fix: str | None = None


def engine_info() -> tuple[Check, dict]:
    """llama-cpp-python's version, location and system info, asked of a child process."""
    try:
        done = subprocess.run([sys.executable, "-m", "workers.engine_probe", "system-info"],
                              capture_output=True, timeout=120)
        info = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return Check("engine", ERROR, f"llama-cpp-python does not start: {exc}",
                     f"reinstall it: {REINSTALL}"), {}
    offload = "yes" if info["supports_gpu_offload"] else "no (a CPU-only build)"
    detail = (f"llama-cpp-python {info['version']} ({info['location']}); GPU offload: {offload}\n"
              f"system info: {info['system_info']}")
    return Check("engine", OK, detail), info


def cpu_check() -> Check:
    from workers.engine_probe import RELEVANT_FLAGS, cpu_info
    cpu = cpu_info()
    has = [f for f in RELEVANT_FLAGS if f in cpu["flags"]]
    lacks = [f for f in RELEVANT_FLAGS if f not in cpu["flags"]]
    return Check("cpu", OK, f"{cpu['model']}; offers: {' '.join(has) or 'none'}; "
                            f"lacks: {' '.join(lacks) or 'none'}")


def probe_check() -> Check:
    """A fresh probe (a temporary cache: what the engine does now, not what it did once)."""
    from workers.engine_probe import check_engine, cpu_info, rebuild_advice
    with tempfile.TemporaryDirectory(prefix="lmhost-doctor-") as tmp:
        verdict = check_engine(Path(tmp))
    if not verdict.usable:
        return Check("probe", ERROR, verdict.reason, rebuild_advice(cpu_info()["flags"]))
    if not verdict.conclusive:
        return Check("probe", WARNING, verdict.reason)
    return Check("probe", OK, verdict.reason)


def gpu_check(engine: dict) -> Check:
    from workers.nvml import Nvml, NvmlError
    nvml = Nvml()
    try:
        gpus = nvml.read()
    except NvmlError as exc:
        return Check("gpu", WARNING, str(exc), "check the NVIDIA driver (nvidia-smi)")
    if not gpus:
        return Check("gpu", OK, nvml.reason or "no GPU: CPU mode")
    described = "; ".join(f"GPU {g.index} {g.name}: {g.free / 2**30:.1f} of {g.total / 2**30:.1f} "
                          f"GiB free" for g in gpus)
    detail = f"NVIDIA driver {nvml.driver_version}; {described}"
    if engine and not engine.get("supports_gpu_offload"):
        return Check("gpu", WARNING, detail + "; the engine cannot use them",
                     f'rebuild it with CUDA: CMAKE_ARGS="-DGGML_CUDA=on" {REINSTALL}')
    return Check("gpu", OK, detail)


def models_dir_check(models_dir: Path) -> Check:
    from workers.catalog import Catalog
    if not models_dir.exists():
        return Check("models dir", WARNING, f"{models_dir} does not exist: nothing to serve",
                     "create it and put models in <publisher>/<model>/<file>.gguf, or set "
                     "LMHOST_MODELS_DIR (`lmhost demo` writes demo models there)")
    if not (models_dir.is_dir() and os.access(models_dir, os.R_OK | os.X_OK)):
        return Check("models dir", ERROR, f"{models_dir} is not a readable folder",
                     "fix its permissions for the user lmhost runs as, or set LMHOST_MODELS_DIR")
    models = Catalog(models_dir).list_models()
    return Check("models dir", OK if models else WARNING,
                 f"{models_dir}: {len(models)} model(s)",
                 None if models else "put models in <publisher>/<model>/<file>.gguf")


def writable_dir_check(name: str, path: Path, variable: str, status_if_not: str) -> Check:
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return Check(name, OK, f"{path}: writable" + ("" if existing == path else
                                                        " (created at first start)"))
    return Check(name, status_if_not, f"{path} is not a folder this user can write",
                 f"fix its permissions, or set {variable} to a folder this user owns")


def supervisor_check(settings) -> Check:
    from workers.client import ping
    running = settings.state_dir.is_dir() and ping(settings)
    return Check("service", OK, "the supervisor of this state dir answers" if running
                 else "not running (start it with `lmhost serve`)")


def run_checks() -> list[Check]:
    from config import ConfigError, load_settings
    try:
        settings = load_settings()
    except ConfigError as exc:
        return [Check("settings", ERROR, str(exc), "fix or unset that LMHOST_* variable")]
    engine, info = engine_info()
    checks = [Check("settings", OK, "LMHOST_* variables are valid"), engine, cpu_check()]
    if engine.status != ERROR:
        checks.append(probe_check())
    checks += [gpu_check(info), models_dir_check(settings.models_dir),
               writable_dir_check("state dir", settings.state_dir, "LMHOST_STATE_DIR", ERROR),
               writable_dir_check("cache dir", settings.cache_dir, "LMHOST_CACHE_DIR", WARNING),
               supervisor_check(settings)]
    return checks


def main(as_json: bool = False) -> int:
    checks = run_checks()
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        for check in checks:
            lines = check.detail.splitlines()
            print(f"{check.status.upper():<8}{check.name:<12}{lines[0]}")
            for line in lines[1:]:
                print(f"{'':<20}{line}")
            if check.fix:
                print(f"{'':<20}fix: {check.fix}")
    return 1 if any(c.status == ERROR for c in checks) else 0
