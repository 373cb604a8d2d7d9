"""`lmhost doctor` as a user runs it: what it finds on this host, and a non-zero exit with the
fix when something is wrong."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.e2e.conftest import LMHOST, clean_env
from lmhost import synthetic


def doctor(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([LMHOST, "doctor", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_doctor_reports_engine_cpu_probe_and_dirs(short_tmp, engine_verdict):
    synthetic.write_demo_models(short_tmp / "models")
    env = clean_env(LMHOST_MODELS_DIR=str(short_tmp / "models"),
                    LMHOST_STATE_DIR=str(short_tmp / "state"))
    done = doctor(env, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert "system info: CPU :" in checks["engine"]["detail"]
    assert "offers:" in checks["cpu"]["detail"]
    # the probe's verdict is the one instances are loaded with on this host
    assert checks["probe"]["detail"] == engine_verdict.reason
    assert checks["models dir"]["detail"].endswith(": 3 model(s)")
    assert checks["gpu"]["status"] in ("ok", "warning")

    text = doctor(env)
    assert text.returncode == 0 and "probe" in text.stdout and "Traceback" not in text.stderr


def test_doctor_fails_with_the_fix(short_tmp):
    blocker = short_tmp / "a-file"
    blocker.write_text("")
    done = doctor(clean_env(LMHOST_STATE_DIR=str(blocker / "state")))
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if "state dir" in line)
    assert line.startswith("ERROR") and "fix: " in done.stdout and "LMHOST_STATE_DIR" in done.stdout

    typo = doctor(clean_env(LMHOST_MODEL_DIR="/tmp"))
    assert typo.returncode == 1 and "LMHOST_MODEL_DIR: not a setting" in typo.stdout
    assert "Traceback" not in typo.stderr


def test_serve_refuses_to_start_where_the_engine_cannot_decode(short_tmp):
    """The probe's verdict comes from its cache when the key matches: a cached "unusable"
    verdict for this very build, CPU and boot is what a host that traps everything would get."""
    from tests.e2e.conftest import free_port
    from workers import engine_probe
    cache = short_tmp / "cache"
    cache.mkdir()
    verdict = engine_probe.decide(
        engine_probe.Outcome(False, signal.SIGILL, "SIGILL"),
        engine_probe.Outcome(False, signal.SIGILL, "SIGILL"), engine_probe.cpu_info()["flags"])
    engine_probe.write_cache(cache / engine_probe.CACHE_FILE, engine_probe.cache_key(), verdict)
    env = clean_env(LMHOST_CACHE_DIR=str(cache), LMHOST_STATE_DIR=str(short_tmp / "state"),
                    LMHOST_MODELS_DIR=str(short_tmp / "models"), LMHOST_PORT=str(free_port()))
    done = subprocess.run([LMHOST, "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "lmhost cannot start: the llama.cpp engine was built for another CPU" in output
    assert "pip install --force-reinstall --no-cache-dir llama-cpp-python" in output
    assert "Traceback" not in output
