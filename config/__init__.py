"""lmhost settings: documented defaults, ``LMHOST_*`` environment overrides, validated once.

`load_settings()` is called at start (by `lmhost serve`, gunicorn's config and `create_app`) and
returns a frozen `Settings`; nothing mutates it afterwards. A bad value, or an ``LMHOST_*``
variable that is not a setting (a typo), fails the start with `ConfigError` naming the key.

Every setting, its variable and default (README "Configuration" lists the same):

| setting      | variable            | default            | meaning                                  |
|--------------|---------------------|--------------------|------------------------------------------|
| host         | LMHOST_HOST         | 127.0.0.1          | address to bind                          |
| port         | LMHOST_PORT         | 1234               | TCP port (LM Studio's)                   |
| models_dir   | LMHOST_MODELS_DIR   | ~/.lmhost/models   | <publisher>/<model>/<file>.gguf          |
| state_dir    | LMHOST_STATE_DIR    | ~/.lmhost/state    | instance table, sockets, caches, logs    |
| cache_dir    | LMHOST_CACHE_DIR    | ~/.cache/lmhost    | per-host caches: the engine probe's verdict and model |
| workers      | LMHOST_WORKERS      | 2                  | gunicorn HTTP worker processes           |
| threads      | LMHOST_THREADS      | 8                  | threads per HTTP worker (gthread)        |
| log_level    | LMHOST_LOG_LEVEL    | info               | debug, info, warning, error              |
| context_length | LMHOST_CONTEXT_LENGTH | 4096           | default n_ctx, capped by the model's     |
| instance_threads | LMHOST_INSTANCE_THREADS | CPU cores    | llama.cpp threads of each instance       |
| queue_size   | LMHOST_QUEUE_SIZE   | 8                  | requests queued per instance beyond the running one |
| unload_timeout | LMHOST_UNLOAD_TIMEOUT | 30             | seconds an unload waits for the request in flight |
| spare_instances | LMHOST_SPARE_INSTANCES | 1            | pre-started instance processes (llama_cpp imported) |
| jit          | LMHOST_JIT          | 1                  | /v1 requests load models that are not loaded |
| jit_ttl      | LMHOST_JIT_TTL      | 3600               | TTL of a JIT-loaded instance unless the request has `ttl` |
| auto_evict   | LMHOST_AUTO_EVICT   | 1                  | a JIT load unloads earlier idle JIT-loaded instances |
| sdk_max_sockets | LMHOST_SDK_MAX_SOCKETS | 256          | LM Studio SDK websockets per HTTP worker (each holds a thread) |
| sdk_discovery | LMHOST_SDK_DISCOVERY | 1                | also listen on the first free SDK discovery port (127.0.0.1) |
| url          | LMHOST_URL          | http://127.0.0.1:1234 | client side: the server the CLI talks to; `serve` ignores it |
| memory_limit | LMHOST_MEMORY_LIMIT | 0 (none)           | bytes (or 512M, 8G, ...) lmhost's instances may use: VRAM on a GPU host, RAM without one |
| guardrail    | LMHOST_GUARDRAIL    | strict             | a load that does not fit: strict (503), evict (idle instances, LRU first), off (load anyway) |
| evict_explicit | LMHOST_EVICT_EXPLICIT | 0              | with guardrail evict, explicitly loaded instances may be evicted too |

`url` is the one client-side setting: the CLI reads it alone with `client_url()`, so a client
command never fails on a server setting, and `lmhost serve` accepts it in the environment of a
user who exported it for the CLI.

HTTP workers run `threads + sdk_max_sockets` threads: an SDK websocket holds a thread for its
whole life, so the SDK gets its own share and plain HTTP always keeps `threads` of them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

PREFIX = "LMHOST_"
LOG_LEVELS = ("debug", "info", "warning", "error")
GUARDRAILS = ("strict", "evict", "off")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ConfigError(ValueError):
    """A setting has a bad value; the message starts with the variable's name."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1234
    models_dir: Path = Path("~/.lmhost/models")
    state_dir: Path = Path("~/.lmhost/state")
    cache_dir: Path = Path("~/.cache/lmhost")
    workers: int = 2
    threads: int = 8
    log_level: str = "info"
    context_length: int = 4096
    instance_threads: int = 0  # 0: one per CPU core available to the process
    queue_size: int = 8
    unload_timeout: int = 30
    spare_instances: int = 1
    jit: bool = True
    jit_ttl: int = 3600
    auto_evict: bool = True
    url: str = "http://127.0.0.1:1234"  # client side (the CLI); the server does not use it
    sdk_max_sockets: int = 256
    sdk_discovery: bool = True
    memory_limit: int = 0  # bytes; 0: no limit beyond what the host has
    guardrail: str = "strict"
    evict_explicit: bool = False

    @property
    def threads_per_instance(self) -> int:
        return self.instance_threads or len(os.sched_getaffinity(0))

    @property
    def worker_threads(self) -> int:
        """gthread threads per HTTP worker: plain HTTP's share plus one per SDK websocket."""
        return self.threads + self.sdk_max_sockets

    @property
    def bind(self) -> str:
        """gunicorn's bind string; IPv6 addresses go in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _int_in(low: int, high: int):
    def parse(raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def _host(raw: str) -> str:
    value = str(raw).strip()
    if not value or any(c.isspace() or c in "/[]" for c in value):
        raise ValueError(f"must be a host name or IP address, got {raw!r}")
    return value


def _directory(raw: str | os.PathLike) -> Path:
    if not str(raw).strip():
        raise ValueError("must be a directory path, got an empty value")
    return Path(os.path.expanduser(str(raw).strip())).absolute()


# Sockets live in the state dir, as <state>/instances/<12 hex>.sock; AF_UNIX paths hold 107 bytes.
MAX_STATE_DIR_BYTES = 107 - len("/instances/") - 12 - len(".sock")


def _state_directory(raw: str | os.PathLike) -> Path:
    path = _directory(raw)
    if len(os.fsencode(path)) > MAX_STATE_DIR_BYTES:
        raise ValueError(f"{path} is too long for Unix sockets (at most {MAX_STATE_DIR_BYTES} bytes)")
    return path


def _flag(raw) -> bool:
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _http_url(raw: str) -> str:
    value = str(raw).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"must be a plain server URL (no credentials, query or fragment), got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"has a bad port, got {raw!r}") from None
    return value


def _byte_size(raw) -> int:
    """Bytes, or a number with a binary unit: 512M, 8G, 1.5GiB (K, M, G, T; B/iB optional)."""
    text = str(raw).strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text[-1:] in ("K", "M", "G", "T") else (text, "")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"must be a number of bytes, optionally with K, M, G or T, got {raw!r}") from None
    if not 0 <= value * _SIZE_UNITS[unit] < 1 << 60:  # NaN fails too
        raise ValueError(f"must be a size from 0 to 1024 T, got {raw!r}")
    return int(value * _SIZE_UNITS[unit])


def _one_of(choices: tuple[str, ...]):
    def parse(raw: str) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value
    return parse


_PARSERS = {
    "host": _host,
    "port": _int_in(1, 65535),
    "models_dir": _directory,
    "state_dir": _state_directory,
    "cache_dir": _directory,
    "workers": _int_in(1, 64),
    "threads": _int_in(1, 256),
    "log_level": _one_of(LOG_LEVELS),
    "context_length": _int_in(1, 1 << 24),
    "instance_threads": _int_in(0, 1024),
    "queue_size": _int_in(0, 4096),
    "unload_timeout": _int_in(0, 3600),
    "spare_instances": _int_in(0, 4),
    "jit": _flag,
    "jit_ttl": _int_in(1, 365 * 24 * 3600),
    "auto_evict": _flag,
    "url": _http_url,
    "sdk_max_sockets": _int_in(0, 4096),
    "sdk_discovery": _flag,
    "memory_limit": _byte_size,
    "guardrail": _one_of(GUARDRAILS),
    "evict_explicit": _flag,
}


def env_name(setting: str) -> str:
    return PREFIX + setting.upper()


def load_settings(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Defaults, then ``LMHOST_*`` variables from `env` (default: os.environ), then `overrides`
    (keyword arguments named like the settings, e.g. from a test or the CLI), each validated."""
    env = os.environ if env is None else env
    known = {env_name(name) for name in _PARSERS}
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a setting (known: {', '.join(sorted(known))})")
    for name in overrides:
        if name not in _PARSERS:
            raise ConfigError(f"{name}: not a setting")

    values = {}
    for field in dataclasses.fields(Settings):
        name = field.name
        if name in overrides and overrides[name] is not None:
            raw, source = overrides[name], name
        elif env_name(name) in env:
            raw, source = env[env_name(name)], env_name(name)
        else:
            raw, source = field.default, name
        try:
            values[name] = _PARSERS[name](raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return Settings(**values)


def to_env(settings: Settings) -> dict[str, str]:
    """The settings as ``LMHOST_*`` variables, to hand them to gunicorn's processes."""
    return {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(Settings)}


def client_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The server the CLI talks to: `url` (its --url flag), else ``LMHOST_URL``, else the default.
    Only this setting is read and validated (a bad value names ``url`` or ``LMHOST_URL``)."""
    env = os.environ if env is None else env
    if url is not None:
        raw, source = url, "url"
    else:
        raw, source = env.get(env_name("url"), Settings.url), env_name("url")
    try:
        return _http_url(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
