"""SDK load config -> the REST load request, and back (pure)."""

from __future__ import annotations

import pytest

from app.sdk.framing import SdkError
from app.sdk.loadconfig import kv_fields, load_request, sdk_key, ttl_seconds


def stack(*fields, more_layers=()):
    layers = [{"layerName": "apiOverride",
               "config": {"fields": [{"key": k, "value": v} for k, v in fields]}}]
    return {"layers": layers + list(more_layers)}


def test_every_supported_key_maps_to_the_rest_field():
    request = load_request("llm", stack(
        ("llm.load.contextLength", 1024),
        ("llm.load.llama.acceleration.offloadRatio", 0.5),
        ("llm.load.llama.flashAttention", True),
        ("llm.load.llama.evalBatchSize", 64),
        ("llm.load.numExperts", 2),
        ("llm.load.offloadKVCacheToGpu", False),
        ("llm.load.seed", {"checked": True, "value": 42}),
    ), model="tiny-llama", identifier="a", ttl=60)
    assert request == {"model": "tiny-llama", "identifier": "a", "ttl": 60, "context_length": 1024,
                       "gpu_offload": 0.5, "flash_attention": True, "eval_batch_size": 64,
                       "num_experts": 2, "offload_kv_cache_to_gpu": False, "seed": 42}


def test_what_the_clients_send_along_is_accepted_when_it_asks_for_lmhost_s_behaviour():
    # Python sends the default GPU split with any gpu setting; TS sends autoFit false with
    # contextLength; an unchecked seed means "no seed"
    request = load_request("llm", stack(
        ("load.gpuSplitConfig", {"strategy": "evenly", "disabledGpus": [], "priority": [],
                                 "customRatio": []}),
        ("llm.load.llama.autoFit", False), ("llm.load.mlx.autoFit", False),
        ("llm.load.seed", {"checked": False, "value": 0}),
        ("llm.load.llama.acceleration.offloadRatio", "max")), model="m")
    assert request == {"model": "m", "gpu_offload": "max"}
    assert load_request("llm", None, model="m") == {"model": "m"}
    assert load_request("embedding", stack(("embedding.load.contextLength", 256)),
                        model="e") == {"model": "e", "context_length": 256}


def test_later_layers_override_earlier_ones():
    later = {"layerName": "second", "config": {"fields": [
        {"key": "llm.load.contextLength", "value": 256}]}}
    request = load_request("llm", stack(("llm.load.contextLength", 1024), more_layers=[later]),
                           model="m")
    assert request["context_length"] == 256


@pytest.mark.parametrize("namespace, fields, key", [
    ("llm", [("llm.load.contextLength", "1024")], "llm.load.contextLength"),
    ("llm", [("llm.load.contextLength", 0)], "llm.load.contextLength"),
    ("llm", [("llm.load.llama.evalBatchSize", 1.5)], "llm.load.llama.evalBatchSize"),
    ("llm", [("llm.load.llama.flashAttention", "yes")], "llm.load.llama.flashAttention"),
    ("llm", [("llm.load.llama.acceleration.offloadRatio", 2)],
     "llm.load.llama.acceleration.offloadRatio"),
    ("llm", [("llm.load.llama.acceleration.offloadRatio", "half")],
     "llm.load.llama.acceleration.offloadRatio"),
    ("llm", [("llm.load.numExperts", 0)], "llm.load.numExperts"),
    ("llm", [("llm.load.offloadKVCacheToGpu", 1)], "llm.load.offloadKVCacheToGpu"),
    ("llm", [("llm.load.seed", 5)], "llm.load.seed"),
    ("llm", [("llm.load.seed", {"checked": True, "value": "x"})], "llm.load.seed"),
    ("llm", [("llm.load.llama.tryMmap", True)], "llm.load.llama.tryMmap"),
    ("llm", [("llm.load.llama.autoFit", True)], "llm.load.llama.autoFit"),
    ("llm", [("embedding.load.contextLength", 5)], "embedding.load.contextLength"),
    ("llm", [("load.gpuSplitConfig", {"strategy": "priorityOrder", "disabledGpus": [],
                                      "priority": [1], "customRatio": []})], "load.gpuSplitConfig"),
    ("embedding", [("embedding.load.llama.flashAttention", True)],
     "embedding.load.llama.flashAttention"),
])
def test_a_bad_value_or_an_unsupported_key_is_an_error_naming_the_key(namespace, fields, key):
    with pytest.raises(SdkError) as info:
        load_request(namespace, stack(*fields), model="m")
    assert info.value.title.startswith(key + ":")


def test_call_fields_are_validated_and_named_as_the_sdk_names_them():
    with pytest.raises(SdkError, match="^identifier:"):
        load_request("llm", None, model="m", identifier="bad\x01id")
    with pytest.raises(SdkError, match="^modelKey:"):
        load_request("llm", None, model="")
    with pytest.raises(SdkError, match="loadConfigStack"):
        load_request("llm", {"layers": "x"}, model="m")
    with pytest.raises(SdkError, match="loadConfigStack"):
        load_request("llm", {"layers": [{"config": {"fields": [{"value": 1}]}}]}, model="m")


def test_ttl_milliseconds_become_whole_seconds_rounded_up():
    assert ttl_seconds(None) is None
    assert (ttl_seconds(1), ttl_seconds(1000), ttl_seconds(3_600_000), ttl_seconds(1001)) == (1, 1, 3600, 2)
    for bad in (0, -5, 1.5, "60", True):
        with pytest.raises(SdkError, match="ttlMs"):
            ttl_seconds(bad)


def test_applied_config_back_to_kv_fields():
    applied = {"context_length": 2048, "eval_batch_size": 512, "flash_attention": False,
               "offload_kv_cache_to_gpu": True, "num_experts": 2, "seed": 7, "gpu_offload": "max"}
    fields = {f["key"]: f["value"] for f in kv_fields("llm", applied)}
    assert fields == {"llm.load.contextLength": 2048, "llm.load.llama.evalBatchSize": 512,
                      "llm.load.llama.flashAttention": False, "llm.load.offloadKVCacheToGpu": True,
                      "llm.load.numExperts": 2, "llm.load.seed": {"checked": True, "value": 7},
                      "llm.load.llama.acceleration.offloadRatio": "max"}
    assert kv_fields("embedding", {"context_length": 512}) == [
        {"key": "embedding.load.contextLength", "value": 512}]
    # the round trip: what getLoadConfig reports loads the same again
    assert load_request("llm", {"layers": [{"layerName": "x", "config": {"fields": kv_fields(
        "llm", applied)}}]}, model="m") == {"model": "m", **applied}


def test_sdk_key_names_rest_fields_as_the_sdk_does():
    assert sdk_key("llm", "context_length") == "llm.load.contextLength"
    assert sdk_key("embedding", "gpu_offload") == "embedding.load.llama.acceleration.offloadRatio"
    assert sdk_key("llm", "num_experts") == "llm.load.numExperts"
    assert (sdk_key("llm", "ttl"), sdk_key("llm", "model")) == ("ttlMs", "modelKey")
