"""Which instance served the request being handled on this thread, for the request log.

The HTTP side's request log (``app.requestlog``) clears it when a request comes in and reads it
when the response is done; the engine notes the instance when it knows it: `workers.inference`
when it hands a request to an instance, `workers.client` when a load or an unload answers.
A context variable: each gthread thread (and each asyncio task, if ever) sees its own.
"""

from __future__ import annotations

from contextvars import ContextVar

_instance: ContextVar[str | None] = ContextVar("lmhost_served_by", default=None)


def clear() -> None:
    _instance.set(None)


def note(instance_id: str | None) -> None:
    if instance_id:
        _instance.set(instance_id)


def instance() -> str | None:
    return _instance.get()
