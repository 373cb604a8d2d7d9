"""The supervisor: the only process that spawns, stops or evicts instances, and the only writer
of the instance table (DESIGN invariant 1). Run as ``python -m workers`` (`workers.__main__`).

Its parts, by an instance's lifecycle (states and transitions: `workers.records`):

- `registry`   the instances it knows and the one place their state changes (table writes);
- `loading`    load and get-or-load: spawn or take a spare, hand over the spec, follow events;
- `retiring`   unload, TTL expiry, auto-evict, eviction for memory, shutdown: one "retire" path;
- `deaths`     the death watch (pidfds), reaping and crash explanations, adoption at start;
- `control`    the control server the HTTP workers call;
- `resources`  the memory report (``GET /api/v1/resources``); readings are `workers.memory`'s;
- `processes`  the process seam (spawn, signal, ask) and "graceful, then kill".

`Supervisor` wires them. Threads: one per control connection, one following each loading
instance's events, the death watch, the TTL loop, the spare-pool refill. Lock order: the
registry's lock before the table's file lock; nothing slow under the registry's lock.
"""

from __future__ import annotations

import logging
import os
import threading

from config import Settings
from workers import hugepages
from workers.catalog import Catalog
from workers.engine_probe import Verdict, cpu_info, rebuild_advice
from workers.memory import Memory
from workers.statedir import StateDir
from workers.supervisor.control import ControlServer
from workers.supervisor.deaths import DeathWatch, adopt_instances
from workers.supervisor.loading import Loader, SparePool
from workers.supervisor.processes import Launcher
from workers.supervisor import resources
from workers.supervisor.registry import Registry
from workers.supervisor.retiring import Retirer
from workers.table import InstanceTable

log = logging.getLogger("workers.supervisor")


class Supervisor:
    def __init__(self, settings: Settings, engine: Verdict, launcher: Launcher | None = None,
                 host_allows_huge_pages: bool = False):
        """`host_allows_huge_pages`: the kernel and C library let instances keep their weights
        in huge pages and the setting is on (`workers.hugepages.host_allows`, asked by
        `workers.__main__`); whether they do is decided in `start`, once the GPUs are known."""
        self.settings = settings
        self.host_allows_huge_pages = host_allows_huge_pages
        self.weights_in_huge_pages = False  # decided once in `start`, before the first spawn or load
        self.state_dir = StateDir(settings.state_dir).create()
        self.registry = Registry(InstanceTable(settings.state_dir))
        self.stopping = threading.Event()  # no more TTL checks or spares
        self.done = threading.Event()      # everything stopped: the process may exit
        self.memory = Memory(pids=self.registry.pids)  # NVML starts in `start`, not here
        self.registry.on_gone = self.memory.gone
        launcher = launcher or Launcher(self.state_dir, settings.queue_size,
                                        malloc_advice=lambda: self.weights_in_huge_pages)
        self.spares = SparePool(launcher, settings.spare_instances, self.state_dir)
        self.registry.on_load_over = self.spares.refill_later
        self.deaths = DeathWatch(self.registry, self.state_dir, rebuild_advice(cpu_info()["flags"]))
        self.retirer = Retirer(settings, self.registry, self.stopping, self.memory)
        self.loader = Loader(settings, engine, Catalog(settings.models_dir, settings.state_dir),
                             self.registry, self.spares, self.deaths.watch, self.retirer,
                             self.memory, weights_in_huge_pages=lambda: self.weights_in_huge_pages)
        self.control: ControlServer | None = None

    def start(self) -> None:
        """Start NVML (or say CPU mode), decide on huge pages, adopt what an earlier supervisor
        left alive, start the watch, the TTL loop and the spares, then answer on the control
        socket."""
        self.memory.start()
        self.decide_huge_pages()
        threading.Thread(target=self.deaths.run, name="deaths", daemon=True).start()
        adopt_instances(self.registry, self.state_dir, self.deaths)
        threading.Thread(target=self.retirer.expire_idle, name="ttl", daemon=True).start()
        threading.Thread(target=self.spares.refill, name="spares", daemon=True).start()
        self.control = ControlServer(self.state_dir.supervisor_socket, self)
        threading.Thread(target=self.control.serve_forever, name="control", daemon=True).start()

    def decide_huge_pages(self) -> None:
        """Whether instances keep their weights in huge pages (`workers.hugepages`): decided
        once, with the GPUs NVML finds now (a GPU host keeps the mapping even if NVML fails
        later), so that every spare and every load of this supervisor agree."""
        gpus = self.memory.gpu_count()
        self.weights_in_huge_pages = hugepages.weights_in_huge_pages(
            self.host_allows_huge_pages, gpus)
        log.info("%s", hugepages.describe(self.weights_in_huge_pages, self.settings.huge_pages,
                                          hugepages.thp_mode(), gpus))

    def load(self, request: dict, emit) -> dict:
        return self.loader.load(request, emit)

    def unload(self, instance_id: str) -> dict:
        return self.retirer.unload(instance_id)

    def estimate(self, request: dict) -> dict:
        return self.loader.estimate(request)

    def resources(self) -> dict:
        return resources.report(self.memory, self.registry, self.settings)

    def status(self) -> dict:
        return {"pid": os.getpid(), "instances": self.registry.rows()}

    def stop(self) -> None:
        """Unload every instance and dismiss the spares: no process of ours is left."""
        self.retirer.stop_all()
        self.spares.close()

    def close(self) -> None:
        if self.control is not None:
            self.control.shutdown()
            self.control.server_close()
