"""Loading: a load request becomes a LOADING row, a process (a spare when there is one) gets
its spec, its events drive progress and the LOADED transition, and the caller waits for that.

`Loader._admit` is the one decision point of every load (REST, JIT, SDK): get-or-load
(``reuse_existing``: N concurrent calls load once), the identifier, and memory admission
(`workers.admission`) are decided under the registry's lock, and the new row — which reserves
the load's estimated memory from then on — is added in the same hold. Readings, evictions and
the wait for an unload's memory happen outside the lock, between rounds of the decision.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from config import Settings
from workers import admission, estimate, policy
from workers.catalog import Catalog, Model
from workers.crashes import failure_reason
from workers.engine_probe import Verdict
from workers.errors import IdentifierConflict, InsufficientMemory, ModelLoadFailed
from workers.listing import model_entry
from workers.loadconfig import LoadPlan, plan_load
from workers.memory import Memory, Reading
from workers.records import State
from workers.statedir import StateDir
from workers.supervisor.processes import InstanceProcess, Launcher, graceful_then_kill
from workers.supervisor.registry import Instance, Registry
from workers.supervisor.retiring import Retirer

log = logging.getLogger("workers.supervisor")

SPARE_EXIT_WAIT = 5.0
MAX_ADMISSION_ROUNDS = 32  # decide, evict, wait for the memory: a bound, never reached in practice


def holders(instances, reading: Reading) -> list[admission.Holder]:
    """The instances as admission sees them, with their use by `reading`."""
    result = []
    for i in instances:
        use = reading.processes.get(i.pid) if i.pid else None
        result.append(admission.Holder(i.id, i.state.value, estimate.need(i.estimate),
                                       use.pools() if use is not None else None, i.jit,
                                       i.last_used or i.created))
    return result


class SparePool:
    """Instance processes started ahead, with llama_cpp already imported, so that a load skips
    the import. Refilled after a load is over, never during one: on a small machine a spare
    importing llama_cpp next to a loading model slows the load."""

    def __init__(self, launcher: Launcher, size: int, state_dir: StateDir):
        self.launcher = launcher
        self.size = size
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.spares: list[InstanceProcess] = []  # guarded by lock
        self.refilling = False                    # guarded by lock
        self.closed = False                       # guarded by lock

    def take(self) -> InstanceProcess:
        """A spare that is still alive, or a freshly spawned process. Raises OSError."""
        with self.lock:
            while self.spares:
                process = self.spares.pop(0)
                if process.alive():
                    return process
        return self.launcher.spawn()

    def refill_later(self) -> None:
        threading.Thread(target=self.refill, name="spares", daemon=True).start()

    def refill(self) -> None:
        """Start spares until the pool is full; one refilling thread at a time."""
        with self.lock:
            if self.refilling or self.closed:
                return
            self.refilling = True
        try:
            while True:
                with self.lock:
                    if self.closed or len(self.spares) >= self.size:
                        return
                try:
                    spare = self.launcher.spawn()
                except OSError as exc:
                    log.warning("cannot start a spare instance process: %s", exc)
                    return
                with self.lock:
                    self.spares.append(spare)
        finally:
            with self.lock:
                self.refilling = False

    def close(self) -> None:
        """Dismiss every spare (EOF on stdin, then a kill) and remove its log."""
        with self.lock:
            self.closed = True
            spares, self.spares = self.spares, []
        for process in spares:
            self.dismiss(process)

    def dismiss(self, process: InstanceProcess) -> None:
        """Let a process that never got a spec go (EOF on its stdin), and remove its log."""
        graceful_then_kill(process.dismiss, process.wait_exit, process, SPARE_EXIT_WAIT,
                           f"spare process {process.pid}")
        self.state_dir.log(process.handle).unlink(missing_ok=True)


class Loader:
    def __init__(self, settings: Settings, engine: Verdict, catalog: Catalog, registry: Registry,
                 spares: SparePool, watch: Callable[[Instance], None], retirer: Retirer,
                 memory: Memory, weights_in_huge_pages: Callable[[], bool] = lambda: False):
        self.settings = settings
        self.weights_in_huge_pages = weights_in_huge_pages  # the supervisor's decision
        self.state_dir = spares.state_dir
        self.engine = engine          # the engine probe's verdict: extra buffer types on or off
        self.catalog = catalog
        self.registry = registry
        self.spares = spares
        self.watch = watch            # the death watch follows every process we start
        self.retirer = retirer        # auto-evict before a JIT load, evictions to make room
        self.memory = memory

    def load(self, request: dict, emit: Callable[[dict], None]) -> dict:
        """Load (or, with reuse_existing, get-or-load) and return seed 000's response.
        `emit(event)` receives progress events; it may fail (the caller went away): the load
        goes on regardless and the instance stays loaded."""
        reference = request["model"]
        model, plan = self._plan(request)
        if request.get("jit") and self.settings.auto_evict:
            with self.registry.lock:
                reusable = self._reusable(request, plan) is not None
            if not reusable:  # before admission: the memory it frees counts
                self.retirer.evict_for(reference)
        instance, reused, plan = self._admit(request, reference, plan, model_entry(model))
        if not reused:
            self._start(instance, plan)
        return self._await_loaded(instance, emit, reused, bool(request.get("echo_load_config")))

    def _plan(self, request: dict) -> tuple[Model, LoadPlan]:
        model, variant = self.catalog.resolve(request["model"])
        return model, plan_load(request, model, variant,
                                default_context_length=self.settings.context_length,
                                n_threads=self.settings.threads_per_instance,
                                gpus=self.memory.gpu_count(),
                                huge_pages=self.weights_in_huge_pages())

    def _admit(self, request: dict, reference: str, plan: LoadPlan,
               entry: dict) -> tuple[Instance, bool, LoadPlan]:
        """The instance to wait for: one to reuse, or a new row once the load is admitted, and
        the plan to load it with. Raises `InsufficientMemory` (503) when it does not fit and
        the guardrail says so; a load let in although it does not fit maps its weights."""
        need = estimate.need(plan.estimate.to_json())
        refused: set[str] = set()  # instances that would not go this time: serving
        refreshed = False          # eviction candidates asked when they were last used
        for _ in range(MAX_ADMISSION_ROUNDS):
            # an unload's memory shows in the reading first (bounded); its last reading serves
            reading = self.memory.settle() or self.memory.read()
            limits = admission.limits(reading.mode, self.settings.memory_limit)
            with self.registry.lock:
                instance = self._reusable(request, plan)
                if instance is not None:
                    return instance, True, plan
                self._check_identifier(request)
                decision = admission.decide(
                    need, reading.pools(), holders(self.registry.instances.values(), reading),
                    limits, self.settings.guardrail, self.settings.evict_explicit, refused)
                if decision.action == "load":
                    if decision.short:
                        # mapped, its weights are pages the kernel can drop and read again
                        plan = plan.mapped()
                        log.warning("LMHOST_GUARDRAIL=off: loading %r although %s (its weights "
                                    "mapped from the file)", plan.model_key,
                                    "; ".join(s.describe() for s in decision.short))
                    instance = self._new_instance(request, reference, plan)
                    instance.model_entry = entry
                    self.registry.add(instance)
                    return instance, False, plan
                if decision.action == "refuse":
                    raise InsufficientMemory(admission.refusal(
                        plan.model_key, decision, self.settings.guardrail,
                        self.settings.memory_limit), param="model")
                victims = [self.registry.instances[i] for i in decision.victims]
                candidates = [i for i in self.registry.instances.values()
                              if i.state is State.LOADED]
            if not refreshed:  # then decide again, least recently used first for real
                self.retirer.refresh_last_used(candidates)
                refreshed = True
                continue
            for victim in victims:  # least recently used first; stop at one that will not go
                if not self.retirer.evict(victim, f"evict: making room for {plan.model_key!r}"):
                    refused.add(victim.id)
                    break
        raise InsufficientMemory(f"not enough memory to load {plan.model_key!r}: instances kept "
                                 "changing while lmhost made room; try again", param="model")

    def estimate(self, request: dict) -> dict:
        """What a load would take and whether it would fit now; nothing is loaded."""
        _, plan = self._plan(request)
        reading = self.memory.read()
        limits = admission.limits(reading.mode, self.settings.memory_limit)
        pools = reading.pools()
        with self.registry.lock:
            current = holders(self.registry.instances.values(), reading)
        body = plan.estimate.to_json()
        decision = admission.decide(estimate.need(body), pools, current,
                                    limits, self.settings.guardrail, self.settings.evict_explicit)
        return {
            "model_key": plan.model_key, "variant": plan.variant, "type": plan.type,
            "mode": reading.mode, "estimate": body,
            "available": {f"{name}_bytes": admission.headroom(pool, current, limits.get(name, 0))
                          for name, pool in pools.items()},
            "fits": not decision.short, "guardrail": self.settings.guardrail,
            "passes_guardrail": decision.action != "refuse", "load_config": plan.load_config}

    def _reusable(self, request: dict, plan: LoadPlan) -> Instance | None:
        # caller holds the registry's lock
        if not request.get("reuse_existing"):
            return None
        row = policy.pick_reusable(self.registry.rows(), plan.model_key, plan.variant)
        return self.registry.instances[row["id"]] if row is not None else None

    def _check_identifier(self, request: dict) -> None:
        # caller holds the registry's lock
        identifier = request.get("identifier")
        if identifier is not None and identifier in self.registry.instances:
            raise IdentifierConflict(f"an instance with identifier {identifier!r} exists or is "
                                     "loading", param="identifier")

    def _new_instance(self, request: dict, reference: str, plan: LoadPlan) -> Instance:
        # caller holds the registry's lock and has checked the identifier
        return Instance(
            id=request.get("identifier") or policy.default_identifier(
                reference, set(self.registry.instances)),
            model_key=plan.model_key, variant=plan.variant, path=plan.path, type=plan.type,
            load_config=plan.load_config, ttl=request.get("ttl"),
            created=self.registry.wall_clock(), estimate=plan.estimate.to_json(),
            jit=bool(request.get("jit")))

    def _start(self, instance: Instance, plan: LoadPlan) -> None:
        """Hand the load to a process, unless the instance was unloaded meanwhile."""
        try:
            process = self.spares.take()
        except OSError as exc:
            self.registry.gone(instance, "not started",
                               ModelLoadFailed(f"cannot start an instance process: {exc}"))
            return
        follower = threading.Thread(target=self._follow, args=(instance, process),
                                    name=f"events-{instance.id}", daemon=True)
        with self.registry.lock:
            cancelled = instance.state is not State.LOADING
            if not cancelled:
                instance.process, instance.handle = process, process.handle
                instance.pid, instance.started = process.pid, process.started
                instance.follower = follower
                self.registry.write()
                self.watch(instance)
        if cancelled:  # unloaded before it had a process
            self.spares.dismiss(process)
            return
        process.send_spec({
            "instance_id": instance.id, "handle": process.handle, "model_key": instance.model_key,
            "variant": instance.variant, "path": instance.path, "type": instance.type,
            "load_config": instance.load_config, "ttl": instance.ttl,
            "created": instance.created, "estimate": instance.estimate,
            "llama_kwargs": plan.llama_kwargs, "jit": instance.jit,
            "model_entry": instance.model_entry,
            "extra_bufts": self.engine.extra_bufts})
        follower.start()

    def _follow(self, instance: Instance, process: InstanceProcess) -> None:
        """The instance's events until its stdout closes: progress, then loaded or failed."""
        for event in process.events():
            kind = event.get("event")
            if kind == "progress":
                self.registry.progress(instance, float(event.get("progress", 0.0)))
            elif kind == "loaded":
                use = self.memory.use(process.pid)
                self.registry.loaded(instance, event["socket"], event["load_time_seconds"],
                                     use.to_json() if use is not None else None)
            elif kind == "failed":  # then it exits: the death watch reaps it with this reason
                tail = self.state_dir.log_tail(instance.handle)
                instance.error = ModelLoadFailed(
                    f"failed to load {Path(instance.path).name}: "
                    f"{failure_reason(tail, event.get('message') or 'the instance process exited')}",
                    param="model")

    def _await_loaded(self, instance: Instance, emit, reused: bool, echo: bool) -> dict:
        """Emit each progress step until the instance leaves LOADING, then return the load's
        answer. The caller that started the load sends every step, from the first (it may
        come here after several, or after the load); one that joins a load under way starts
        at its latest step, one that finds it loaded sends only the end."""
        with self.registry.lock:
            steps = instance.progress_steps
            if not reused:
                seen = 0
            elif instance.state is State.LOADING:
                seen = len(steps) - 1
            else:
                seen = len(steps)
        sent = -1.0
        while True:
            with self.registry.lock:
                while instance.state is State.LOADING and len(steps) <= seen:
                    self.registry.changed.wait(timeout=1.0)
                state, error, fresh = instance.state, instance.error, steps[seen:]
                seen += len(fresh)
            if state is State.GONE:
                raise error or ModelLoadFailed(f"instance {instance.id!r} was unloaded before it "
                                               "loaded")
            for progress in fresh:
                sent = progress
                emit({"event": "progress", "progress": progress})
            if state is not State.LOADING:
                break
        if sent < 1.0:
            emit({"event": "progress", "progress": 1.0})
        result = {"type": instance.type, "model_instance_id": instance.id,
                  "instance_id": instance.id,
                  "load_time_seconds": round(instance.load_time or 0.0, 3),
                  "status": "loaded", "reused": reused}
        if echo:
            result["load_config"] = instance.load_config
        return result
