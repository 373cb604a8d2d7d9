"""Memory admission as pure functions: fit, reservations, the limit, eviction order and the
never-evict rules, and when an unload's memory counts as back."""

from __future__ import annotations

import pytest

from workers.admission import (Holder, Pool, Shortfall, accounted, available, decide,
                               eviction_candidates, limits, memory_back, pick_victims, reserved)

MB = 1_000_000
RAM = {"ram": Pool("ram", 1000 * MB, 600 * MB)}
GPU = {"ram": Pool("ram", 1000 * MB, 900 * MB), "gpu": Pool("gpu", 800 * MB, 500 * MB)}


def holder(id, need, used=None, state="loaded", jit=False, last_used=0.0, pool="ram"):
    return Holder(id, state, {pool: need * MB},
                  None if used is None else {pool: used * MB}, jit, last_used)


@pytest.mark.parametrize("holders, expected", [
    ([], 0),
    ([holder("a", 100, used=100)], 0),        # loaded and measured at its estimate
    ([holder("a", 100, used=40)], 60),        # compute buffers not touched yet
    ([holder("a", 100, used=None, state="loading")], 100),  # a load in flight, no process yet
    ([holder("a", 100, used=30, state="loading")], 70),     # a load in flight, partly there
    ([holder("a", 100, used=150)], 0),        # using more than estimated: nothing reserved
    ([holder("a", 100, used=40), holder("b", 50, state="loading")], 110),
])
def test_reserved_is_what_instances_will_still_take(holders, expected):
    assert reserved(holders, "ram") == expected * MB


@pytest.mark.parametrize("need, used, expected", [(100, None, 100), (100, 40, 100), (100, 150, 150)])
def test_accounted_is_the_larger_of_estimate_and_use(need, used, expected):
    assert accounted(holder("a", need, used), "ram") == expected * MB


@pytest.mark.parametrize("free, holders, limit, expected", [
    (600, [], 0, 600),                                  # free memory, no limit
    (600, [holder("a", 100, used=40)], 0, 540),         # free less what is reserved
    (600, [], 500, 500),                                # the limit caps it
    (600, [holder("a", 300, used=300)], 500, 200),      # limit less what instances account for
    (600, [holder("a", 300, used=400)], 500, 100),      # ... their use when over the estimate
    (100, [holder("a", 300, used=300)], 500, 100),      # the host has less than the limit left
    (600, [holder("a", 600, used=100, state="loading")], 500, -100),  # over: negative
])
def test_available(free, holders, limit, expected):
    assert available(Pool("ram", 1000 * MB, free * MB), holders, limit * MB) == expected * MB


@pytest.mark.parametrize("need, pools, holders, lim, short", [
    ({"ram": 500 * MB}, RAM, [], {}, ()),
    ({"ram": 601 * MB}, RAM, [], {}, (Shortfall("ram", 601 * MB, 600 * MB),)),
    ({"ram": 500 * MB}, RAM, [holder("a", 200, state="loading")], {},
     (Shortfall("ram", 500 * MB, 400 * MB),)),          # a load in flight counts as reserved
    ({"ram": 300 * MB}, RAM, [], {"ram": 250 * MB}, (Shortfall("ram", 300 * MB, 250 * MB),)),
    # GPU host: each pool on its own; the limit is on the GPU pool
    ({"gpu": 400 * MB, "ram": 100 * MB}, GPU, [], {"gpu": 450 * MB}, ()),
    ({"gpu": 501 * MB, "ram": 100 * MB}, GPU, [], {}, (Shortfall("gpu", 501 * MB, 500 * MB),)),
    ({"gpu": 400 * MB, "ram": 950 * MB}, GPU, [], {}, (Shortfall("ram", 950 * MB, 900 * MB),)),
    ({"gpu": 400 * MB}, GPU, [holder("a", 300, used=300, pool="gpu")], {"gpu": 600 * MB},
     (Shortfall("gpu", 400 * MB, 300 * MB),)),
    # CPU mode: an estimate with a GPU part (none: CPU mode estimates put it all in RAM)
    ({"gpu": 0, "ram": 100 * MB}, RAM, [], {}, ()),
])
def test_fit(need, pools, holders, lim, short):
    decision = decide(need, pools, holders, lim, "strict")
    assert decision.short == short
    assert decision.action == ("refuse" if short else "load")


