"""Model management through the official SDK clients against ``lmhost serve`` (gunicorn): one
instance table with the REST API, the load config mapped to the REST load plan, errors the
clients raise as their own, TTL, progress, atomic get-or-load; and the wire itself (keep-alive,
error frames for what is not served, malformed frames) with a raw websocket."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import lmstudio
import pytest
import requests
from simple_websocket import Client as WsClient

from tests.e2e.conftest import clean_env, start_server
from tests.e2e.sdk_support import NODE_DIR, client_env, require_node, stop, write_sdk_models
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def server():
    work = Path(tempfile.mkdtemp(prefix="lmh-", dir="/tmp"))  # state dirs hold Unix sockets
    server = start_server(work, write_sdk_models(work / "models"), "--workers", "2",
                          env=clean_env(LMHOST_INSTANCE_THREADS="1", LMHOST_UNLOAD_TIMEOUT="5"))
    try:
        yield server
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def host(server):
    """The service's host:port, with no instance loaded before and after the test."""
    unload_all(server)
    yield server.url.removeprefix("http://")
    unload_all(server)


def unload_all(server):
    for instance_id in rest_instances(server):
        requests.post(server.url + "/api/v1/models/unload", json={"instance_id": instance_id},
                      timeout=30)


def rest_instances(server) -> dict[str, dict]:
    models = server.get("/api/v1/models").json()["models"]
    return {i["id"]: {**i, "model": m["key"]} for m in models for i in m["loaded_instances"]}


def test_one_instance_table_for_rest_and_both_namespaces(server, host):
    requests.post(server.url + "/api/v1/models/load",
                  json={"model": "tiny-llama", "identifier": "from-rest"}, timeout=60)
    with lmstudio.Client(host) as client:
        assert [m.identifier for m in client.llm.list_loaded()] == ["from-rest"]
        embed = client.embedding.load_new_instance("tiny-embed", "from-sdk")
        assert rest_instances(server)["from-sdk"]["model"] == "tiny-embed"
        assert [m.identifier for m in client.embedding.list_loaded()] == ["from-sdk"]
        assert [m.identifier for m in client.llm.list_loaded()] == ["from-rest"]

        llm = client.llm.model("from-rest")  # an instance identifier: used as it is
        info = llm.get_info()
        assert (info.identifier, info.model_key, info.context_length) == ("from-rest", "tiny-llama", 2048)
        assert info.path == "lmhost/tiny-llama-GGUF/tiny-llama-F16.gguf"
        assert llm.get_context_length() == 2048 and embed.get_context_length() == 512
        assert llm.get_load_config().to_dict() == {
            "contextLength": 2048, "evalBatchSize": 512, "flashAttention": False,
            "offloadKVCacheToGpu": True}
        downloaded = {(m.model_key, m.type) for m in client.list_downloaded_models()}
        rest_models = server.get("/api/v1/models").json()["models"]
        assert downloaded == {(m["key"], m["type"]) for m in rest_models}
        assert [m.model_key for m in client.embedding.list_downloaded()] == ["tiny-embed"]

        embed.unload()
        client.llm.unload("from-rest")
    assert rest_instances(server) == {}


def test_a_model_file_path_is_a_model_reference(server, host):
    with lmstudio.Client(host) as client:
        llm = client.llm.model("lmhost/tiny-moe-GGUF/tiny-moe-F16.gguf")
        assert llm.get_info().model_key == "tiny-moe"
        assert client.llm.model("tiny-moe").identifier == llm.identifier  # the same instance
    assert len(rest_instances(server)) == 1


def test_load_config_is_the_rest_load_plan(server, host):
    config = {"contextLength": 512, "gpu": {"ratio": 0.5}, "flashAttention": True,
              "evalBatchSize": 64, "numExperts": 1, "offloadKVCacheToGpu": False, "seed": 42}
    with lmstudio.Client(host) as client:
        moe = client.llm.load_new_instance("tiny-moe", "configured", config=config)
        applied = rest_instances(server)["configured"]["config"]
        assert applied == {"context_length": 512, "eval_batch_size": 64, "flash_attention": True,
                           "num_experts": 1, "offload_kv_cache_to_gpu": False, "seed": 42}
        assert moe.get_load_config().to_dict() == {**config, "gpu": {"ratio": 0.5}}
        assert moe.get_context_length() == 512


