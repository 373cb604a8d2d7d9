from __future__ import annotations

from workers import policy


def test_default_identifier():
    assert policy.default_identifier("openai/gpt-oss-20b", set()) == "openai/gpt-oss-20b"
    assert policy.default_identifier("m", {"m"}) == "m:2"
    assert policy.default_identifier("m", {"m", "m:2", "m:4"}) == "m:3"


def _row(id_, state, created, key="m", variant="q8_0"):
    return {"id": id_, "state": state, "created": created, "model_key": key, "variant": variant}


def test_pick_reusable_prefers_loaded_then_oldest_and_never_unloading():
    rows = [_row("a", "loading", 1), _row("b", "loaded", 3), _row("c", "loaded", 2),
            _row("d", "unloading", 0), _row("e", "loaded", 0, variant="f16")]
    assert policy.pick_reusable(rows, "m", "q8_0")["id"] == "c"
    assert policy.pick_reusable(rows[:1] + rows[3:4], "m", "q8_0")["id"] == "a"
    assert policy.pick_reusable(rows[3:4], "m", "q8_0") is None
    assert policy.pick_reusable(rows, "other", "q8_0") is None


def test_ttl_expired_only_when_idle_long_enough():
    idle = {"busy": False, "queued": 0, "last_used": 100.0, "now": 160.0}
    assert policy.ttl_expired(60, idle)
    assert not policy.ttl_expired(61, idle)
    assert not policy.ttl_expired(None, idle)
    assert not policy.ttl_expired(60, {**idle, "busy": True})
    assert not policy.ttl_expired(60, {**idle, "queued": 1})
    assert policy.idle_for(idle) == 60.0  # what eviction orders by, least recently used first
    assert policy.idle_for({**idle, "busy": True}) == 0.0  # serving: used right now


def test_jit_evictions_are_the_loaded_jit_instances():
    rows = [{"id": "a", "jit": True, "state": "loaded"}, {"id": "b", "jit": False, "state": "loaded"},
            {"id": "c", "jit": True, "state": "loading"}, {"id": "new", "jit": True, "state": "loading"},
            {"id": "d", "jit": True, "state": "unloading"}]
    assert [r["id"] for r in policy.jit_evictions(rows)] == ["a"]


def test_idle_and_least_busy_order():
    assert policy.idle({"busy": False, "queued": 0})
    assert not policy.idle({"busy": True, "queued": 0})
    statuses = [("busy", {"busy": True, "queued": 0, "last_used": 1.0}),
                ("recent", {"busy": False, "queued": 0, "last_used": 9.0}),
                ("old", {"busy": False, "queued": 0, "last_used": 2.0}),
                ("queued", {"busy": True, "queued": 3, "last_used": 0.0})]
    assert policy.pick_least_busy(statuses) == ["old", "recent", "busy", "queued"]


def test_instances_of_matches_references_as_the_catalog_does():
    rows = [{"id": "a", "model_key": "tiny", "variant": "q8_0", "model_entry": {"publisher": "Pub"}},
            {"id": "b", "model_key": "tiny", "variant": "f16", "model_entry": {"publisher": "Pub"}},
            {"id": "c", "model_key": "other", "variant": "f16", "model_entry": {}}]
    ids = lambda ref: [r["id"] for r in policy.instances_of(rows, ref)]  # noqa: E731
    assert ids("tiny") == ["a", "b"] and ids("TINY-GGUF") == ["a", "b"]
    assert ids("pub/tiny") == ["a", "b"] and ids("tiny@F16") == ["b"]
    assert ids("tiny@q4_0") == [] and ids("nope") == [] and ids("x/tiny") == []


def test_sdk_load_progress_goes_out_paced_with_the_first_step_and_the_end_always():
    step = policy.PROGRESS_INTERVAL
    assert policy.progress_due(0.01, 0.0, None, now=0.0)  # the first step after the opening 0.0
    assert not policy.progress_due(0.02, 0.01, 0.0, now=step / 2)  # too soon
    assert policy.progress_due(0.02, 0.01, 0.0, now=step)
    assert policy.progress_due(1.0, 0.5, 0.0, now=0.001)  # the end, however soon
    assert not policy.progress_due(0.5, 0.5, 0.0, now=10)  # never twice, never backwards
    assert not policy.progress_due(0.4, 0.5, 0.0, now=10)
    # a load's 50 steps in 80 ms, as a 160 MB model read into huge pages reports them
    sent, sent_at, out = 0.0, None, [0.0]
    for i in range(1, 51):
        progress, now = i / 50, i * 0.0016
        if policy.progress_due(progress, sent, sent_at, now):
            out.append(progress)
            sent, sent_at = progress, now
    assert out[:2] == [0.0, 0.02] and out[-1] == 1.0 and 4 <= len(out) <= 6