def test_guardrails_when_it_does_not_fit():
    need = {"ram": 700 * MB}
    idle = [holder("old", 200, used=200, jit=True, last_used=1.0)]
    assert decide(need, RAM, idle, {}, "strict").action == "refuse"
    assert decide(need, RAM, idle, {}, "off").action == "load"  # loads anyway (and says so)
    assert decide(need, RAM, idle, {}, "evict").victims == ("old",)
    # nothing evictable covers it: refuse without evicting anything
    assert decide({"ram": 900 * MB}, RAM, idle, {}, "evict").action == "refuse"


@pytest.mark.parametrize("holders, evict_explicit, expected", [
    # least recently used first
    ([holder("b", 10, jit=True, last_used=2.0), holder("a", 10, jit=True, last_used=1.0)],
     False, ["a", "b"]),
    # ties by id
    ([holder("b", 10, jit=True, last_used=1.0), holder("a", 10, jit=True, last_used=1.0)],
     False, ["a", "b"]),
    # never one that is loading or leaving
    ([holder("l", 10, jit=True, state="loading"), holder("u", 10, jit=True, state="unloading"),
      holder("x", 10, jit=True)], False, ["x"]),
    # explicitly loaded ones only with LMHOST_EVICT_EXPLICIT
    ([holder("e", 10, last_used=0.0), holder("j", 10, jit=True, last_used=5.0)], False, ["j"]),
    ([holder("e", 10, last_used=0.0), holder("j", 10, jit=True, last_used=5.0)], True, ["e", "j"]),
])
def test_eviction_candidates(holders, evict_explicit, expected):
    assert [h.id for h in eviction_candidates(holders, evict_explicit)] == expected


def test_eviction_skips_instances_that_refused_this_time():
    holders = [holder("busy", 10, jit=True, last_used=0.0), holder("idle", 10, jit=True, last_used=9.0)]
    assert [h.id for h in eviction_candidates(holders, False, {"busy"})] == ["idle"]


@pytest.mark.parametrize("missing, sizes, expected", [
    (100, [150, 50], ("a",)),          # the least recently used one is enough
    (100, [60, 50, 300], ("a", "b")),  # LRU order, just enough of them
    (100, [60, 30], None),             # all of them are not enough: evict none
    (100, [100], ("a",)),
])
def test_pick_victims_takes_the_shortest_lru_prefix(missing, sizes, expected):
    candidates = [holder(chr(ord("a") + i), size, used=size, jit=True) for i, size in enumerate(sizes)]
    short = (Shortfall("ram", 1000 * MB, (1000 - missing) * MB),)
    assert pick_victims(short, candidates) == expected


def test_victims_cover_every_short_pool():
    short = (Shortfall("gpu", 500 * MB, 400 * MB), Shortfall("ram", 300 * MB, 250 * MB))
    a = Holder("a", "loaded", {"gpu": 200 * MB, "ram": 10 * MB}, None, True, 1.0)
    b = Holder("b", "loaded", {"gpu": 0, "ram": 60 * MB}, None, True, 2.0)
    assert pick_victims(short, [a, b]) == ("a", "b")
    assert pick_victims(short, [a]) is None


def test_eviction_makes_room_for_loads_in_flight_too():
    # 600 free, a load of 300 in flight: 300 left; a load of 500 must evict 200+ of idle ones
    holders = [holder("loading", 300, state="loading"),
               holder("idle", 250, used=250, jit=True, last_used=1.0)]
    decision = decide({"ram": 500 * MB}, RAM, holders, {}, "evict")
    assert (decision.action, decision.victims) == ("evict", ("idle",))


def test_the_message_names_needed_and_available_bytes():
    text = Shortfall("ram", 300 * 2**20, 100 * 2**20).describe()
    assert text == ("it needs 314,572,800 bytes (300.0 MiB) of RAM and 104,857,600 bytes "
                    "(100.0 MiB) are available")
    assert "and 0 bytes" in Shortfall("gpu", 10, -5).describe()


def test_limits_apply_to_the_pool_models_live_in():
    assert limits("gpu", 5) == {"gpu": 5} and limits("cpu", 5) == {"ram": 5}
    assert limits("cpu", 0) == {}


@pytest.mark.parametrize("before, now, size, back", [
    (100, 100, 80, False), (100, 159, 80, False), (100, 160, 80, True), (100, 500, 80, True),
])
def test_memory_back_once_most_of_the_unloaded_use_shows_free(before, now, size, back):
    assert memory_back(before, now, size) is back