@pytest.mark.parametrize("model, config, key", [
    ("tiny-llama", {"contextLength": 999999}, "llm.load.contextLength"),
    ("tiny-moe", {"numExperts": 9}, "llm.load.numExperts"),
    ("tiny-llama", {"gpu": {"ratio": "half"}}, "llm.load.llama.acceleration.offloadRatio"),
    ("tiny-llama", {"tryMmap": False}, "llm.load.llama.tryMmap"),
    ("tiny-llama", {"gpu": {"mainGpu": 1, "splitStrategy": "favorMainGpu"}}, "load.gpuSplitConfig"),
])
def test_a_bad_config_value_is_an_error_naming_the_key_and_loads_nothing(server, host, model,
                                                                          config, key):
    with lmstudio.Client(host) as client:
        for load in (lambda: client.llm.load_new_instance(model, config=config),
                     lambda: client.llm.model(model, config=config)):
            with pytest.raises(lmstudio.LMStudioServerError, match=key.replace(".", r"\.") + ":"):
                load()
    assert rest_instances(server) == {}


def test_errors_are_the_clients_own(server, host):
    with lmstudio.Client(host) as client:
        for missing in (lambda: client.llm.model("no-such-model"),
                        lambda: client.llm.load_new_instance("no-such-model"),
                        lambda: client.llm.unload("no-such-instance"),
                        lambda: client.embedding.unload("no-such-instance")):
            with pytest.raises(lmstudio.LMStudioModelNotFoundError):
                missing()
        with pytest.raises(lmstudio.LMStudioClientError, match="no models are currently loaded"):
            client.llm.model()  # the Python client decides this one itself
        client.llm.load_new_instance("tiny-llama", "taken")
        with pytest.raises(lmstudio.LMStudioServerError, match="'taken' already exists"):
            client.llm.load_new_instance("tiny-llama", "taken")
        with pytest.raises(lmstudio.LMStudioServerError, match="embedding model"):
            client.llm.model("tiny-embed")
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            client.embedding.unload("taken")  # an LLM instance is not in the embedding namespace
    assert list(rest_instances(server)) == ["taken"]


def test_ttl_applies_only_when_the_call_loads_and_expires_as_for_rest(server, host):
    requests.post(server.url + "/api/v1/models/load", json={"model": "tiny-llama"}, timeout=60)
    with lmstudio.Client(host) as client:
        client.llm.model("tiny-llama", ttl=1)  # already loaded: its TTL is not changed
        assert "ttl_seconds" not in rest_instances(server)["tiny-llama"]
        client.llm.load_new_instance("tiny-llama", "short-lived", ttl=1)
        assert rest_instances(server)["short-lived"]["ttl_seconds"] == 1
        wait_for(lambda: "short-lived" not in rest_instances(server), timeout=15,
                 what="the instance to expire after its 1 s TTL")
        assert [m.identifier for m in client.llm.list_loaded()] == ["tiny-llama"]


def test_load_progress_is_monotone_from_0_to_1(server, host):
    with lmstudio.Client(host) as client:
        for load in (client.llm.model, client.llm.load_new_instance):
            seen = []
            load("tiny-moe", on_load_progress=seen.append)
            assert seen[0] == 0.0 and seen[-1] == 1.0
            assert len(seen) > 2 and seen == sorted(set(seen))  # llama.cpp's own steps


def test_get_or_load_is_atomic_across_clients(server, host):
    got, errors = [], []

    def get():
        try:
            with lmstudio.Client(host) as client:
                got.append(client.llm.model("tiny-llama").identifier)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and got == ["tiny-llama"] * 6
    assert list(rest_instances(server)) == ["tiny-llama"]


def test_prediction_on_a_synthetic_model_and_config_errors_naming_the_key(server, host):
    with lmstudio.Client(host) as client:
        # loaded explicitly: a get-or-load of the embedding model would auto-evict a JIT LLM
        llm = client.llm.load_new_instance("tiny-llama")
        embed = client.embedding.load_new_instance("tiny-embed")
        result = llm.respond("Hello", config={"maxTokens": 4, "seed": 3})
        assert result.stats.predicted_tokens_count == 4
        assert result.stats.stop_reason == "maxPredictedTokensReached"
        assert llm.complete("Hello", config={"maxTokens": 2}).stats.predicted_tokens_count == 2
        assert llm.count_tokens("Hello") == len(llm.tokenize("Hello")) > 0
        assert len(embed.embed("Hello")) == 128
        for config, key in (({"maxTokens": 0}, "llm.prediction.maxPredictedTokens"),
                            ({"draftModel": "x"}, "llm.prediction.speculativeDecoding.draftModel"),
                            ({"contextOverflowPolicy": "rollingWindow"},
                             "llm.prediction.contextOverflowPolicy")):
            with pytest.raises(lmstudio.LMStudioServerError, match=key.replace(".", r"\.")):
                llm.respond("Hello", config=config)
        assert llm.get_context_length() == 2048  # the sockets still serve


