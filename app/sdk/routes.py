"""Where the SDK protocol meets HTTP: ``GET /lmstudio-greeting`` (the clients' discovery probe)
and one websocket per namespace (``/llm``, ``/embedding``, ``/system``), on the service's own
port. Namespaces the official clients know but lmhost does not serve accept the socket and
answer every call with an error frame, so a client fails at once instead of hanging."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint, current_app, request
from flask_sock import Sock
from marshmallow import Schema, fields

from app.api import Blueprint
from app.auth import auth_of, is_local_client
from app.extensions import engine
from app.sdk.session import Namespace, Session

blp = Blueprint("sdk", __name__, description="LM Studio SDK protocol (discovery probe)")
ws_blp = FlaskBlueprint("sdk_ws", __name__)
sock = Sock()

SERVED = ("llm", "embedding", "system")
# every namespace the official clients can open (the TypeScript client's ports)
NOT_SERVED = ("files", "repository", "plugins", "diagnostics", "runtime", "retrieval")


class GreetingSchema(Schema):
    lmstudio = fields.Boolean(required=True)


@blp.route("/lmstudio-greeting")
@blp.response(200, GreetingSchema)
@blp.errors()
def greeting():
    """What the SDKs probe to find a server: ``{"lmstudio": true}``."""
    return {"lmstudio": True}


@sock.route(f"/<any({', '.join(SERVED + NOT_SERVED)}):namespace>", bp=ws_blp)
def sdk_socket(ws, namespace):
    sdk = current_app.extensions["lmhost_sdk"]
    served = sdk.namespaces.get(namespace) or Namespace(name=namespace, rpc={}, channels={})
    auth, environ = auth_of(current_app), request.environ
    # one answer per socket, for the token check and for the prediction's pace
    local = is_local_client(environ, engine().settings.forwarded_proxies)
    gate = (lambda frame: auth.sdk_scope(frame, local)) if auth.enabled else None
    Session(ws, served, sdk.registry, gate, local_client=local).run()
