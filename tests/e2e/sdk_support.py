"""Helpers of the SDK end-to-end tests: the models the seeds name, the seeds' snippets verbatim,
the official clients run as a user runs them (a Python script, a node script), and a service
alone in a network namespace (for discovery, whose ports the host may have given to others).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import LMHOST, Server, clean_env
from tests.helpers import our_processes, wait_for
from lmhost import synthetic

SEED_KEY = "llama-3.2-1b-instruct"
NODE_DIR = Path(__file__).resolve().parent / "node"


def write_sdk_models(models_dir: Path) -> Path:
    """The model the seeds name (a tiny synthetic llama in LM Studio's layout, so its key is
    ``llama-3.2-1b-instruct``) and the demo models (tiny-llama, tiny-moe, tiny-embed)."""
    synthetic.write_dense_llama(
        models_dir / "lmstudio-community" / "Llama-3.2-1B-Instruct-GGUF"
        / "Llama-3.2-1B-Instruct-F16.gguf", name="Llama 3.2 1B Instruct")
    synthetic.write_demo_models(models_dir)
    return models_dir


def client_env() -> dict:
    """A client's environment: no LMHOST_* settings, no LM Studio token from the developer."""
    env = clean_env()
    env.pop("LM_API_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def require_node() -> str:
    """node and the npm test dependencies; missing ones fail the test (never skip it)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs nodejs and npm with apt-get)")
    if not (NODE_DIR / "node_modules" / "@lmstudio" / "sdk" / "package.json").is_file():
        pytest.fail(f"the npm test dependencies are not installed in {NODE_DIR}: `make test` "
                    "installs them (npm ci)")
    return node


# -- seed 002 (Python), verbatim ---------------------------------------------------------------

PY_ANY = '''import lmstudio as lm

# It's that simple!
llm = lm.llm()
'''
PY_ANY_SCOPED = '''import lmstudio

with lmstudio.Client() as client:
    # It's that simple!
    llm = client.llm.model()
'''
PY_KEY = '''import lmstudio as lm

llama = lm.llm("llama-3.2-1b-instruct")
'''
PY_KEY_SCOPED = '''import lmstudio

with lmstudio.Client() as client:
    llama = client.llm.model("llama-3.2-1b-instruct")
'''
PY_TWO = '''import lmstudio

with lmstudio.Client() as client:
    llama = client.llm.load_new_instance("llama-3.2-1b-instruct")
    another_llama = client.llm.load_new_instance("llama-3.2-1b-instruct", "second-llama")
'''
PY_UNLOAD = '''import lmstudio as lm

llm = lm.llm()
llm.unload()
'''
PY_UNLOAD_SCOPED = '''import lmstudio

with lmstudio.Client() as client:
    llm = client.llm.model()
    llm.unload()
'''
PY_UNLOAD_BY_ID = '''import lmstudio

with lmstudio.Client() as client:
    client.llm.unload("llama-3.2-1b-instruct")
    client.llm.unload("second-llama")
'''
PY_TTL = '''import lmstudio as lm

llama = lm.llm("llama-3.2-1b-instruct", ttl=3600)
'''
PY_TTL_SCOPED = '''import lmstudio

with lmstudio.Client() as client:
    llama = client.llm.model("llama-3.2-1b-instruct", ttl=3600)
    another_llama = client.llm.load_new_instance("llama-3.2-1b-instruct", ttl=7200)
'''
# As printed: `on_progress: lambda ...` is not Python; the client's keyword is on_load_progress.
PY_PROGRESS_AS_PRINTED = '''import lmstudio

with lmstudio.Client() as client:
    llama = client.llm.load_new_instance(
        "llama-3.2-1b-instruct",
        on_progress: lambda progress: print(f"{progress*100}% loaded"),
    )
'''
PY_PROGRESS = PY_PROGRESS_AS_PRINTED.replace("on_progress: lambda", "on_load_progress=lambda")

# Prints which instance each handle the snippet made refers to.
PY_TRAILER = '''
for _name in ("llm", "llama", "another_llama"):
    if _name in globals():
        print(_name, globals()[_name].identifier)
'''

# -- seed 003 (TypeScript), verbatim -----------------------------------------------------------

TS_MODEL = '''import { LMStudioClient } from "@lmstudio/sdk";
const client = new LMStudioClient();

const llama = await client.llm.model("llama-3.2-1b-instruct");
'''
# As printed: @lmstudio/sdk 2.x takes the identifier in an options object.
TS_LOAD_AS_PRINTED = '''import { LMStudioClient } from "@lmstudio/sdk";
const client = new LMStudioClient();

const llama = await client.llm.load("llama-3.2-1b-instruct");
const another_llama = await client.llm.load("llama-3.2-1b-instruct", "second-llama");
'''
TS_LOAD = TS_LOAD_AS_PRINTED.replace('"second-llama")', '{ identifier: "second-llama" })')
TS_UNLOAD = '''import { LMStudioClient } from "@lmstudio/sdk";

const client = new LMStudioClient();

const llm = await client.llm.model();
await llm.unload()
'''
TS_TTL = '''import { LMStudioClient } from "@lmstudio/sdk";

const client = new LMStudioClient();

// TODO ttl in typescript?
const llama = await client.llm.model("llama-3.2-1b-instruct");
const another_llama = await client.llm.load("llama-3.2-1b-instruct");
'''


def ts_trailer(code: str) -> str:
    return "".join(f'\nconsole.log("{name}", {name}.identifier);' for name in
                   ("llm", "llama", "another_llama") if f"const {name} =" in code)


class Runner:
    """Runs snippets against one service as a user would: each in a fresh process. With
    `host`, snippets are given that host explicitly; without, they run verbatim (discovery).
    `prefix` enters the process into the service's network namespace."""

    def __init__(self, url: str, work: Path, host: str | None, prefix: tuple = ()):
        self.url, self.work, self.host, self.prefix = url, work, host, tuple(prefix)
        self._count = 0

    def _run(self, argv, timeout, check) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.prefix, *argv], capture_output=True, text=True,
                              timeout=timeout, env=client_env(), cwd=self.work)
        if check:
            assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def python(self, snippet: str, check=True, timeout=60) -> subprocess.CompletedProcess:
        code = snippet
        if self.host is not None:
            code = code.replace("lmstudio.Client()", f"lmstudio.Client({self.host!r})")
            code = code.replace("import lmstudio as lm\n", "import lmstudio as lm\n"
                                f"lm.configure_default_client({self.host!r})\n", 1)
        return self._run([sys.executable, "-c", code + PY_TRAILER], timeout, check)

    def node(self, snippet: str, check=True, timeout=60) -> subprocess.CompletedProcess:
        node = require_node()
        code = snippet
        if self.host is not None:
            code = code.replace("new LMStudioClient()",
                                f'new LMStudioClient({{ baseUrl: "ws://{self.host}" }})')
        self._count += 1
        script = self.work / f"snippet-{self._count}.mjs"
        script.write_text(code + ts_trailer(code) + "\n")
        modules = self.work / "node_modules"  # ES modules resolve packages next to the script
        if not modules.exists():
            modules.symlink_to(NODE_DIR / "node_modules")
        return self._run([node, str(script)], timeout, check)

    def rest(self, method: str, path: str, body: dict | None = None) -> dict:
        if not self.prefix:
            return requests.request(method, self.url + path, json=body, timeout=30).json()
        code = ("import json, sys, requests; r = requests.request(sys.argv[1], sys.argv[2], "
                "json=json.loads(sys.argv[3]), timeout=30); print(r.text)")
        out = self._run([sys.executable, "-c", code, method, self.url + path, json.dumps(body)],
                        60, True)
        return json.loads(out.stdout)

    def instances(self) -> dict[str, dict]:
        """The loaded instances as ``GET /api/v1/models`` lists them, by id."""
        models = self.rest("GET", "/api/v1/models")["models"]
        return {i["id"]: i for m in models for i in m["loaded_instances"]}

    def reset(self) -> None:
        for instance_id in self.instances():
            self.rest("POST", "/api/v1/models/unload", {"instance_id": instance_id})
        assert self.instances() == {}


