"""API tokens and their scopes: who may call what, on every wire. One table per wire.

- HTTP: `Auth.check_request` runs before every request (a ``before_request`` hook). The scope
  a route needs is `ROUTE_SCOPES[rule]`, by its Flask rule; a route not in the table needs
  admin (a new route is closed until someone decides). A path under ``/api/`` or ``/v1/`` that
  matches no route still needs a valid token (401 before 404). Websocket routes pass: the
  socket authenticates with its first frame.
- SDK websockets: `Auth.sdk_scope` checks that first frame (``app.sdk.session.authenticate``),
  and the session checks each RPC and channel against `SDK_SCOPES` by endpoint name.

Scopes: ``inference`` may list models and run inference, with the JIT load inference implies;
``admin`` may also load and unload explicitly. With no token configured, everyone is admin.

Tokens are compared by SHA-256 digest with `hmac.compare_digest`, against every configured
token (no early exit), so timing tells nothing about a token. No token is ever logged or
quoted in an answer. The tokens are read once per app (each HTTP worker builds its own; a HUP
starts new workers, which read the tokens file again). A tokens file that cannot be read when
a worker starts lets nobody in (fail closed), logs why, and fails `/readyz`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging

from apispec import BasePlugin
from flask import Flask, request

from app.errors import ERRORS, error_response
from config import ADMIN, INFERENCE, ConfigError, Settings, read_tokens

log = logging.getLogger(__name__)

OPEN = "open"  # no token needed

# Flask rule -> the scope it needs. Not listed: admin.
ROUTE_SCOPES = {
    # monitoring, discovery and the contract itself
    "/healthz": OPEN,
    "/readyz": OPEN,
    "/metrics": OPEN,
    "/openapi.json": OPEN,
    "/lmstudio-greeting": OPEN,
    # LM Studio REST
    "/api/v1/models": INFERENCE,
    "/api/v1/models/load": ADMIN,
    "/api/v1/models/unload": ADMIN,
    "/api/v1/chat": INFERENCE,          # LM Studio's native chat: inference, with JIT
    "/api/v1/resources": INFERENCE,     # memory readings: read-only
    # OpenAI-compatible (JIT loads included)
    "/v1/models": INFERENCE,
    "/v1/chat/completions": INFERENCE,
    "/v1/completions": INFERENCE,
    "/v1/embeddings": INFERENCE,
}
PROTECTED_PREFIXES = ("/api/", "/v1/")

# SDK endpoint (RPC or channel, any namespace) -> the scope it needs. Not listed: admin.
# ``getOrLoad`` is the SDK's JIT path (``client.llm.model("key")``: the instance in use, or a
# load with the JIT TTL), as a /v1 request for a model not loaded: inference (which, with
# LMHOST_JIT=0, may not load: app/sdk/models.py). ``loadModel`` (always a new instance) and
# ``unloadModel`` are explicit management, and ``estimateModelUsage`` is REST's
# ``estimate_only``, part of the load route: admin.
SDK_SCOPES = {
    "loadModel": ADMIN,
    "unloadModel": ADMIN,
    "getOrLoad": INFERENCE,
    "listLoaded": INFERENCE,
    "getModelInfo": INFERENCE,
    "getLoadConfig": INFERENCE,
    "getBasePredictionConfig": INFERENCE,
    "getInstanceProcessingState": INFERENCE,
    "predict": INFERENCE,
    "completeRawText": INFERENCE,
    "applyPromptTemplate": INFERENCE,
    "tokenize": INFERENCE,
    "countTokens": INFERENCE,
    "embedString": INFERENCE,
    "listDownloadedModels": INFERENCE,
    "listDownloadedModelVariants": INFERENCE,
    "version": INFERENCE,
}

SECURITY_SCHEME = "bearerAuth"
REALM = 'Bearer realm="lmhost"'


class AuthRefused(Exception):
    """An SDK socket's authentication frame was refused; the message goes to the client."""


def allows(scope: str, needed: str) -> bool:
    return needed == OPEN or scope == ADMIN or scope == needed


