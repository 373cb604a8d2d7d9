"""The `lmhost` client commands as a person runs them: the installed console script against a
real `lmhost serve`, piped (plain text, parseable JSON) and on a terminal (a pty: progress bar,
prompts)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time

import pytest
import requests

from tests.e2e.conftest import LMHOST, clean_env, free_port
from tests.helpers import break_model

ESC = "\x1b"


def lmhost(*args, url=None, timeout=60) -> subprocess.CompletedProcess:
    """Runs `lmhost ARGS` piped; `url` is exported as LMHOST_URL."""
    env = clean_env(**({"LMHOST_URL": url} if url else {}))
    return subprocess.run([LMHOST, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert ESC not in proc.stdout + proc.stderr  # piped: no escape codes, ever
    return proc.stdout


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str, code: int = 1):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"lmhost: {message}"]


def in_pty(args, url, answer=None, timeout=60) -> tuple[int, str]:
    """Runs `lmhost ARGS` with stdin, stdout and stderr on a pseudo-terminal, as in a terminal
    emulator; once `answer` = (prompt text, reply) shows the prompt, types the reply."""
    master, slave = pty.openpty()
    env = clean_env(LMHOST_URL=url, TERM="xterm-256color", COLUMNS="100")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([LMHOST, *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    screen, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if answer and answer[0].encode() in screen:
                os.write(master, answer[1].encode() + b"\r")
                answer = None
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the command exited and closed the terminal
                    chunk = b""
                if not chunk:
                    break
                screen += chunk
        else:
            raise AssertionError(f"lmhost {' '.join(args)} still running after {timeout}s: "
                                 f"{screen.decode(errors='replace')!r}")
        return proc.wait(timeout=10), screen.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.fixture
def demo_server(short_tmp, serve):
    from lmhost import synthetic
    synthetic.write_demo_models(short_tmp / "models")
    return serve(short_tmp / "models", "--workers", "1")


def test_ls_ps_load_status_piped_are_plain_text_and_json_parses(demo_server):
    url = demo_server.url
    listing = ok(lmhost("ls", url=url))
    assert listing.splitlines()[0].split() == ["LLM", "PARAMS", "ARCH", "QUANT", "SIZE",
                                               "CONTEXT", "LOADED"]
    assert re.search(r"^tiny-llama +467K +llama +F16 +952\.7 kB +2048\s*$", listing, re.M)
    assert re.search(r"^EMBEDDING +PARAMS +QUANT", listing, re.M)
    assert re.search(r"^tiny-embed +403K +F16", listing, re.M)

    # --json: the objects of GET /api/v1/models's models array; --url wins over LMHOST_URL
    dead = f"http://127.0.0.1:{free_port()}"
    assert json.loads(ok(lmhost("ls", "--json", "--url", url, url=dead))) == \
        demo_server.get("/api/v1/models").json()["models"]
    assert [m["key"] for m in json.loads(ok(lmhost("ls", "--json", "--llm", url=url)))] == \
        ["tiny-llama", "tiny-moe"]
    only_embeddings = ok(lmhost("ls", "--embedding", url=url))
    assert "tiny-embed" in only_embeddings and "tiny-llama" not in only_embeddings

    for command in ("ls", "ls --json"):  # a reader that leaves early is no error
        left = subprocess.run(["bash", "-c", f"set -o pipefail; {LMHOST} {command} | true"],
                              capture_output=True, text=True, timeout=60,
                              env=clean_env(LMHOST_URL=url))
        assert (left.returncode, left.stderr) == (0, "")

    assert ok(lmhost("ps", url=url)) == "No models loaded.\n"
    assert json.loads(ok(lmhost("ps", "--json", url=url))) == []

    loaded = ok(lmhost("load", "tiny-llama", "--ttl", "300", "--context-length", "1024",
                       "--gpu", "off", url=url))
    assert loaded.startswith("Loaded tiny-llama as 'tiny-llama' in ")
    answer = json.loads(ok(lmhost("load", "tiny-llama", "--json", url=url)))
    assert (answer["instance_id"], answer["status"]) == ("tiny-llama:2", "loaded")

    ps = ok(lmhost("ps", url=url)).splitlines()
    assert ps[0].split() == ["IDENTIFIER", "MODEL", "STATUS", "SIZE", "CONTEXT", "TTL"]
    assert ps[1].split() == ["tiny-llama", "tiny-llama", "loaded", "952.7", "kB", "1024", "5m"]
    assert ps[2].split() == ["tiny-llama:2", "tiny-llama", "loaded", "952.7", "kB", "2048"]
    instances = json.loads(ok(lmhost("ps", "--json", url=url)))
    assert [(i["identifier"], i["model"], i["context_length"], i["ttl_seconds"])
            for i in instances] == [("tiny-llama", "tiny-llama", 1024, 300),
                                    ("tiny-llama:2", "tiny-llama", 2048, None)]

    status = ok(lmhost("status", url=url)).splitlines()
    assert status[:2] == [f"lmhost is running at {url}", "3 model(s) on disk, 2 instance(s) loaded"]
    assert status[3].split()[0] == "IDENTIFIER" and status[6] == ""
    assert status[7].startswith("Memory (CPU mode, guardrail strict")  # tests/e2e/test_memory.py
    as_json = json.loads(ok(lmhost("status", "--json", url=url)))
    assert [i["id"] for i in as_json.pop("memory")["instances"]] == ["tiny-llama", "tiny-llama:2"]
    assert as_json == {"url": url, "running": True,
                       "models": ["tiny-embed", "tiny-llama", "tiny-moe"], "loaded": instances}


def test_load_shows_a_progress_bar_on_a_terminal(demo_server):
    code, screen = in_pty(["load", "tiny-moe"], demo_server.url)
    assert code == 0, screen
    assert ESC in screen  # drawn in place, with colours
    percentages = [int(p) for p in re.findall(r"(\d+)%", screen)]
    assert percentages[-1] == 100
    assert any(0 < p < 100 for p in percentages), percentages  # llama.cpp's real progress
    assert percentages == sorted(percentages)
    assert "Loading tiny-moe" in screen and "Loaded tiny-moe as 'tiny-moe'" in screen
    listed = demo_server.get("/api/v1/models").json()["models"]
    assert [i["id"] for m in listed for i in m["loaded_instances"]] == ["tiny-moe"]


def test_unload_one_then_all(demo_server):
    url = demo_server.url
    for key in ("tiny-llama", "tiny-embed", "tiny-moe"):
        ok(lmhost("load", key, url=url))
    assert ok(lmhost("unload", "tiny-embed", url=url)) == "Unloaded tiny-embed\n"
    assert ok(lmhost("unload", "--all", url=url)) == "Unloaded tiny-llama\nUnloaded tiny-moe\n"
    assert json.loads(ok(lmhost("ps", "--json", url=url))) == []
    assert ok(lmhost("unload", "--all", url=url)) == "No models loaded.\n"


def test_several_variants_need_a_choice(short_tmp, serve):
    from lmhost import synthetic
    folder = short_tmp / "models" / "lmhost" / "multi-GGUF"
    for file_type in ("F32", "F16"):
        synthetic.write_dense_llama(folder / f"multi-{file_type}.gguf", file_type=file_type)
    url = serve(short_tmp / "models", "--workers", "1").url
    assert "F32 (+1 variant)" in ok(lmhost("ls", url=url))

    # piped, nobody to ask: the candidates, and how to choose
    assert_one_line_error(lmhost("load", "multi", url=url),
                          "'multi' has several variants: multi@f16, multi@f32; "
                          "name one, or pass -y to take multi@f32")
    assert_one_line_error(lmhost("load", "mul", url=url),
                          "'mul' is not a model key; it is part of: multi; "
                          "name one, or pass -y to take multi")
    # -y takes the default variant, keeping the key as the identifier
    assert ok(lmhost("load", "multi", "-y", url=url)).startswith("Loaded multi as 'multi' ")
    # on a terminal the CLI asks, and loads the answer
    code, screen = in_pty(["load", "multi"], url, answer=("which one?", "multi@f16"))
    assert code == 0, screen
    assert "[multi@f16/multi@f32]" in screen and "Loaded multi@f16 as 'multi@f16'" in screen
    assert [(i["identifier"], i["model"]) for i in json.loads(ok(lmhost("ps", "--json", url=url)))] \
        == [("multi", "multi"), ("multi@f16", "multi")]


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(short_tmp, demo_server):
    from lmhost import synthetic
    url = demo_server.url
    assert_one_line_error(lmhost("load", "no-such-model", url=url),
                          "no model 'no-such-model' in the models dir")
    ok(lmhost("load", "tiny-llama", url=url))
    assert_one_line_error(lmhost("load", "tiny-llama", "--identifier", "tiny-llama", url=url),
                          "an instance with identifier 'tiny-llama' exists or is loading")
    assert_one_line_error(lmhost("unload", "nope", url=url), "no instance 'nope'")
    assert_one_line_error(lmhost("load", "tiny-llama", "--context-length", "999999", url=url),
                          requests.post(url + "/api/v1/models/load", timeout=30, json={
                              "model": "tiny-llama", "context_length": 999999}
                          ).json()["error"]["message"])

    # a file llama.cpp cannot load fails during the event stream: its `error` event's message
    broken = synthetic.write_dense_llama(short_tmp / "models" / "bad" / "broken-GGUF" / "broken.gguf")
    break_model(broken.path)
    failed = lmhost("load", "broken", url=url)
    assert failed.returncode == 1 and failed.stdout == "" and "Traceback" not in failed.stderr
    assert len(failed.stderr.splitlines()) == 1 and "broken.gguf" in failed.stderr, failed.stderr

    dead = f"http://127.0.0.1:{free_port()}"
    for command in (["ls"], ["ls", "--json"], ["ps"], ["load", "tiny-llama"], ["unload", "x"],
                    ["unload", "--all"], ["status"], ["status", "--json"]):
        assert_one_line_error(lmhost(*command, url=dead),
                              f"cannot reach lmhost at {dead}: connection refused")

    assert_one_line_error(lmhost("ps", "--url", "localhost:1234"),
                          "--url: must be an http:// or https:// URL, got 'localhost:1234'", code=2)
    assert_one_line_error(lmhost("ps", url="ftp://host"),
                          "LMHOST_URL: must be an http:// or https:// URL, got 'ftp://host'", code=2)
    assert_one_line_error(lmhost("ps", url=url + "/api"),
                          f"{url}/api has no /api/api/v1/models: is it lmhost's address?")
    for usage in (["unload"], ["load", "tiny-llama", "--gpu", "2"], ["load", "k", "--ttl", "0"]):
        proc = lmhost(*usage, url=url)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
