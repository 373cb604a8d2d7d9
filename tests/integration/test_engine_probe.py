"""The engine probe run for real: its verdict matches what a direct decode does on this host,
and every quantization whose kernels trap on some hosts (Q4_0, Q4_1, Q8_0) decodes through an
instance loaded with that verdict."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from lmhost import synthetic
from workers import engine_probe

# A decode as any llama-cpp-python user writes it: no lmhost code, llama.cpp's defaults, with
# extra buffer types on or off as argv[2] says.
DIRECT_DECODE = r"""
import sys, resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import llama_cpp, llama_cpp.llama_cpp as native
default = native.llama_model_default_params
def params():
    p = default()
    p.use_extra_bufts = sys.argv[2] == "on"
    return p
native.llama_model_default_params = params
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
print(llm("Once upon a time", max_tokens=8)["usage"]["completion_tokens"])
"""


def direct_decode(model, extra_bufts: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DIRECT_DECODE, str(model), extra_bufts],
                          capture_output=True, timeout=120, env={"GGML_NO_BACKTRACE": "1"})


def test_the_verdict_matches_what_a_direct_decode_does(tmp_path):
    verdict = engine_probe.check_engine(tmp_path / "cache")  # a fresh probe, not the cache
    assert verdict.conclusive and verdict.usable
    model = synthetic.write_dense_llama(tmp_path / "m.gguf", file_type="Q8_0").path

    on = direct_decode(model, "on")
    if verdict.extra_bufts:
        assert on.returncode == 0, on.stderr.decode()[-2000:]
    else:  # this host traps them: the probe saw what a user would see
        assert on.returncode == -signal.SIGILL
    off = direct_decode(model, "off")
    assert off.returncode == 0 and off.stdout.strip() == b"8", off.stderr.decode()[-2000:]


def test_the_probe_child_reports_a_decode(tmp_path):
    model = engine_probe.probe_model(tmp_path)
    assert engine_probe.run_child(model, extra_bufts=False) == engine_probe.Outcome(True)


@pytest.mark.parametrize("file_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_quantizations_with_cpu_specific_kernels_decode_through_an_instance(live, file_type):
    path = live.settings.models_dir / "lmhost" / f"quant-{file_type}-GGUF" / f"quant-{file_type}.gguf"
    synthetic.write_dense_llama(path, file_type=file_type, name=f"Quant {file_type}")
    key = f"quant-{file_type.lower()}"
    assert live.load(model=key).status_code == 200
    response = live.client.post("/v1/completions", json={
        "model": key, "prompt": "Once upon a time " * 8, "max_tokens": 16})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["usage"]["completion_tokens"] == 16
