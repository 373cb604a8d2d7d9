"""Retiring: one path for every way a loaded instance leaves on purpose — an unload, a TTL
expiry, an eviction (JIT auto-evict, or making room for a load), the service's shutdown.
`retire` moves it to UNLOADING, asks it to stop (or it has decided so itself), gives it its
grace, then kills it; the death watch reaps it (GONE), and the next admission waits for its
memory to show free (`Memory.gone`, against the baseline `Memory.before_stop` noted). Whether
an instance is idle, for TTL and eviction, the instance decides itself, atomically (ops
``expire`` and ``evict``), so a request in flight is never cut.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from config import Settings
from workers import policy
from workers.errors import InstanceNotFound, ModelLoadFailed
from workers.memory import Memory
from workers.protocol import ProtocolError
from workers.records import State
from workers.supervisor.processes import KILL_WAIT, graceful_then_kill
from workers.supervisor.registry import Instance, Registry

log = logging.getLogger("workers.supervisor")

TTL_INTERVAL = 1.0  # seconds between TTL checks
EXIT_MARGIN = 5.0   # beyond the unload timeout, for the process to exit once its job is done
RPC_ERRORS = (OSError, ProtocolError, TypeError)  # TypeError: no socket yet


class Retirer:
    def __init__(self, settings: Settings, registry: Registry, stopping: threading.Event,
                 memory: Memory):
        self.settings = settings
        self.registry = registry
        self.stopping = stopping  # set at shutdown: no more TTL checks
        self.memory = memory
        self.grace = float(settings.unload_timeout)
        self.exit_margin = EXIT_MARGIN

    def unload(self, instance_id: str) -> dict:
        """Stop an instance: a loading one at once (its load answers with an error); a loaded
        one after its request in flight (bounded by the unload timeout)."""
        with self.registry.lock:
            instance = self.registry.instances.get(instance_id)
            if instance is None:
                raise InstanceNotFound(f"no instance {instance_id!r}", param="instance_id")
            loading = instance.state is State.LOADING
            if loading:
                instance.error = ModelLoadFailed(f"load of {instance_id!r} cancelled: the "
                                                 "instance was unloaded while loading", param="model")
                instance.cancelled = True
                if instance.process is None:  # not started yet: the loader will drop it
                    self.registry.gone(instance)
                    return {"instance_id": instance_id}
        self.memory.before_stop(instance.pid)
        if loading:
            instance.process.signal(signal.SIGKILL)
            self.registry.wait_gone(instance, KILL_WAIT)
        else:
            self.retire(instance, "unloaded on request", ask=self._shutdown_op(instance))
        return {"instance_id": instance_id}

    def retire(self, instance: Instance, why: str, ask: Callable[[], None] = lambda: None) -> None:
        """LOADED -> UNLOADING, `ask` it to stop, wait (bounded), then kill. An instance that
        is leaving already is waited for the same way."""
        if not self.registry.retiring(instance, why) and instance.state is not State.UNLOADING:
            return
        graceful_then_kill(ask, lambda timeout: self.registry.wait_gone(instance, timeout),
                           instance.process, self.grace + self.exit_margin,
                           f"instance {instance.id!r}")

    def _shutdown_op(self, instance: Instance) -> Callable[[], None]:
        """Ask the instance to stop after its request in flight; SIGTERM if it cannot hear.
        Asked from a thread: a frozen instance must not hold up the wait and the kill."""
        def ask_in_background():
            def ask():
                try:
                    instance.process.ask(instance.socket, {"op": "shutdown",
                                                           "graceful_timeout": self.grace})
                except RPC_ERRORS:
                    instance.process.signal(signal.SIGTERM)
            threading.Thread(target=ask, name=f"stop-{instance.id}", daemon=True).start()
        return ask_in_background

    # -- TTL and eviction: the instance agrees to stop, then it is retired ---------------------

    def expire_idle(self) -> None:
        """Check TTLs every `TTL_INTERVAL` seconds, until shutdown."""
        while not self.stopping.wait(TTL_INTERVAL):
            self.check_ttls()

    def check_ttls(self) -> list[threading.Thread]:
        """Ask every loaded instance with a TTL whether it has been idle that long; retire
        those that agree (each in a thread, returned). Also keeps `last_used` fresh."""
        with self.registry.lock:
            candidates = [i for i in self.registry.instances.values()
                          if i.state is State.LOADED and i.ttl]
        retiring = []
        for instance in candidates:
            try:
                answer = instance.process.ask(instance.socket, {"op": "expire", "ttl": instance.ttl},
                                              timeout=2.0)
            except RPC_ERRORS:
                continue
            if answer.get("last_used_ago") is not None:
                instance.last_used = self.registry.wall_clock() - answer["last_used_ago"]
            if answer.get("expired"):
                thread = threading.Thread(target=self.retire, daemon=True, args=(
                    instance, f"idle for {instance.ttl} s (ttl)"))
                thread.start()
                retiring.append(thread)
        return retiring

    def evict_for(self, reference: str) -> None:
        """Auto-evict: unload the earlier JIT-loaded instances that are idle before a JIT load
        of `reference`, and wait until they have gone."""
        with self.registry.lock:
            victims = [self.registry.instances[r["id"]]
                       for r in policy.jit_evictions(self.registry.rows())]
        for instance in victims:
            self.evict(instance, f"auto-evict: idle JIT instance, making room for {reference!r}")

    def refresh_last_used(self, instances: list[Instance]) -> None:
        """Ask each instance when it was last used (its own answer: nothing else sees its
        requests), so that eviction takes the least recently used first."""
        for instance in instances:
            try:
                status = instance.process.ask(instance.socket, {"op": "status"}, timeout=2.0)
            except RPC_ERRORS:
                continue
            instance.last_used = self.registry.wall_clock() - policy.idle_for(status)

    def evict(self, instance: Instance, why: str) -> bool:
        """Unload `instance` if it is idle — it decides, atomically — and wait until it has
        gone. False when it would not go (serving, or already leaving)."""
        self.memory.before_stop(instance.pid)
        try:
            answer = instance.process.ask(instance.socket, {"op": "evict"}, timeout=2.0)
        except RPC_ERRORS:
            answer = {}
        if not answer.get("evicted"):
            self.memory.forget(instance.pid)
            return False
        self.retire(instance, why)
        return True

    # -- shutdown --------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Unload every instance in parallel, each after its request in flight."""
        self.stopping.set()
        with self.registry.lock:
            ids = list(self.registry.instances)
        threads = [threading.Thread(target=self._unload_quietly, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _unload_quietly(self, instance_id: str) -> None:
        try:
            self.unload(instance_id)
        except InstanceNotFound:
            pass
