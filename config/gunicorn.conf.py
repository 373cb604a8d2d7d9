# gunicorn settings for lmhost, read by `lmhost serve` (gunicorn -c config/gunicorn.conf.py).
# Values come from lmhost's settings (defaults + LMHOST_* variables), validated once here.
from config import load_settings

_settings = load_settings()

wsgi_app = "wsgi:app"
bind = [_settings.bind]
workers = _settings.workers
# gthread: a slow request (a streamed generation, a load waiting for progress) holds one thread,
# not a whole worker process. An SDK websocket holds one for its whole life: those get their own
# LMHOST_SDK_MAX_SOCKETS threads (a socket over that is refused with an error frame), so that
# LMHOST_THREADS threads always remain for plain HTTP.
worker_class = "gthread"
threads = _settings.worker_threads
timeout = 120
graceful_timeout = 15
loglevel = _settings.log_level
accesslog = "-"
errorlog = "-"
proc_name = "lmhost"
# gunicorn >= 27 opens a control socket, by default one per user ($HOME/.gunicorn/gunicorn.ctl),
# which two lmhost services of one user would share: keep it in this service's state dir.
control_socket = str(_settings.state_dir / "gunicorn.ctl")


# The supervisor starts and stops with the service; it, not gunicorn, owns instance processes.
def on_starting(server):
    from workers.client import EngineUnusable, start_supervisor
    try:
        started = start_supervisor(_settings, wait=30)
    except EngineUnusable as exc:
        # gunicorn prints a RuntimeError from here as "Error: ..." and exits 1: no service
        # that would crash on every request.
        raise RuntimeError(f"lmhost cannot start: {exc.message}") from None
    if not started:
        server.log.error("the lmhost supervisor did not start; control calls will answer 503")


# SDK clients given no host probe fixed ports on 127.0.0.1: listen on the first free one too.
# Added here, once the service's own listeners exist and before any worker is forked.
def when_ready(server):
    if not _settings.sdk_discovery:
        return
    from gunicorn.sock import TCPSocket
    from app.sdk.discovery import announce, open_discovery_listener
    port, listener = open_discovery_listener(
        lambda address: TCPSocket(address, server.cfg, server.log), _settings.port, _settings.host)
    if listener is not None:
        server.LISTENERS.append(listener)
    announce(port, listener, server.log.info, server.log.warning)


# A stopping worker closes its SDK websockets at once (they would hold the graceful stop).
def post_worker_init(worker):
    from app.sdk import on_worker_start
    on_worker_start(worker.wsgi)


def on_exit(server):
    from workers.client import stop_supervisor
    stop_supervisor(_settings, timeout=_settings.unload_timeout + 15)
