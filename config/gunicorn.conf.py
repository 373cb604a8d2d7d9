# gunicorn settings for lmhost, read by `lmhost serve` (gunicorn -c config/gunicorn.conf.py).
# Values come from lmhost's settings (defaults + LMHOST_* variables), validated once here.
from config import load_settings

_settings = load_settings()

wsgi_app = "wsgi:app"
bind = [_settings.bind]
workers = _settings.workers
# gthread: a slow request (a streamed generation, a load waiting for progress) holds one thread,
# not a whole worker process.
worker_class = "gthread"
threads = _settings.threads
timeout = 120
graceful_timeout = 15
loglevel = _settings.log_level
accesslog = "-"
errorlog = "-"
proc_name = "lmhost"
# gunicorn >= 27 opens a control socket, by default one per user ($HOME/.gunicorn/gunicorn.ctl),
# which two lmhost services of one user would share: keep it in this service's state dir.
control_socket = str(_settings.state_dir / "gunicorn.ctl")