def stream_fragments(host: str) -> tuple[list, object, list[float]]:
    """The fragments of one prediction, its result, and when each fragment came."""
    with lmstudio.Client(host) as client:
        llm = client.llm.load_new_instance("tiny-llama")
        stream = llm.respond_stream("Hello", config={"maxTokens": 200})
        fragments, stamps = [], []
        for fragment in stream:
            stamps.append(time.monotonic())
            fragments.append(fragment)
        return fragments, stream.result(), stamps


def test_fast_tokens_come_in_fewer_fragments_unless_the_interval_is_0(server, host, serve,
                                                                      short_tmp):
    """``LMHOST_SDK_LOCAL_FRAGMENT_MS`` (100 by default; this client is on this machine): a
    fragment gathers the tokens that came within the interval, with ``tokensCount`` saying how
    many; 0 sends every token's text at once. The tiny model makes 200 tokens in well under
    the interval's worth of each.
    ``LMHOST_SDK_FIRST_PAUSE_MS``: the second token waits that long after the first fragment,
    once (the tiny model's tokens otherwise come about a millisecond apart)."""
    gathered, result, _ = stream_fragments(host)
    per_token_server = serve(write_sdk_models(short_tmp / "models"),
                             env=clean_env(LMHOST_SDK_LOCAL_FRAGMENT_MS="0",
                                           LMHOST_SDK_FRAGMENT_MS="0",
                                           LMHOST_SDK_FIRST_PAUSE_MS="50",
                                           LMHOST_INSTANCE_THREADS="1"))
    per_token, same, stamps = stream_fragments(per_token_server.url.removeprefix("http://"))
    # the client may stamp the first fragment late, so less than the 50 ms; 0.24 ms without
    assert stamps[1] - stamps[0] >= 0.025
    assert stamps[-1] - stamps[1] < 198 * 0.05 / 2  # not after every fragment
    # a client through a proxy (whose forwarded address is not trusted) is not on this
    # machine: it does not share the model's cores, so its second token does not wait
    proxied = fragment_stamps(per_token_server.url.removeprefix("http://"),
                              {"X-Forwarded-For": "203.0.113.9"})
    assert len(proxied) == 200 and proxied[1] - proxied[0] < 0.025
    assert result.stats.predicted_tokens_count == same.stats.predicted_tokens_count == 200
    assert "".join(f.content for f in gathered) == result.content
    assert "".join(f.content for f in per_token) == same.content
    for fragments in (gathered, per_token):
        assert sum(f.tokens_count for f in fragments) == 200
    assert gathered[0].tokens_count == 1  # the first text is not held back
    assert len(gathered) < 50 < len(per_token)


def test_a_client_on_this_machine_gets_its_own_fragment_interval(serve, short_tmp):
    """``LMHOST_SDK_LOCAL_FRAGMENT_MS`` (100 by default) gathers the fragments of a client on
    this machine, which shares the model's cores; ``LMHOST_SDK_FRAGMENT_MS`` those of a client
    elsewhere (here through a proxy whose forwarded address is not trusted). The tiny model's
    200 tokens come about a millisecond apart."""
    both = serve(write_sdk_models(short_tmp / "models"),
                 env=clean_env(LMHOST_SDK_LOCAL_FRAGMENT_MS="1000", LMHOST_SDK_FRAGMENT_MS="0",
                               LMHOST_SDK_FIRST_PAUSE_MS="0", LMHOST_INSTANCE_THREADS="1"))
    host = both.url.removeprefix("http://")
    with lmstudio.Client(host) as client:
        client.llm.load_new_instance("tiny-llama")
    local = fragment_stamps(host, {})
    elsewhere = fragment_stamps(host, {"X-Forwarded-For": "203.0.113.9"})
    assert len(elsewhere) == 200  # one a token
    # the first at once, then the text that came within a second of the one before it
    assert 2 <= len(local) < 10, len(local)


