"""The engine probe's decision and cache, with a fake probe (no llama.cpp), and the words a
crashed process is reported with."""

from __future__ import annotations

import signal

import pytest

from workers import engine_probe
from workers.crashes import exit_status, explain_crash, stderr_tail
from workers.engine_probe import Outcome, check_engine, decide, rebuild_advice

OK = Outcome(True)
SIGILL = Outcome(False, signal.SIGILL, "SIGILL (illegal instruction)")
SIGSEGV = Outcome(False, signal.SIGSEGV, "SIGSEGV (segmentation fault)")
TIMEOUT = Outcome(False, None, "the probe did not finish in 60 s")
FLAGS = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]


@pytest.mark.parametrize("on, off, usable, extra_bufts, conclusive", [
    (OK, None, True, True, True),              # AMX (or whatever) runs: nothing changes
    (SIGILL, OK, True, False, True),           # the host traps extra buffer types: off
    (SIGILL, SIGILL, False, False, True),      # built for another CPU: refuse to start
    (SIGILL, TIMEOUT, True, False, False),     # off is unproven, on is proven to crash
    (TIMEOUT, None, True, True, False),        # inconclusive: llama.cpp's defaults
    (SIGSEGV, None, True, True, False),        # not an instruction problem: defaults
])
def test_decide(on, off, usable, extra_bufts, conclusive):
    verdict = decide(on, off, FLAGS)
    assert (verdict.usable, verdict.extra_bufts, verdict.conclusive) == (usable, extra_bufts, conclusive)
    assert verdict.reason


def test_an_unusable_engine_is_explained_with_the_rebuild_for_this_cpu():
    reason = decide(SIGILL, SIGILL, FLAGS).reason
    assert "built for another CPU" in reason and "SIGILL" in reason
    assert "pip install --force-reinstall --no-cache-dir llama-cpp-python" in reason
    assert "-DGGML_NATIVE=OFF" in reason and "-DGGML_AVX512=ON" in reason


def test_rebuild_advice_uses_what_the_cpu_offers_and_never_amx():
    advice = rebuild_advice(["avx", "avx2", "fma", "f16c", "amx_tile", "amx_int8"])
    assert advice.startswith('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON')
    assert "AMX" not in advice and "AVX512" not in advice
    assert rebuild_advice([]).startswith('CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install')


class FakeProbe:
    """Stands in for the probe child: answers from a script, counts calls."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def __call__(self, model, extra_bufts):
        assert model.is_file()
        self.calls.append(extra_bufts)
        return self.outcomes.pop(0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_probe, "cache_key", lambda: {"engine": "build 1", "cpu": {
        "flags": FLAGS}})
    return tmp_path / "cache"


def test_a_trapping_host_is_probed_twice_then_served_from_the_cache(cache_dir):
    probe = FakeProbe(SIGILL, OK)
    verdict = check_engine(cache_dir, run=probe)
    assert probe.calls == [True, False] and not verdict.extra_bufts and verdict.usable

    again = check_engine(cache_dir, run=FakeProbe())  # no outcome left: it must not run
    assert again == verdict


def test_a_host_where_extra_buffers_run_is_probed_once(cache_dir):
    probe = FakeProbe(OK)
    assert check_engine(cache_dir, run=probe).extra_bufts and probe.calls == [True]


def test_an_inconclusive_probe_is_not_cached(cache_dir):
    check_engine(cache_dir, run=FakeProbe(TIMEOUT))
    probe = FakeProbe(OK)
    assert check_engine(cache_dir, run=probe).conclusive and probe.calls == [True]


def test_another_engine_build_or_cpu_is_probed_again(cache_dir, monkeypatch):
    check_engine(cache_dir, run=FakeProbe(SIGILL, OK))
    monkeypatch.setattr(engine_probe, "cache_key", lambda: {"engine": "build 2", "cpu": {
        "flags": FLAGS}})
    probe = FakeProbe(OK)
    assert check_engine(cache_dir, run=probe).extra_bufts and probe.calls == [True]


def test_a_damaged_cache_is_probed_again(cache_dir):
    check_engine(cache_dir, run=FakeProbe(OK))
    (cache_dir / engine_probe.CACHE_FILE).write_text("{not json")
    probe = FakeProbe(SIGILL, OK)
    assert not check_engine(cache_dir, run=probe).extra_bufts and probe.calls == [True, False]


def test_an_unwritable_cache_dir_keeps_the_defaults(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    verdict = check_engine(blocker / "cache", run=FakeProbe())
    assert verdict.usable and verdict.extra_bufts and not verdict.conclusive
    assert "cannot write" in verdict.reason


def test_the_real_cache_key_names_build_cpu_and_boot():
    key = engine_probe.cache_key()
    assert key["engine"]["version"] and key["engine"]["libraries"]
    assert key["cpu"]["flags"] and key["boot_id"]


# -- crashes ---------------------------------------------------------------------------------

def test_exit_status_names_signals():
    assert exit_status(-signal.SIGILL) == "SIGILL (illegal instruction)"
    assert exit_status(-signal.SIGBUS).startswith("SIGBUS (bus error")
    assert exit_status(1) == "exit code 1" and exit_status(None) == "unknown exit status"


def test_stderr_tail_skips_our_own_narration_and_blank_lines():
    text = ("2026-01-01 [instance abc] INFO loading x.gguf\n\n"
            "llama_model_load: error loading model: bad tensor\n"
            "GGML_ASSERT(n > 0) failed\n\n")
    assert stderr_tail(text) == "llama_model_load: error loading model: bad tensor | GGML_ASSERT(n > 0) failed"
    assert len(stderr_tail("x" * 5000)) <= 601


@pytest.mark.parametrize("sig, words", [
    (signal.SIGILL, ["SIGILL (illegal instruction)", "Likely cause", "CMAKE_ARGS=", "lmhost doctor"]),
    (signal.SIGSEGV, ["SIGSEGV (segmentation fault)", "memory fault"]),
    (signal.SIGBUS, ["SIGBUS", "changed or shrank"]),
    (signal.SIGABRT, ["SIGABRT (aborted)", "assertion"]),
])
def test_a_crash_is_named_with_its_last_words_and_a_hint(sig, words):
    message = explain_crash("instance 'a' of model 'm'", -sig, "GGML_ASSERT(x) failed\n",
                            rebuild='CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install ...')
    assert message.startswith("instance 'a' of model 'm' crashed with ")
    assert "its last output: GGML_ASSERT(x) failed" in message
    for word in words:
        assert word in message


def test_an_unexpected_exit_and_an_unknown_one_are_told_apart():
    assert "exited unexpectedly with exit code 1" in explain_crash("instance 'a'", 1, "")
    assert "exit status unknown" in explain_crash("instance 'a'", None, "")
