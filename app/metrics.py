"""Prometheus metrics of the service (``GET /metrics``), right under several gunicorn workers.

Two kinds of series, every name starting with ``lmhost_``:

- Events, counted where they happen: HTTP requests by route, method and status and their
  duration (`Metrics.observe_request`, from `app.requestlog`), open SDK sockets (the socket
  registry); loads, unloads, crashes and load durations in the supervisor (`workers.metrics`).
  Under gunicorn they live in prometheus_client's multiprocess files
  (``PROMETHEUS_MULTIPROC_DIR``, set by config/gunicorn.conf.py for every process of the
  service, wiped at start; a dead worker's live gauges are dropped in ``child_exit``); a scrape
  in any worker sums every process's.
- State, read at scrape time by `EngineCollector` rather than kept in step by hand: instances
  by state (the instance table), each instance's queue and generated tokens (its ``status``
  op), memory (`read_memory`, with `workers.memory`'s readers), and whether the supervisor answers.

Without ``PROMETHEUS_MULTIPROC_DIR`` (an app built by a test) the series live in this app's
own registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from config import Settings
from workers import client, metric_files, procs
from workers.metric_files import recorded
from workers.memory import read_meminfo, read_process
from workers.nvml import Nvml, NvmlError
from workers.protocol import ProtocolError, call
from workers.records import State
from workers.table import InstanceTable, TableUnreadable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STATUS_TIMEOUT = 1.0  # seconds for an instance's status at scrape time
TABLE_STATES = (State.LOADING, State.LOADED, State.UNLOADING)
TYPES = ("llm", "embedding")
SDK_NAMESPACES = ("llm", "embedding", "system")


class Metrics:
    """The HTTP worker's event series, and the exposition of everything."""

    def __init__(self, collector: "EngineCollector"):
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        metric_files.install()  # before the first series makes this process's files
        self.collector = collector
        self.registry = CollectorRegistry()
        # multiprocess: values go to the files, and a scrape reads the files
        target = None if self.multiprocess_dir else self.registry
        self.requests = Counter(
            "lmhost_http_requests", "HTTP requests answered, by route (the URL rule), method "
            "and status", ["route", "method", "status"], registry=target)
        self.duration = Histogram(
            "lmhost_http_request_duration_seconds", "Time from a request's arrival to the "
            "last byte of its answer (a stream's end)", ["route", "method"],
            buckets=HTTP_BUCKETS, registry=target)
        self.sdk_sockets = Gauge(
            "lmhost_sdk_sockets", "Open LM Studio SDK websockets, by namespace",
            ["namespace"], multiprocess_mode="livesum", registry=target)
        # Every value now: under multiprocess mode a series' first value opens this process's
        # file of that kind (two descriptors, for good), which would otherwise happen at the
        # first SDK socket, not at start.
        for namespace in SDK_NAMESPACES:
            recorded(lambda: self.sdk_sockets.labels(namespace=namespace))
        if target is not None:
            self.registry.register(collector)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        recorded(lambda: self.requests.labels(route=route, method=method, status=str(status)).inc())
        recorded(lambda: self.duration.labels(route=route, method=method).observe(seconds))

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.collector)
        return generate_latest(registry)


# -- memory readings ---------------------------------------------------------------------------

@dataclass
class MemoryReadings:
    host_total: int | None = None
    host_available: int | None = None
    instance_rss: dict[str, int] = field(default_factory=dict)  # instance id -> bytes
    gpus: list = field(default_factory=list)                     # workers.nvml.GpuReading


def read_memory(rows: list[dict], nvml: Nvml, proc: Path = Path("/proc")) -> MemoryReadings:
    """Memory now, with `workers.memory`'s readers: the host's RAM, each instance's resident
    set (by the table's pids, checked against pid reuse) and each GPU's (NVML; none in CPU
    mode)."""
    readings = MemoryReadings()
    try:
        readings.host_total, readings.host_available = read_meminfo(proc / "meminfo")
    except (OSError, KeyError, ValueError, IndexError):
        pass
    for row in rows:
        if row.get("pid") and procs.same_process(row["pid"], row.get("started")):
            use = read_process(proc / str(row["pid"]) / "status")
            if use is not None:
                readings.instance_rss[row["id"]] = use.ram
    try:
        readings.gpus = nvml.read()
    except NvmlError:
        readings.gpus = []
    return readings


