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
| stream_handoff | LMHOST_STREAM_HANDOFF | 1                | a streamed text's instance writes its tokens on the client's connection itself |
| unload_timeout | LMHOST_UNLOAD_TIMEOUT | 30             | seconds an unload waits for the request in flight |
| spare_instances | LMHOST_SPARE_INSTANCES | 1            | pre-started instance processes (llama_cpp imported) |
| huge_pages   | LMHOST_HUGE_PAGES   | 1                  | on a host without GPUs, instances read the weights into transparent huge pages instead of mapping the file |
| jit          | LMHOST_JIT          | 1                  | /v1 requests load models that are not loaded |
| jit_ttl      | LMHOST_JIT_TTL      | 3600               | TTL of a JIT-loaded instance unless the request has `ttl` |
| auto_evict   | LMHOST_AUTO_EVICT   | 1                  | a JIT load unloads earlier idle JIT-loaded instances |
| sdk_max_sockets | LMHOST_SDK_MAX_SOCKETS | 256          | LM Studio SDK websockets per HTTP worker (each holds a thread) |
| sdk_discovery | LMHOST_SDK_DISCOVERY | 1                | also listen on the first free SDK discovery port (127.0.0.1) |
| sdk_fragment_ms | LMHOST_SDK_FRAGMENT_MS | 40           | an SDK prediction fragment for a client elsewhere gathers the text that comes within this many ms of the last one (0: one fragment a token); 0 to 1000 |
| sdk_local_fragment_ms | LMHOST_SDK_LOCAL_FRAGMENT_MS | 100  | the same for an SDK client on this machine, which shares the model's cores (0: one fragment a token); 0 to 1000 |
| sdk_first_pause_ms | LMHOST_SDK_FIRST_PAUSE_MS | 3      | for an SDK client on this machine, a prediction's second token waits this many ms after its first fragment went out, leaving it the cores (0: no wait); 0 to 50 |
| api_tokens   | LMHOST_API_TOKENS   | (none)             | comma-separated `token` or `token:scope` (admin, inference) |
| api_tokens_file | LMHOST_API_TOKENS_FILE | (none)         | one `token[:scope]` a line, `#` comments; reread on HUP |
| allow_unauthenticated | LMHOST_ALLOW_UNAUTHENTICATED | 0 | serve a non-loopback host without tokens |
| sdk_trust_loopback | LMHOST_SDK_TRUST_LOOPBACK | 0       | SDK sockets from loopback need no token (admin) |
| forwarded_proxies | LMHOST_FORWARDED_PROXIES | 0         | proxies in front whose X-Forwarded-* to honour |
| log_format   | LMHOST_LOG_FORMAT   | text               | text or json (one object a line)         |
| graceful_timeout | LMHOST_GRACEFUL_TIMEOUT | 60         | seconds a stopping or reloading HTTP worker lets requests in flight finish |
| max_body     | LMHOST_MAX_BODY     | 16M                | largest HTTP request body in bytes (413 beyond) and SDK websocket message in characters (the socket closes); 64K to 1G |
| url          | LMHOST_URL          | http://127.0.0.1:1234 | client side: the server the CLI talks to; `serve` ignores it |
| api_token    | LMHOST_API_TOKEN    | (none)             | client side: the token the CLI sends     |
| memory_limit | LMHOST_MEMORY_LIMIT | 0 (none)           | bytes (or 512M, 8G, ...) lmhost's instances may use: VRAM on a GPU host, RAM without one |
| guardrail    | LMHOST_GUARDRAIL    | strict             | a load that does not fit: strict (503), evict (idle instances, LRU first), off (load anyway) |
| evict_explicit | LMHOST_EVICT_EXPLICIT | 0              | with guardrail evict, explicitly loaded instances may be evicted too |

`url` and `api_token` are the client-side settings: the CLI reads them alone with `client_url()`
and `client_token()`, so a client command never fails on a server setting, and `lmhost serve`
accepts them in the environment of a user who exported them for the CLI.