def test_typescript_client_model_management(server, host):
    node = require_node()
    proc = subprocess.run([node, str(NODE_DIR / "api.mjs"), f"ws://{host}"], capture_output=True,
                          text=True, timeout=120, env=client_env(), cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    progress = seen["progress"]
    assert progress[0] == 0 and progress[-1] == 1 and progress == sorted(set(progress))
    assert seen["second"]["identifier"] == "ts-moe" and seen["second"]["context"] == 512
    second_config = seen["second"]["config"]
    assert {k: second_config[k] for k in ("contextLength", "evalBatchSize", "flashAttention",
                                          "seed", "offloadKVCacheToGpu", "numExperts")} == {
        "contextLength": 512, "evalBatchSize": 64, "flashAttention": True, "seed": 7,
        "offloadKVCacheToGpu": False, "numExperts": 1}
    assert second_config["gpu"]["ratio"] == 0.5
    assert seen["llmLoaded"] == ["tiny-llama", "ts-moe"] and seen["embeddingLoaded"] == ["tiny-embed"]
    assert seen["embedInfo"]["type"] == "embedding" and seen["info"]["identifier"] == "tiny-llama"
    assert seen["any"] == "tiny-llama"
    assert ["tiny-embed", "embedding"] in seen["downloaded"] and ["tiny-moe", "llm"] in seen["downloaded"]
    errors = seen["errors"]
    assert "no-such-model" in errors["notFound"] and "already exists" in errors["duplicate"]
    assert "llm.load.contextLength" in errors["badConfig"]
    assert "embedding model" in errors["wrongNamespace"] and "no-such-instance" in errors["unloadUnknown"]
    assert "not supported by lmhost" in errors["files"], errors["files"]
    assert seen["predicted"]["stats"]["predictedTokensCount"] == 4 and seen["embedded"] == 128
    assert seen["afterUnload"] == 0 and "No loaded model" in seen["noneLoaded"]
    assert rest_instances(server) == {}


# -- the wire, with a raw websocket ------------------------------------------------------------

AUTH = {"authVersion": 1, "clientIdentifier": "guest:test", "clientPasskey": "secret"}


def connect(host: str, namespace: str, headers: dict | None = None) -> WsClient:
    ws = WsClient.connect(f"ws://{host}/{namespace}", headers=headers)
    ws.send(json.dumps(AUTH))
    assert json.loads(ws.receive(timeout=10)) == {"success": True}
    return ws


def ask(ws: WsClient, frame: dict) -> dict:
    ws.send(json.dumps(frame))
    answer = ws.receive(timeout=30)
    assert answer is not None, f"no answer to {frame}"
    return json.loads(answer)


def fragment_stamps(host: str, headers: dict) -> list[float]:
    """When each fragment of a 200-token prediction of the loaded tiny model came, read on a
    raw socket opened with `headers`."""
    ws = connect(host, "llm", headers)
    try:
        came: list[float] = []
        frames = channel_frames(ws, {
            "type": "channelCreate", "endpoint": "predict", "channelId": 0,
            "creationParameter": {
                "modelSpecifier": {"type": "query", "query": {"identifier": "tiny-llama"}},
                "history": {"messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Hello"}]}]},
                "predictionConfigStack": {"layers": [{
                    "layerName": "apiOverride", "config": {"fields": [{
                        "key": "llm.prediction.maxPredictedTokens",
                        "value": {"checked": True, "value": 200}}]}}]}}}, came)
        assert frames[-1]["type"] == "channelClose", frames[-1]
        return [at for frame, at in zip(frames, came) if frame["type"] == "channelSend"
                and frame["message"]["type"] == "fragment"]
    finally:
        ws.close()


def channel_frames(ws: WsClient, frame: dict, came: list[float] | None = None) -> list[dict]:
    """Every frame of a channel until it closes or errors; `came`: gets when each arrived."""
    ws.send(json.dumps(frame))
    frames = []
    while not frames or frames[-1]["type"] not in ("channelClose", "channelError"):
        answer = ws.receive(timeout=30)
        assert answer is not None, f"the channel did not end: {frames}"
        if came is not None:
            came.append(time.monotonic())
        frames.append(json.loads(answer))
    return frames


