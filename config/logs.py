"""How every lmhost process writes its log: text lines, or with ``LMHOST_LOG_FORMAT=json`` one
JSON object a line, on stderr.

A record may carry ``fields`` (``log.info(..., extra={"fields": {...}})``): the request log
(`app.requestlog`) puts method, path, status, duration, request id and instance there. The
text form appends them as ``key=value``; the JSON form makes them keys of the object.

`gunicorn_logconfig` is gunicorn's ``logconfig_dict`` (master and HTTP workers: gunicorn's own
messages and lmhost's alike); `configure` sets up a process gunicorn does not start (the
supervisor).
"""

from __future__ import annotations

import json
import logging
import time

# gunicorn's own format, so that its lines and lmhost's read alike
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
TEXT_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"


def _text_value(value) -> str:
    text = "-" if value is None else str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c == '"' for c in text)) else text


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = TEXT_DATE_FORMAT, **kwargs):
        super().__init__(fmt, datefmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, pid, message, the record's
    ``fields``, and the exception's traceback as one string when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


def gunicorn_logconfig(log_format: str, log_level: str) -> dict:
    """gunicorn's ``logconfig_dict``: one stderr handler in `log_format` for the root logger
    and gunicorn's loggers, so that lmhost's loggers (``app``, ``workers``, ``lmhost.access``)
    reach the log too (without a handler, Python drops their info lines)."""
    cls = FORMATTERS[log_format]
    level = log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"lmhost": {"()": f"{cls.__module__}.{cls.__qualname__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "lmhost",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            # lmhost writes its own request log (app.requestlog)
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def configure(log_format: str, log_level: str, stream, text_format: str = TEXT_FORMAT) -> None:
    """A process of its own (the supervisor): the root logger writes `log_format` to `stream`
    (`text_format` for text)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(text_format, None) if log_format == "text"
                         else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level.upper())
