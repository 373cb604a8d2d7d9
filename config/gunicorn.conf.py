# gunicorn settings for lmhost, read by `lmhost serve` (gunicorn -c config/gunicorn.conf.py).
# Values come from lmhost's settings (defaults + LMHOST_* variables), validated once here.
#
# gunicorn runs this file at start and again on every HUP (a reload: new HTTP workers, the old
# ones finish what they serve within graceful_timeout). Nothing here may fail on a reload, and
# nothing here touches the supervisor then: only on_starting starts it and only on_exit stops
# it (gunicorn calls neither on HUP), so loaded instances stay loaded across a reload.
import os

from config import check_exposure, load_settings, logs
from workers.statedir import StateDir

_settings = load_settings()
check_exposure(_settings)  # no tokens: loopback only, unless LMHOST_ALLOW_UNAUTHENTICATED=1
_metrics_dir = StateDir(_settings.state_dir).metrics
# Every process of the service records its Prometheus series in this directory (app.metrics):
# set before any of them imports prometheus_client. The HTTP workers and the supervisor
# inherit it from this, the master's, environment.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

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
# A stopping or reloading worker finishes its requests in flight (streams) within this.
graceful_timeout = _settings.graceful_timeout
loglevel = _settings.log_level
# lmhost writes its own request log (app.requestlog: request id, instance, duration of the
# whole stream); gunicorn's access log would say the same with less.
accesslog = None
errorlog = "-"
logconfig_dict = logs.gunicorn_logconfig(_settings.log_format, _settings.log_level)
proc_name = "lmhost"
# gunicorn >= 27 opens a control socket, by default one per user ($HOME/.gunicorn/gunicorn.ctl),
# which two lmhost services of one user would share: keep it in this service's state dir.
control_socket = str(_settings.state_dir / "gunicorn.ctl")


def _check_tokens(log) -> bool:
    """Read the API tokens now, as the workers will; log why they cannot be read."""
    from config import ConfigError, read_tokens
    try:
        read_tokens(_settings)
        return True
    except ConfigError as exc:
        log(f"API tokens: {exc}")
        return False


# The supervisor starts and stops with the service; it, not gunicorn, owns instance processes.
def on_starting(server):
    import shutil
    from workers.client import EngineUnusable, start_supervisor
    if not _check_tokens(server.log.error):
        raise RuntimeError("lmhost cannot start: its API tokens cannot be read (see above)")
    # the series of an earlier run of the service are not this one's
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(mode=0o700, parents=True)
    try:
        started = start_supervisor(_settings, wait=30)
    except EngineUnusable as exc:
        # gunicorn prints a RuntimeError from here as "Error: ..." and exits 1: no service
        # that would crash on every request.
        raise RuntimeError(f"lmhost cannot start: {exc.message}") from None
    if not started:
        server.log.error("the lmhost supervisor did not start; control calls will answer 503")


# HUP: the new workers read the tokens file again. One that cannot be read lets nobody in
# (every request that needs a token gets 401) and fails /readyz until it is fixed and HUP'd.
def on_reload(server):
    if _check_tokens(server.log.error):
        server.log.info("reloading: new HTTP workers; instances stay loaded")


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
    _quit_without_deadlock(worker)
    on_worker_start(worker.wsgi)


# gunicorn's gthread worker answers SIGQUIT and SIGINT (a quick stop: SIGINT or SIGQUIT to the
# master) by shutting its thread pool down from the signal handler. When the signal lands while
# the worker's main thread is inside the pool's submit(), which holds the same lock (or is
# starting a pool thread), the worker hangs, and the master kills it only after graceful_timeout.
# A quick stop is immediate anyway: the worker exits at once (its log lines are written as they
# come; its metrics are in their files).
def _quit_without_deadlock(worker):
    import os
    import signal

    def quit_now(signum, frame):
        worker.alive = False
        worker.cfg.worker_int(worker)
        os._exit(0)

    for sig in (signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, quit_now)


# A worker that exited: its live gauges (open SDK sockets) no longer count.
def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))


def on_exit(server):
    from workers.client import stop_supervisor
    stop_supervisor(_settings, timeout=_settings.unload_timeout + 15)