def test_wire_keep_alive_and_clean_refusals(server, host):
    ws = connect(host, "llm")
    try:
        assert ask(ws, {"type": "keepAlive"}) == {"type": "keepAliveAck"}
        assert ask(ws, {"type": "rpcCall", "endpoint": "listLoaded", "callId": 0}) == {
            "type": "rpcResult", "callId": 0, "result": []}
        # getModelInfo that finds nothing and must not throw: a void result, no "result": null
        assert ask(ws, {"type": "rpcCall", "endpoint": "getModelInfo", "callId": 1, "parameter": {
            "specifier": {"type": "query", "query": {"identifier": "x"}},
            "throwIfNotFound": False}}) == {"type": "rpcResult", "callId": 1}
        for frame in ({"type": "rpcCall", "endpoint": "preloadDraftModel", "callId": 2},
                      {"type": "channelCreate", "endpoint": "generateWithGenerator", "channelId": 3,
                       "creationParameter": {}},
                      {"type": "signalSubscribe", "endpoint": "x", "subscribeId": 4,
                       "creationParameter": None}):
            answer = ask(ws, frame)
            assert answer["type"] in ("rpcError", "channelError", "signalError")
            assert "not supported by lmhost" in answer["error"]["title"]
        assert ask(ws, {"type": "rpcCall", "callId": "five"})["type"] == "communicationWarning"
        # a prediction for no loaded model: the clients' not-found error, and the channel ends
        frames = channel_frames(ws, {"type": "channelCreate", "endpoint": "predict",
                                     "channelId": 5, "creationParameter": {
                                         "modelSpecifier": {"type": "query", "query": {
                                             "identifier": "nothing-loaded"}},
                                         "history": {"messages": []}}})
        assert frames[-1]["type"] == "channelError"
        assert frames[-1]["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"
        # a config value of the wrong type, which the official clients would not send
        frames = channel_frames(ws, {"type": "channelCreate", "endpoint": "loadModel",
                                     "channelId": 6, "creationParameter": {
                                         "modelKey": "tiny-llama", "loadConfigStack": {"layers": [
                                             {"layerName": "apiOverride", "config": {"fields": [
                                                 {"key": "llm.load.contextLength",
                                                  "value": "2048"}]}}]}}})
        assert frames[-1]["type"] == "channelError"
        assert frames[-1]["error"]["title"].startswith("llm.load.contextLength:")
        assert ask(ws, {"type": "keepAlive"}) == {"type": "keepAliveAck"}  # still serving
    finally:
        ws.close()
    files = connect(host, "files")  # a namespace lmhost does not serve: errors, not a hang
    try:
        answer = ask(files, {"type": "rpcCall", "endpoint": "getLocalFileAbsolutePath",
                             "callId": 0, "parameter": {"fileName": "x"}})
        assert answer["type"] == "rpcError" and "'files' namespace" in answer["error"]["title"]
    finally:
        files.close()
    plain = requests.get(server.url + "/llm", timeout=10)
    assert plain.status_code == 400 and "websocket" in plain.json()["error"]["message"]
    assert server.get("/lmstudio-greeting").json() == {"lmstudio": True}


def test_wire_channel_frames_of_a_load(server, host):
    ws = connect(host, "embedding")
    try:
        frames = channel_frames(ws, {"type": "channelCreate", "endpoint": "loadModel",
                                     "channelId": 0, "creationParameter": {
                                         "modelKey": "tiny-embed", "identifier": "wire",
                                         "ttlMs": 60_000, "loadConfigStack": {"layers": []}}})
        kinds = [f["message"]["type"] if f["type"] == "channelSend" else f["type"] for f in frames]
        assert kinds[0] == "resolved" and kinds[-2:] == ["success", "channelClose"]
        progress = [f["message"]["progress"] for f in frames[1:-2]]
        assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(set(progress))
        info = frames[-2]["message"]["info"]
        assert (info["identifier"], info["ttlMs"], info["type"]) == ("wire", 60_000, "embedding")
        frames = channel_frames(ws, {"type": "channelCreate", "endpoint": "getOrLoad",
                                     "channelId": 1, "creationParameter": {
                                         "identifier": "wire", "loadConfigStack": {"layers": []}}})
        assert [f["type"] for f in frames] == ["channelSend", "channelClose"]
        assert frames[0]["message"]["type"] == "alreadyLoaded"
        assert ask(ws, {"type": "rpcCall", "endpoint": "unloadModel", "callId": 2,
                        "parameter": {"identifier": "wire"}}) == {"type": "rpcResult", "callId": 2}
    finally:
        ws.close()
