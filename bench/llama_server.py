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

    .venv/bin/python bench/llama_server.py     # build (about 5 minutes on 2 cores) and print the path
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH.parent / ".bench"


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


if __name__ == "__main__":
    print(ensure_llama_server())
