"""Why a process of ours ended, in words a user can act on.

An instance that dies by a signal (SIGILL, SIGSEGV, SIGBUS, SIGABRT, ...) is reported by the
signal's name with the tail of its stderr (llama.cpp's last words: a GGML_ASSERT, an error), and
for SIGILL with the likely cause and the fix. The same sentence goes to the log, to the load or
the request the instance was serving, and to the listing's record of the failure.
"""

from __future__ import annotations

import re
import signal

# Lines of an instance's stderr that are lmhost's own narration ("loading ...", "loaded ..."):
# they say what we did, not why the process died.
_OURS = re.compile(r"\[instance [^\]]+\]")
_SILENT = re.compile(r"^\s*$")
TAIL_CHARS = 600

SIGNAL_HINTS = {
    signal.SIGILL: (
        "Likely cause: the llama.cpp engine uses CPU instructions that this host cannot run "
        "(a build made with -march=native on another CPU, or AMX that a VM or container traps). "
        "Fix: rebuild llama-cpp-python for this host ({rebuild}); `lmhost doctor` shows what "
        "this CPU offers and what the engine probe found."),
    signal.SIGBUS: ("Likely cause: the model file changed or shrank while it was mapped "
                    "(a download or copy over a loaded model), or the disk failed."),
    signal.SIGABRT: ("llama.cpp aborted (an assertion failed): the model or its load config is "
                     "one this llama.cpp build does not support."),
    signal.SIGSEGV: ("llama.cpp crashed (a memory fault): the model file may be damaged or "
                     "unsupported by this llama.cpp build."),
}


def exit_status(returncode: int | None) -> str:
    """"SIGILL (illegal instruction)", "exit code 1" or "unknown exit status"."""
    if returncode is None:
        return "unknown exit status"
    if returncode < 0:
        return signal_name(-returncode)
    return f"exit code {returncode}"


def signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(number) or ""
    return f"{name} ({description[:1].lower() + description[1:]})" if description else name


def stderr_tail(text: str, lines: int = 4) -> str:
    """The last `lines` meaningful lines of a process's stderr, joined with " | "."""
    kept = [line.strip() for line in text.splitlines()
            if not _SILENT.match(line) and not _OURS.search(line)]
    tail = " | ".join(kept[-lines:])
    return tail if len(tail) <= TAIL_CHARS else "…" + tail[-TAIL_CHARS:]


def failure_reason(stderr_text: str, fallback: str) -> str:
    """llama.cpp's own words for a failed load, from the tail of the instance's stderr."""
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    wanted = re.compile(r"error|failed|invalid|GGML_ASSERT|abort|exception|unable|cannot", re.I)
    picked = [line for line in lines if wanted.search(line) and not _OURS.search(line)]
    return " | ".join(picked[-4:]) or fallback


def explain_crash(subject: str, returncode: int | None, stderr_text: str, *,
                  rebuild: str = "") -> str:
    """One message for a process that died unasked: `subject` (e.g. "instance 'x' loading
    m.gguf") "crashed with SIGILL (illegal instruction)", its last stderr lines, and the hint
    for the signal. `returncode` is None when it is unknown (not our child)."""
    if returncode is None:
        message = f"{subject} exited unexpectedly (exit status unknown: an earlier supervisor started it)"
    elif returncode < 0:
        message = f"{subject} crashed with {exit_status(returncode)}"
    else:
        message = f"{subject} exited unexpectedly with {exit_status(returncode)}"
    tail = stderr_tail(stderr_text)
    if tail:
        message += f"; its last output: {tail}"
    hint = SIGNAL_HINTS.get(-returncode) if returncode is not None and returncode < 0 else None
    if hint:
        message += ". " + hint.format(rebuild=rebuild or
                                      "pip install --force-reinstall --no-cache-dir "
                                      "llama-cpp-python with CMAKE_ARGS for this CPU")
    return message
