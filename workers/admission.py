"""Memory admission: does a load fit, what is reserved, which idle instances may make room.
Pure functions of plain data (DESIGN invariant 5); `Loader.load` is the one place that asks
them and acts on the answer, before a row is added or a process spawned.

Terms:

- **pool**: ``ram`` or ``gpu`` (every GPU together); its ``free`` is what the reading shows
  free now (`workers.memory.Reading.pools`).
- **holder**: an instance as admission sees it: its estimate per pool (``need``), what its
  process uses per pool by the same reading (``used``; None when it has no process yet),
  its state, whether it was loaded JIT, when it was last used.
- **reserved**: what holders will still take beyond what they use now, ``need − used`` each:
  loads in flight (a loading instance uses little yet) and loaded instances whose compute
  buffers have not been touched yet.
- **accounted**: what an instance counts against ``LMHOST_MEMORY_LIMIT``: the larger of its
  estimate and its use.
- **available** in a pool: ``free − reserved``, and, when the pool has a limit, at most
  ``limit − Σ accounted``.

Guardrails (``LMHOST_GUARDRAIL``) when a load does not fit: ``strict`` refuses it; ``evict``
names idle-looking instances to ask, least recently used first — loaded ones only (never one
that is loading or leaving), JIT-loaded ones, and explicitly loaded ones only with
``LMHOST_EVICT_EXPLICIT`` — enough of them to cover the shortfall, else refuses without
evicting anything; each instance still decides itself, atomically, whether it is idle, so
none serving a request goes; ``off`` loads anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

POOLS = ("gpu", "ram")
POOL_NAMES = {"gpu": "GPU memory", "ram": "RAM"}
RELEASE_SHARE = 0.75  # an unload's memory is back once this share of its use shows free
LOADED, LOADING = "loaded", "loading"


@dataclass(frozen=True)
class Pool:
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class Holder:
    id: str
    state: str                            # workers.records.State value
    need: dict[str, int]                  # the estimate, bytes per pool
    used: dict[str, int] | None = None    # measured now, bytes per pool
    jit: bool = False
    last_used: float = 0.0


@dataclass(frozen=True)
class Shortfall:
    pool: str
    needed: int
    available: int

    @property
    def missing(self) -> int:
        return self.needed - self.available

    def describe(self) -> str:
        return (f"it needs {self.needed:,} bytes ({_mib(self.needed)}) of "
                f"{POOL_NAMES[self.pool]} and {max(self.available, 0):,} bytes "
                f"({_mib(max(self.available, 0))}) are available")


@dataclass(frozen=True)
class Decision:
    action: str                                   # "load" | "evict" | "refuse"
    short: tuple[Shortfall, ...] = ()
    victims: tuple[str, ...] = field(default=())  # "evict": ids to ask, in this order


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def reserved(holders: list[Holder], pool: str) -> int:
    return sum(max(h.need.get(pool, 0) - (h.used or {}).get(pool, 0), 0) for h in holders)


def accounted(holder: Holder, pool: str) -> int:
    return max(holder.need.get(pool, 0), (holder.used or {}).get(pool, 0))


def available(pool: Pool, holders: list[Holder], limit: int = 0) -> int:
    """What a new load may take from `pool` (may be negative: already over)."""
    room = pool.free - reserved(holders, pool.name)
    if limit:
        room = min(room, limit - sum(accounted(h, pool.name) for h in holders))
    return room


def headroom(pool: Pool, holders: list[Holder], limit: int = 0) -> int:
    """`available`, shown to a user: what a load may take, never below zero."""
    return max(available(pool, holders, limit), 0)


def shortfalls(need: dict[str, int], pools: dict[str, Pool], holders: list[Holder],
               limits: dict[str, int]) -> tuple[Shortfall, ...]:
    """The pools where `need` does not fit now. A pool the host lacks (no GPU) is not asked."""
    short = []
    for name in POOLS:
        if need.get(name, 0) > 0 and name in pools:
            room = available(pools[name], holders, limits.get(name, 0))
            if need[name] > room:
                short.append(Shortfall(name, need[name], room))
    return tuple(short)


def eviction_candidates(holders: list[Holder], evict_explicit: bool,
                        exclude: frozenset[str] | set[str] = frozenset()) -> list[Holder]:
    """Instances the evict guardrail may ask to go, least recently used first: loaded ones
    (never loading or leaving), JIT-loaded, or explicitly loaded with `evict_explicit`."""
    candidates = [h for h in holders if h.state == LOADED and h.id not in exclude
                  and (h.jit or evict_explicit)]
    return sorted(candidates, key=lambda h: (h.last_used, h.id))


def pick_victims(short: tuple[Shortfall, ...], candidates: list[Holder]) -> tuple[str, ...] | None:
    """The shortest prefix of `candidates` whose memory covers every shortfall; None when
    all of them together would not."""
    missing = {s.pool: s.missing for s in short}
    victims: list[str] = []
    for holder in candidates:
        if all(m <= 0 for m in missing.values()):
            break
        victims.append(holder.id)
        for pool in missing:
            missing[pool] -= accounted(holder, pool)
    if any(m > 0 for m in missing.values()):
        return None
    return tuple(victims)


def decide(need: dict[str, int], pools: dict[str, Pool], holders: list[Holder],
           limits: dict[str, int], guardrail: str, evict_explicit: bool = False,
           exclude: frozenset[str] | set[str] = frozenset()) -> Decision:
    """The admission of one load. `exclude`: instances that refused to go this time (busy)."""
    short = shortfalls(need, pools, holders, limits)
    if not short or guardrail == "off":
        return Decision("load", short)
    if guardrail == "evict":
        victims = pick_victims(short, eviction_candidates(holders, evict_explicit, exclude))
        if victims:
            return Decision("evict", short, victims)
    return Decision("refuse", short)


def memory_back(free_before: int, free_now: int, size: int) -> bool:
    """Whether an unloaded instance's memory (`size` bytes) shows free again."""
    return free_now - free_before >= RELEASE_SHARE * size


def limits(mode: str, limit: int) -> dict[str, int]:
    """``LMHOST_MEMORY_LIMIT`` caps what lmhost uses where its models live: the GPUs on a GPU
    host (mode "gpu"), RAM on a CPU host."""
    return {("gpu" if mode == "gpu" else "ram"): limit} if limit else {}


def refusal(model_key: str, decision: Decision, guardrail: str, limit: int) -> str:
    """The 503's message: what is short, by how much, and what would help."""
    capped = f" (LMHOST_MEMORY_LIMIT {_mib(limit)})" if limit else ""
    hint = ("unload an instance, or set LMHOST_GUARDRAIL=evict to unload idle ones first"
            if guardrail == "strict" else
            "no idle instance can make room (the others are serving, loading, or explicitly "
            "loaded while LMHOST_EVICT_EXPLICIT=0)")
    return (f"not enough memory to load {model_key!r}{capped}: "
            + "; ".join(s.describe() for s in decision.short) + f"; {hint}")
