"""A real nginx running config/nginx.conf in front of a test's lmhost, on loopback, with TLS
(a self-signed certificate for 127.0.0.1 made with openssl).

`site_config` is config/nginx.conf with exactly these substitutions (README "Deployment"
lists them), each of which must match once: the upstream's port, the listen address, the
certificate and key, the access log. `start_nginx` wraps it in a minimal main configuration
(pid, error log and temp paths in the test's folder, ``daemon off`` so that the test owns the
process) and waits until it answers.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for

SITE = Path(__file__).resolve().parents[2] / "config" / "nginx.conf"

MAIN = """daemon off;
worker_processes 1;
{user}pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    access_log off;
    include {work}/lmhost.conf;
}}
"""


def require(program: str) -> str:
    path = shutil.which(program) or (shutil.which(program, path="/usr/sbin:/sbin"))
    if path is None:
        pytest.fail(f"{program} is not installed (.ci/run installs it with apt-get)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(work: Path) -> tuple[Path, Path]:
    cert, key = work / "lmhost.pem", work / "lmhost.key"
    subprocess.run([require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def site_config(upstream_port: int, port: int, cert: Path, key: Path, access_log: Path) -> str:
    text = SITE.read_text()
    for old, new in (("server 127.0.0.1:1234;", f"server 127.0.0.1:{upstream_port};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("/etc/ssl/certs/lmhost.pem", str(cert)),
                     ("/etc/ssl/private/lmhost.key", str(key)),
                     ("/var/log/nginx/lmhost.access.log", str(access_log))):
        assert text.count(old) == 1, f"config/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    proc: subprocess.Popen
    url: str            # https://127.0.0.1:<port>
    ws_url: str         # wss://127.0.0.1:<port>
    cert: Path
    work: Path

    def get(self, path, **kwargs):
        return requests.get(self.url + path, verify=str(self.cert), timeout=30, **kwargs)

    def post(self, path, **kwargs):
        return requests.post(self.url + path, verify=str(self.cert), timeout=60, **kwargs)

    def logs(self) -> list[Path]:
        return [self.work / "error.log", self.work / "access.log"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_nginx(work: Path, upstream_port: int) -> Nginx:
    work.mkdir(parents=True, exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)
    cert, key = make_certificate(work)
    port = free_port()
    (work / "lmhost.conf").write_text(site_config(upstream_port, port, cert, key,
                                                  work / "access.log"))
    # as root, nginx's workers would switch to "nobody", who cannot read the test's folder
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    (work / "nginx.conf").write_text(MAIN.format(work=work, user=user))
    proc = subprocess.Popen([require("nginx"), "-p", str(work), "-c", str(work / "nginx.conf"),
                             "-e", str(work / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    nginx = Nginx(proc, f"https://127.0.0.1:{port}", f"wss://127.0.0.1:{port}", cert, work)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited {proc.returncode}:\n"
                                 f"{(work / 'error.log').read_text()}")
        try:
            return nginx.get("/healthz").status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=20, what="nginx to answer /healthz")
    except BaseException:
        nginx.stop()
        raise
    return nginx
