"""The supervisor's Prometheus series: loads, their outcome and duration, unloads, crashes.

Recorded where an instance changes state (`workers.supervisor.registry.Registry._move`, the
one place that does), so every way in and out is counted once: REST and SDK loads, JIT loads,
unloads on request, TTL expiries, auto-evictions, the shutdown, failures and crashes.

Under ``lmhost serve`` every process of the service has ``PROMETHEUS_MULTIPROC_DIR`` (set by
config/gunicorn.conf.py before any of them imports prometheus_client) and writes its series
there; ``GET /metrics`` in any HTTP worker reads them all. Without it (a supervisor started by
a test) the series stay in this process and nobody reads them. Metric objects are made on
first use, not at import.
"""

from __future__ import annotations

import functools

from workers.records import State

LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@functools.cache
def _series():
    from prometheus_client import Counter, Histogram

    from workers import metric_files
    metric_files.install()  # before the first series makes this process's files
    labels = ["model", "type"]
    return {
        "loads": Counter("lmhost_model_loads", "Loads that ended, by outcome: loaded, "
                         "failed (llama.cpp refused, the process died) or cancelled "
                         "(unloaded while loading)", labels + ["outcome"], registry=None),
        "load_seconds": Histogram("lmhost_model_load_duration_seconds", "Time from the start "
                                  "of a load to the instance serving", labels,
                                  buckets=LOAD_BUCKETS, registry=None),
        "unloads": Counter("lmhost_model_unloads", "Loaded instances that stopped on purpose: "
                           "unload, TTL, auto-evict, shutdown", labels, registry=None),
        "crashes": Counter("lmhost_instance_crashes", "Loaded instances that ended unasked "
                           "(a crash, a kill)", labels, registry=None),
    }


def transition(instance, old: State, new: State) -> None:
    """Count `instance` moving from `old` to `new` (called by `Registry._move`); a full state
    dir loses the count, not the move (`metric_files.recorded`)."""
    from workers.metric_files import recorded  # prometheus_client on first use, not at import
    recorded(lambda: _count(instance, old, new))


def _count(instance, old: State, new: State) -> None:
    series = _series()
    labels = {"model": instance.model_key, "type": instance.type}
    if old is State.LOADING and new is State.LOADED:
        series["loads"].labels(**labels, outcome="loaded").inc()
        series["load_seconds"].labels(**labels).observe(instance.load_time or 0.0)
    elif old is State.LOADING and new is State.GONE:
        outcome = "cancelled" if getattr(instance, "cancelled", False) else "failed"
        series["loads"].labels(**labels, outcome=outcome).inc()
    elif old is State.UNLOADING and new is State.GONE:
        series["unloads"].labels(**labels).inc()
    elif old is State.LOADED and new is State.GONE:
        series["crashes"].labels(**labels).inc()
