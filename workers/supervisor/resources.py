"""``GET /api/v1/resources``: memory as admission sees it now (the supervisor's `resources`
op). Per GPU (none in CPU mode) and RAM: totals and free memory; per pool: what instances
reserve and account for, the limit, what a new load may take; per instance: its estimate, its
use right after its load and now — so the estimate's error is visible."""

from __future__ import annotations

from config import Settings
from workers import admission
from workers.memory import Memory
from workers.supervisor.loading import holders
from workers.supervisor.registry import Registry


def report(memory: Memory, registry: Registry, settings: Settings) -> dict:
    reading = memory.read()
    limits = admission.limits(reading.mode, settings.memory_limit)
    with registry.lock:
        instances = list(registry.instances.values())
        current = holders(instances, reading)
    pools = reading.pools()
    return {
        "mode": reading.mode,
        "cpu_mode_reason": memory.cpu_reason if reading.mode == "cpu" else None,
        "guardrail": settings.guardrail,
        "evict_explicit": settings.evict_explicit,
        "limit_bytes": settings.memory_limit or None,
        "gpus": [{"index": g.index, "name": g.name, "total_bytes": g.total, "free_bytes": g.free,
                  "used_bytes": g.used, "driver_reserved_bytes": g.reserved}
                 for g in reading.gpus],
        "ram": {"total_bytes": reading.ram_total, "available_bytes": reading.ram_available},
        "pools": [{"pool": name, "total_bytes": pool.total, "free_bytes": pool.free,
                   "reserved_bytes": admission.reserved(current, name),
                   "instances_bytes": sum(admission.accounted(h, name) for h in current),
                   "limit_bytes": limits.get(name),
                   "available_bytes": admission.headroom(pool, current, limits.get(name, 0))}
                  for name, pool in pools.items()],
        "instances": [_instance(i, h, reading, pools) for i, h in zip(instances, current)],
    }


def _instance(instance, holder: admission.Holder, reading, pools) -> dict:
    use = reading.processes.get(instance.pid) if instance.pid else None
    return {"id": instance.id, "model_key": instance.model_key, "state": instance.state.value,
            "jit": instance.jit, "estimate": instance.estimate or None,
            "measured": instance.measured, "in_use": use.to_json() if use is not None else None,
            "reserved_bytes": sum(admission.reserved([holder], name) for name in pools)}