def route_scope(rule) -> str:
    """The scope a request needs, from its matched rule (None: no route matched)."""
    if rule is None:
        return INFERENCE if request.path.startswith(PROTECTED_PREFIXES) else OPEN
    if rule.websocket:
        return OPEN  # the socket's first frame decides
    return ROUTE_SCOPES.get(rule.rule, ADMIN)


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def is_loopback_address(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def is_local_client(environ: dict, forwarded_proxies: int) -> bool:
    """Whether a request comes from this machine: from loopback, and not through a proxy whose
    forwarded address we ignore (with ``LMHOST_FORWARDED_PROXIES`` ProxyFix has put the
    client's own address in ``REMOTE_ADDR``)."""
    proxied = "HTTP_X_FORWARDED_FOR" in environ and not forwarded_proxies
    return not proxied and is_loopback_address(environ.get("REMOTE_ADDR"))


class Auth:
    def __init__(self, settings: Settings):
        self.enabled = settings.auth_enabled
        self.trust_loopback = settings.sdk_trust_loopback
        self.problem: str | None = None  # why the tokens could not be read (fail closed)
        try:
            tokens = read_tokens(settings) if self.enabled else {}
        except ConfigError as exc:
            self.problem, tokens = str(exc), {}
            log.error("API tokens unusable, every request that needs a token is refused: %s",
                      self.problem)
        if self.enabled and not tokens and self.problem is None:
            log.warning("API tokens are on but none is configured: every request that needs "
                        "a token is refused")
        self._tokens = [(_digest(token), scope) for token, scope in tokens.items()]

    def scope_of(self, token: str) -> str | None:
        """The scope of `token`, or None when it is not one of ours. Constant time."""
        digest, found = _digest(token), None
        for candidate, scope in self._tokens:
            if hmac.compare_digest(candidate, digest):
                found = scope
        return found

    # -- HTTP ------------------------------------------------------------------------------

    def check_request(self):
        """``before_request``: None to go on, or the 401 / 403 answer."""
        if not self.enabled:
            return None
        needed = route_scope(request.url_rule)
        if needed == OPEN:
            return None
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            return error_response("unauthorized", "this route needs an API token: send "
                                  "'Authorization: Bearer <token>'",
                                  headers={"WWW-Authenticate": REALM})
        scope = self.scope_of(token)
        if scope is None:
            return error_response("unauthorized", "the API token is not valid" + (
                " (the server cannot read its tokens; see its log)" if self.problem else ""),
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        request.environ["lmhost.scope"] = scope
        if not allows(scope, needed):
            return error_response(
                "forbidden", f"this API token's scope is {scope}; {request.method} "
                f"{request.path} needs an {needed} token",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", '
                                             f'scope="{needed}"'})
        return None

    # -- SDK sockets -----------------------------------------------------------------------

    def sdk_scope(self, frame: dict, local: bool) -> str:
        """The scope of an SDK socket whose authentication frame is `frame` (LM Studio's
        ``apiToken`` ``sk-lm-<id>:<secret>`` arrives as identifier and passkey). A socket
        without a valid token is let in as admin only when ``LMHOST_SDK_TRUST_LOOPBACK`` is on
        and it is `local` (`is_local_client`: from loopback, not through a proxy whose
        forwarded address we ignore)."""
        if not self.enabled:
            return ADMIN
        scope = self.scope_of(f"sk-lm-{frame['clientIdentifier']}:{frame['clientPasskey']}")
        if scope is not None:
            return scope
        if self.trust_loopback and local:
            return ADMIN
        raise AuthRefused(
            "lmhost needs an API token: give the TypeScript client its apiToken "
            "(new LMStudioClient({ apiToken }) or LM_API_TOKEN, shaped sk-lm-<8>:<20>). The "
            "Python lmstudio client sends none: it can connect only from the server's own host "
            "when the server sets LMHOST_SDK_TRUST_LOOPBACK=1")


def init_app(app: Flask, settings: Settings) -> Auth:
    auth = Auth(settings)
    app.extensions["lmhost_auth"] = auth
    app.before_request(auth.check_request)
    return auth


def auth_of(app: Flask) -> Auth:
    return app.extensions["lmhost_auth"]


class AuthDocs(BasePlugin):
    """apispec plugin: documents each operation's security from `ROUTE_SCOPES` — the bearer
    scheme and a 401 answer where a token is needed, a 403 where admin is."""

    def init_spec(self, spec):
        spec.components.security_scheme(SECURITY_SCHEME, {
            "type": "http", "scheme": "bearer",
            "description": "An API token (LMHOST_API_TOKENS, LMHOST_API_TOKENS_FILE), needed "
                           "when the server has tokens configured. Scope `inference`: listing "
                           "and inference (with JIT loads); `admin`: also load and unload."})

    def operation_helper(self, path=None, operations=None, **kwargs):
        rule = kwargs.get("rule")
        needed = ROUTE_SCOPES.get(rule.rule if rule is not None else path, ADMIN)
        for operation in (operations or {}).values():
            if needed == OPEN:
                operation["security"] = []
                continue
            operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            for type_ in ("unauthorized", "forbidden") if needed == ADMIN else ("unauthorized",):
                status, when = ERRORS[type_]
                responses[str(status)] = {
                    "description": f"`{type_}`: {when}",
                    "content": {"application/json": {"schema": "Error"}}}