# -- state at scrape time ----------------------------------------------------------------------

class EngineCollector:
    """prometheus_client collector: the service's state, read when scraped."""

    def __init__(self, settings: Settings, table: InstanceTable, nvml: Nvml | None = None):
        self.settings = settings
        self.table = table
        self.nvml = nvml or Nvml()

    def describe(self):
        return []  # read at scrape time: nothing to check at registration

    def collect(self):
        try:
            rows = self.table.read()
        except TableUnreadable:
            rows = []
        yield GaugeMetricFamily("lmhost_supervisor_up", "1 when the supervisor answers a ping",
                                value=1 if client.ping(self.settings) else 0)
        yield self._instances(rows)
        yield from self._instance_status(rows)
        yield from self._memory(rows)

    @staticmethod
    def _instances(rows):
        family = GaugeMetricFamily("lmhost_instances", "Instances by state and type",
                                   labels=["state", "type"])
        for state in TABLE_STATES:
            for type_ in TYPES:
                family.add_metric([state.value, type_], sum(
                    1 for r in rows if r.get("state") == state.value and r.get("type") == type_))
        return family

    def _instance_status(self, rows):
        labels = ["instance", "model"]
        busy = GaugeMetricFamily("lmhost_instance_busy", "1 while an instance runs a request",
                                 labels=labels)
        queued = GaugeMetricFamily("lmhost_instance_queue_depth", "Requests waiting in an "
                                   "instance's queue (beyond the one it runs)", labels=labels)
        tokens = CounterMetricFamily("lmhost_generated_tokens", "Tokens generated by an "
                                     "instance since it loaded", labels=labels)
        handed_off = CounterMetricFamily(
            "lmhost_handed_off_tokens", "Of an instance's generated tokens, those it wrote on "
            "the client's connection itself (a stream handed off by its HTTP worker)",
            labels=labels)
        for row in rows:
            if row.get("state") != State.LOADED.value or not row.get("socket"):
                continue
            try:
                status = call(row["socket"], {"op": "status"}, STATUS_TIMEOUT)
            except (OSError, ProtocolError):
                continue  # leaving, or frozen: its series are missing from this scrape
            values = [row["id"], row["model_key"]]
            busy.add_metric(values, 1 if status.get("busy") else 0)
            queued.add_metric(values, status.get("queued", 0))
            tokens.add_metric(values, status.get("generated_tokens", 0))
            handed_off.add_metric(values, status.get("handed_off_tokens", 0))
        yield from (busy, queued, tokens, handed_off)

    def _memory(self, rows):
        readings = read_memory(rows, self.nvml)
        host = GaugeMetricFamily("lmhost_host_memory_bytes", "The host's RAM: total, and "
                                 "available (MemAvailable)", labels=["kind"])
        if readings.host_total is not None:
            host.add_metric(["total"], readings.host_total)
        if readings.host_available is not None:
            host.add_metric(["available"], readings.host_available)
        yield host
        by_id = {r["id"]: r for r in rows}
        rss = GaugeMetricFamily("lmhost_instance_memory_bytes", "An instance process's "
                                "resident memory", labels=["instance", "model"])
        estimate = GaugeMetricFamily("lmhost_instance_memory_estimate_bytes", "The memory "
                                     "estimate an instance was loaded with",
                                     labels=["instance", "model"])
        for row in rows:
            if row.get("state") in (State.LOADING.value, State.LOADED.value):
                estimate.add_metric([row["id"], row["model_key"]], (row.get("estimate") or {}).get("total_bytes", 0))
        for instance_id, value in readings.instance_rss.items():
            rss.add_metric([instance_id, by_id[instance_id]["model_key"]], value)
        yield rss
        yield estimate
        gpu = GaugeMetricFamily("lmhost_gpu_memory_bytes", "GPU memory: total, free, used",
                                labels=["gpu", "name", "kind"])
        for reading in readings.gpus:
            for kind in ("total", "free", "used"):
                gpu.add_metric([str(reading.index), reading.name, kind], getattr(reading, kind))
        yield gpu