def progress_lines(proc: subprocess.CompletedProcess) -> list[float]:
    return [float(line.split("%")[0]) for line in proc.stdout.splitlines() if line.endswith("% loaded")]


def run_seed_002(run: Runner) -> None:
    """Every snippet of seed 002 (Python), in an order that gives each what it needs, with the
    instances checked through the REST listing after each."""
    run.reset()
    assert handles(run.python(PY_KEY)) == {"llama": SEED_KEY}          # get-or-load: loads
    assert handles(run.python(PY_KEY_SCOPED)) == {"llama": SEED_KEY}   # ... and then reuses
    assert list(run.instances()) == [SEED_KEY]
    for snippet in (PY_ANY, PY_ANY_SCOPED):                              # any loaded model
        assert handles(run.python(snippet)) == {"llm": SEED_KEY}
    run.python(PY_UNLOAD)                                                # unload via a handle
    assert run.instances() == {}
    run.rest("POST", "/api/v1/models/load", {"model": SEED_KEY})
    run.python(PY_UNLOAD_SCOPED)
    assert run.instances() == {}
    assert handles(run.python(PY_TWO)) == {"llama": SEED_KEY, "another_llama": "second-llama"}
    assert set(run.instances()) == {SEED_KEY, "second-llama"}
    run.python(PY_UNLOAD_BY_ID)                                          # unload by identifier
    assert run.instances() == {}
    run.python(PY_TTL)
    assert run.instances()[SEED_KEY]["ttl_seconds"] == 3600
    ttl = handles(run.python(PY_TTL_SCOPED))
    assert ttl == {"llama": SEED_KEY, "another_llama": f"{SEED_KEY}:2"}
    instances = run.instances()
    assert instances[SEED_KEY]["ttl_seconds"] == 3600 and instances[f"{SEED_KEY}:2"]["ttl_seconds"] == 7200
    run.reset()
    as_printed = run.python(PY_PROGRESS_AS_PRINTED, check=False)         # not Python as printed
    assert as_printed.returncode != 0 and "SyntaxError" in as_printed.stderr
    progress = progress_lines(run.python(PY_PROGRESS))                   # the working form
    assert progress[0] == 0.0 and progress[-1] == 100.0 and len(progress) >= 3
    assert progress == sorted(set(progress))
    run.reset()