API tokens: an entry is a token, or a token and a trailing ``:admin`` or ``:inference`` (any
other colon belongs to the token, so LM Studio's ``sk-lm-<id>:<secret>`` is one token); the
scope defaults to admin. `read_tokens` reads both sources; no message ever quotes a token.
Without tokens, `check_exposure` refuses to serve a non-loopback host unless told to.

HTTP workers run `threads + sdk_max_sockets` threads: an SDK websocket holds a thread for its
whole life, so the SDK gets its own share and plain HTTP always keeps `threads` of them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

PREFIX = "LMHOST_"
LOG_LEVELS = ("debug", "info", "warning", "error")
GUARDRAILS = ("strict", "evict", "off")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
LOG_FORMATS = ("text", "json")
ADMIN, INFERENCE = "admin", "inference"
SCOPES = (ADMIN, INFERENCE)  # admin may do all that inference may, and load and unload


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
    stream_handoff: bool = True
    unload_timeout: int = 30
    spare_instances: int = 1
    huge_pages: bool = True
    jit: bool = True
    jit_ttl: int = 3600
    auto_evict: bool = True
    url: str = "http://127.0.0.1:1234"  # client side (the CLI); the server does not use it
    sdk_max_sockets: int = 256
    sdk_discovery: bool = True
    sdk_fragment_ms: int = 40
    sdk_local_fragment_ms: int = 100
    sdk_first_pause_ms: int = 3
    memory_limit: int = 0  # bytes; 0: no limit beyond what the host has
    guardrail: str = "strict"
    evict_explicit: bool = False
    # secrets stay out of repr(): a Settings in a log line or a traceback shows no token
    api_tokens: str = field(default="", repr=False)
    api_tokens_file: Path | None = None
    allow_unauthenticated: bool = False
    sdk_trust_loopback: bool = False
    forwarded_proxies: int = 0
    log_format: str = "text"
    graceful_timeout: int = 60
    max_body: int = 16 << 20  # bytes; nginx.conf's client_max_body_size is the same
    api_token: str = field(default="", repr=False)  # client side (the CLI)

    @property
    def threads_per_instance(self) -> int:
        return self.instance_threads or len(os.sched_getaffinity(0))

    @property
    def worker_threads(self) -> int:
        """gthread threads per HTTP worker: plain HTTP's share plus one per SDK websocket."""
        return self.threads + self.sdk_max_sockets

    @property
    def auth_enabled(self) -> bool:
        """Tokens are configured (a tokens file counts even while it holds none: nobody is
        let in then, rather than everybody)."""
        return bool(self.api_tokens) or self.api_tokens_file is not None

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


def _body_size(raw) -> int:
    """A body limit: `_byte_size`, from 64 KiB (a chat of a few pages) to 1 GiB (each body is
    held in an HTTP worker's memory)."""
    value = _byte_size(raw)
    if not 1 << 16 <= value <= 1 << 30:
        raise ValueError(f"must be from 64K to 1G, got {raw!r}")
    return value


def _optional_file(raw) -> Path | None:
    if raw is None or not str(raw).strip():
        return None
    return Path(os.path.expanduser(str(raw).strip())).absolute()


def _one_of(*choices: str):
    def parse(raw: str) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value
    return parse


def parse_tokens(entries) -> dict[str, str]:
    """``token -> scope`` from `entries`, (where, text) pairs: ``where`` names the entry in a
    message ("entry 2", "line 7"), since its text holds a secret and is never quoted."""
    tokens: dict[str, str] = {}
    for where, entry in entries:
        token, scope = entry.strip(), ADMIN
        head, colon, tail = token.rpartition(":")
        if colon and tail in SCOPES:
            token, scope = head, tail
        if not token:
            raise ValueError(f"{where} has no token")
        if any(c.isspace() or c == "," or not c.isprintable() for c in token):
            raise ValueError(f"{where}: a token is printable characters without spaces or "
                             "commas")
        if tokens.get(token, scope) != scope:
            raise ValueError(f"{where} repeats an earlier token with another scope")
        tokens[token] = scope
    return tokens


def _token_entries(text: str) -> list[tuple[str, str]]:
    """LMHOST_API_TOKENS' entries; empty ones (a trailing comma) are skipped."""
    return [(f"entry {n}", e) for n, e in enumerate(text.split(","), 1) if e.strip()]


def _tokens(raw: str) -> str:
    value = str(raw).strip()
    parse_tokens(_token_entries(value))
    return value


def _client_token(raw: str) -> str:
    value = str(raw).strip()
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be one token: printable characters without spaces")
    return value


_PARSERS = {
    "host": _host,
    "port": _int_in(1, 65535),
    "models_dir": _directory,
    "state_dir": _state_directory,
    "cache_dir": _directory,
    "workers": _int_in(1, 64),
    "threads": _int_in(1, 256),
    "log_level": _one_of(*LOG_LEVELS),
    "context_length": _int_in(1, 1 << 24),
    "instance_threads": _int_in(0, 1024),
    "queue_size": _int_in(0, 4096),
    "stream_handoff": _flag,
    "unload_timeout": _int_in(0, 3600),
    "spare_instances": _int_in(0, 4),
    "huge_pages": _flag,
    "jit": _flag,
    "jit_ttl": _int_in(1, 365 * 24 * 3600),
    "auto_evict": _flag,
    "url": _http_url,
    "sdk_max_sockets": _int_in(0, 4096),
    "sdk_discovery": _flag,
    "sdk_fragment_ms": _int_in(0, 1000),
    "sdk_local_fragment_ms": _int_in(0, 1000),
    "sdk_first_pause_ms": _int_in(0, 50),
    "memory_limit": _byte_size,
    "guardrail": _one_of(*GUARDRAILS),
    "evict_explicit": _flag,
    "api_tokens": _tokens,
    "api_tokens_file": _optional_file,
    "allow_unauthenticated": _flag,
    "sdk_trust_loopback": _flag,
    "forwarded_proxies": _int_in(0, 16),
    "log_format": _one_of(*LOG_FORMATS),
    "graceful_timeout": _int_in(1, 24 * 3600),
    "max_body": _body_size,
    "api_token": _client_token,
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
    for setting in dataclasses.fields(Settings):
        name = setting.name
        if name in overrides and overrides[name] is not None:
            raw, source = overrides[name], name
        elif env_name(name) in env:
            raw, source = env[env_name(name)], env_name(name)
        else:
            raw, source = setting.default, name
        try:
            values[name] = _PARSERS[name](raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return Settings(**values)


def to_env(settings: Settings) -> dict[str, str]:
    """The settings as ``LMHOST_*`` variables, to hand them to gunicorn's processes."""
    def text(value) -> str:
        return "" if value is None else str(value)
    return {env_name(f.name): text(getattr(settings, f.name)) for f in dataclasses.fields(Settings)}


SECRETS = ("api_tokens", "api_token")


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the secret settings: for processes that need no token (the supervisor and
    the instances), so that no token sits in their environment."""
    secret = {env_name(name) for name in SECRETS}
    return {k: v for k, v in env.items() if k not in secret}


def read_tokens(settings: Settings) -> dict[str, str]:
    """Every API token, ``token -> scope``: ``LMHOST_API_TOKENS``, then the tokens file (one
    entry a line; blank lines and ``#`` comments skipped), read now. Raises `ConfigError`
    naming the variable (and line), never quoting a token."""
    entries = [(f"{env_name('api_tokens')} {where}", text)
               for where, text in _token_entries(settings.api_tokens)]
    path = settings.api_tokens_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise ConfigError(f"{env_name('api_tokens_file')}: cannot read {path}: {reason}") from None
        entries += [(f"{env_name('api_tokens_file')}: {path} line {n}", line)
                    for n, line in enumerate(text.splitlines(), 1)
                    if line.strip() and not line.strip().startswith("#")]
    try:
        return parse_tokens(entries)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a non-loopback address with no API token, unless told that this is
    intended (`ConfigError` naming ``host``)."""
    if settings.auth_enabled or is_loopback(settings.host) or settings.allow_unauthenticated:
        return
    raise ConfigError(
        f"host: {settings.host} is not a loopback address and no API token is configured, so "
        "anyone who reaches it could load and unload models: set LMHOST_API_TOKENS or "
        "LMHOST_API_TOKENS_FILE, or LMHOST_ALLOW_UNAUTHENTICATED=1 if this is intended")


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


def client_token(env: Mapping[str, str] | None = None) -> str:
    """The API token the CLI sends (``LMHOST_API_TOKEN``; "" for none)."""
    env = os.environ if env is None else env
    try:
        return _client_token(env.get(env_name("api_token"), ""))
    except ValueError as exc:
        raise ConfigError(f"{env_name('api_token')}: {exc}") from None
