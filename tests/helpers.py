"""Test helpers: GGUF files written with the gguf package (independently of lmhost's reader),
models-dir layout, and a polling deadline."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def write_gguf(path, *, arch="llama", name=None, file_type=None, context_length=4096,
               tensors=None, extra=None, pooling_type=None, chat_template=None) -> Path:
    """A small GGUF file (header and tiny F32 tensors) for catalog tests.

    `tensors`: name -> shape (numpy order); default one 8x4 matrix and one vector.
    `extra`: further key/values, str/int/float/bool or list of str (written as arrays).
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    if name is not None:
        writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(file_type)
    if context_length is not None:
        writer.add_uint32(f"{arch}.context_length", context_length)
    if pooling_type is not None:
        writer.add_uint32(f"{arch}.pooling_type", pooling_type)
    if chat_template is not None:
        writer.add_string("tokenizer.chat_template", chat_template)
    for key, value in (extra or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint64(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, value)
    for tensor_name, shape in (tensors or {"token_embd.weight": (8, 4), "output_norm.weight": (4,)}).items():
        writer.add_tensor(tensor_name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def our_processes(state_dir) -> list[int]:
    """Pids of live processes whose command line names `state_dir` (supervisor, instances and
    spares all carry ``--state-dir``), the test process itself excluded."""
    import os

    needle = os.fsencode(str(state_dir))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def spare_pids(state_dir) -> list[int]:
    """Pre-started instance processes of the service at `state_dir`: instance processes that
    no row of its instance table owns."""
    from workers.table import InstanceTable
    owned = {row["pid"] for row in InstanceTable(state_dir).read()}
    return [pid for pid in our_processes(state_dir)
            if b"workers.instance" in _cmdline(pid) and pid not in owned]


def break_model(path) -> Path:
    """Make a whole GGUF file that llama.cpp refuses: a tensor it needs is renamed in the
    header (same length), so the catalog lists it but its load fails (422) with llama.cpp's
    reason ("tensor 'output_norm.weight' not found"). A truncated file is not listed at all."""
    path = Path(path)
    data = path.read_bytes()
    assert data.count(b"output_norm.weight") == 1
    path.write_bytes(data.replace(b"output_norm.weight", b"output_norm.wEight"))
    return path


# -- API tokens the suite uses, and the check that no log holds one ----------------------------

TOKENS_USED: set[str] = set()


def api_token() -> str:
    """A fresh API token, shaped like LM Studio's (``sk-lm-<8>:<20>``, so the TypeScript
    client's ``apiToken`` takes it), remembered so that `files_with_tokens` looks for it."""
    import secrets
    import string

    alphabet = string.ascii_letters + string.digits
    token = "sk-lm-{}:{}".format("".join(secrets.choice(alphabet) for _ in range(8)),
                                 "".join(secrets.choice(alphabet) for _ in range(20)))
    TOKENS_USED.add(token)
    return token


def files_with_tokens(*roots, tokens=None) -> dict[str, list[str]]:
    """Every log under `roots` (a file named there, or a ``*.log`` file under a folder named
    there: servers, supervisors, instances and nginx all write such) that holds one of
    `tokens` (default: every token the suite made), or a part of one (its secret, as the SDK's
    auth frame splits it): path -> what it holds, the tokens shown by their first 10
    characters only."""
    needles = {}
    for token in (TOKENS_USED if tokens is None else tokens):
        needles[token.encode()] = token
        head, colon, secret = token.partition(":")
        if colon and len(secret) >= 12:
            needles[secret.encode()] = token
    found: dict[str, list[str]] = {}
    for root in roots:
        root = Path(root)
        paths = ([root] if root.is_file() else
                 (p for p in root.rglob("*.log") if p.is_file()) if root.is_dir() else ())
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits = sorted({needles[n][:10] + "…" for n in needles if n in data})
            if hits:
                found[str(path)] = hits
    return found