def run_seed_003(run: Runner) -> None:
    """Every snippet of seed 003 (TypeScript), checked the same way."""
    run.reset()
    assert handles(run.node(TS_MODEL)) == {"llama": SEED_KEY}
    assert handles(run.node(TS_MODEL)) == {"llama": SEED_KEY}
    assert list(run.instances()) == [SEED_KEY]
    assert handles(run.node(TS_UNLOAD)) == {"llm": SEED_KEY}
    assert run.instances() == {}
    as_printed = run.node(TS_LOAD_AS_PRINTED, check=False)  # 2.x wants { identifier }
    assert as_printed.returncode != 0 and "opts" in as_printed.stderr
    run.reset()
    assert handles(run.node(TS_LOAD)) == {"llama": SEED_KEY, "another_llama": "second-llama"}
    assert set(run.instances()) == {SEED_KEY, "second-llama"}
    run.reset()
    assert handles(run.node(TS_TTL)) == {"llama": SEED_KEY, "another_llama": f"{SEED_KEY}:2"}
    instances = run.instances()
    assert instances[SEED_KEY]["ttl_seconds"] == 3600          # get-or-load: LMHOST_JIT_TTL
    assert "ttl_seconds" not in instances[f"{SEED_KEY}:2"]     # load(): no TTL unless given
    run.node(TS_UNLOAD)
    assert len(run.instances()) == 1
    run.reset()


def handles(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """``name -> instance identifier`` of the handles a snippet made (its trailer's lines)."""
    found = {}
    for line in proc.stdout.splitlines():
        name, _, identifier = line.partition(" ")
        if name in ("llm", "llama", "another_llama"):
            found[name] = identifier
    return found


# -- a service alone in a network namespace ------------------------------------------------------

# Keeps a new network namespace alive: brings its loopback up, answers HTTP 501 on the ports
# it is given (another service on a discovery port), prints "ready", exits when stdin closes.
_ANCHOR = r'''
import fcntl, http.server, socket, struct, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
for port in map(int, sys.argv[1:]):
    other = http.server.ThreadingHTTPServer(("127.0.0.1", port), Quiet)
    threading.Thread(target=other.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
'''

_WAIT_HEALTHY = r'''
import sys, time, requests
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        if requests.get(sys.argv[1] + "/healthz", timeout=2).status_code == 200:
            sys.exit(0)
    except requests.ConnectionError:
        pass
    time.sleep(0.1)
sys.exit(1)
'''


class Namespace:
    """A network namespace of our own (``unshare --net``), with `occupied` discovery ports
    taken by another HTTP server. Processes join it with `prefix`."""

    def __init__(self, occupied=()):
        self.anchor = subprocess.Popen(
            ["unshare", "--net", "--", sys.executable, "-c", _ANCHOR, *map(str, occupied)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        ready = self.anchor.stdout.readline().strip()
        assert ready == "ready", "could not make a network namespace (unshare --net)"
        self.prefix = ("nsenter", f"--net=/proc/{self.anchor.pid}/ns/net", "--")

    def serve(self, work: Path, models_dir: Path, port: int = 1234, **env) -> Server:
        """``lmhost serve`` inside the namespace, on `port`, discovery on unless `env` says."""
        state_dir = work / f"state-ns-{port}"
        log = work / f"server-ns-{port}.log"
        environment = clean_env(**{"LMHOST_SDK_DISCOVERY": "1", "LMHOST_INSTANCE_THREADS": "1", **env})
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*self.prefix, LMHOST, "serve", "--port", str(port), "--models-dir",
                 str(models_dir), "--state-dir", str(state_dir), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
        server = Server(proc, f"http://127.0.0.1:{port}", log, state_dir)
        healthy = subprocess.run([*self.prefix, sys.executable, "-c", _WAIT_HEALTHY, server.url],
                                 timeout=90, env=client_env())
        assert healthy.returncode == 0, f"lmhost serve did not come up:\n{log.read_text()}"
        return server

    def close(self) -> None:
        self.anchor.stdin.close()
        try:
            self.anchor.wait(10)
        except subprocess.TimeoutExpired:
            self.anchor.kill()
            self.anchor.wait(5)


def stop(server: Server) -> None:
    """Stop a server and make sure nothing of it is left (the `serve` fixture's cleanup)."""
    if server.proc.poll() is None:
        server.stop()
    if server.process_group_alive():
        os.killpg(server.proc.pid, signal.SIGKILL)
    try:
        wait_for(lambda: not our_processes(server.state_dir), timeout=20,
                 what="the service's processes to exit")
    finally:
        for pid in our_processes(server.state_dir):  # never leak into later tests
            os.kill(pid, signal.SIGKILL)
