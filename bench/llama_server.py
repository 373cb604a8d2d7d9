#!/usr/bin/env python3
"""llama.cpp's own server, built once from the llama.cpp source that the installed
llama-cpp-python vendors, so the benchmarks compare lmhost with the peer a user would otherwise
pick on the very same engine code.

`ensure_llama_server()` returns the path of ``llama-server``, building it when the cache under
``.bench/llama-server-<version>/`` lacks it: the llama-cpp-python source distribution of the
installed version is fetched with pip (``pip download --no-binary``: the one download of the
benchmarks, cached), and llama.cpp is configured as llama-cpp-python's own build configures it
(Release, ``GGML_NATIVE`` on: the same kernels), with only the server target built. On a host
that traps AMX (the engine probe's verdict), run it with ``--no-repack``, which is
``use_extra_bufts = false``, as lmhost's instances then load.

`LlamaServer` runs it for a benchmark: one model on a free 127.0.0.1 port, one slot
(``-np 1``), the context, threads and flash attention (off) of lmhost's instances.

    .venv/bin/python bench/llama_server.py     # build (about 5 minutes on 2 cores), print the path
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH.parent / ".bench"
HEALTH_DEADLINE_S = 120.0
STOP_DEADLINE_S = 20.0


def version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def ensure_llama_server(log=print) -> Path:
    ver = version()
    root = CACHE / f"llama-server-{ver}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    source = root / f"llama_cpp_python-{ver}" / "vendor" / "llama.cpp"
    if not source.is_dir():
        archive = root / f"llama_cpp_python-{ver}.tar.gz"
        if not archive.is_file():
            log(f"fetching the llama-cpp-python {ver} source distribution (llama.cpp vendored)")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", f"llama-cpp-python=={ver}", "-d", str(root)],
                           check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    log(f"building llama-server from {source} (once; cached in {root})")
    build = root / "build"
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "--parallel"],
                   check=True, stdout=subprocess.DEVNULL)
    if not binary.is_file():
        raise FileNotFoundError(f"the build did not produce {binary}")
    return binary


class LlamaServer:
    """``llama-server`` serving `model` as lmhost's instances load it: `n_ctx`, `threads` for
    generation and batches, flash attention off (lmhost's default), one slot, and
    ``--no-repack`` exactly when the engine probe turned llama.cpp's extra buffer types off
    (`extra_bufts`). `gpu_layers` (a build with CUDA): that many layers on the GPU, as ``-ngl``.
    Its own session; its output goes to `log_path`."""

    def __init__(self, binary: Path, model: Path, threads: int, n_ctx: int, extra_bufts: bool,
                 log_path: Path, gpu_layers: int | None = None):
        self.command = [str(binary), "-m", str(model), "-c", str(n_ctx), "-t", str(threads),
                        "-tb", str(threads), "-np", "1", "-fa", "off", "--no-webui"]
        if not extra_bufts:
            self.command.append("--no-repack")
        if gpu_layers is not None:
            self.command += ["-ngl", str(gpu_layers)]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> float:
        """Starts it and waits (bounded) for ``/health``; returns the seconds that took."""
        from common import HOST, BenchError, free_port, get
        self.port = free_port()
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command + ["--host", HOST, "--port", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - started < HEALTH_DEADLINE_S:
            if self.proc.poll() is not None:
                break
            try:
                if get(self.port, "/health", timeout=2.0)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.05)  # poll interval, bounded by the deadline
        self.stop()
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        raise BenchError(f"llama-server did not become healthy; its log:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_DEADLINE_S)

    def flags(self) -> str:
        return " ".join(self.command[3:])


if __name__ == "__main__":
    print(ensure_llama_server())
