"""GET /api/v1/models over real synthetic model files, checked against values computed
independently from what was written (the synthesizer's own numbers and the filesystem),
and the HTTP contract around it (error shape, unknown routes and methods, OpenAPI)."""

from __future__ import annotations

import shutil

import pytest

from lmhost import synthetic

SEED_LLM_FIELDS = ["type", "publisher", "key", "display_name", "architecture", "quantization",
                   "size_bytes", "params_string", "loaded_instances", "max_context_length",
                   "format", "capabilities", "description"]
SEED_EMBEDDING_FIELDS = ["type", "publisher", "key", "display_name", "quantization",
                         "size_bytes", "params_string", "loaded_instances",
                         "max_context_length", "format"]
EXTENSIONS = ["variants", "selected_variant"]
NOMINAL_BITS = {"F32": 32, "F16": 16, "Q8_0": 8, "Q4_0": 4}


def expected_params(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            value = n / scale
            return (f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:.0f}") + suffix
    return str(n)


@pytest.fixture
def written(models_dir):
    d = models_dir
    return {
        "tiny-llama": synthetic.write_dense_llama(
            d / "lmhost" / "tiny-llama-GGUF" / "tiny-llama-F16.gguf", context_length=4096),
        "tool-llama": synthetic.write_dense_llama(
            d / "acme" / "Tool-Llama-GGUF" / "tool-llama-Q8_0.gguf", file_type="Q8_0",
            name=None, with_tool_template=True, size_label="1M", context_length=1024, seed=3),
        "tiny-moe": synthetic.write_moe_llama(
            d / "lmhost" / "tiny-moe-GGUF" / "tiny-moe-Q4_0.gguf", file_type="Q4_0"),
        "tiny-embed": synthetic.write_bert_embedding(
            d / "lmhost" / "tiny-embed-GGUF" / "tiny-embed-F32.gguf", file_type="F32",
            context_length=256),
    }


def test_listing_matches_the_files(client, written, models_dir):
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    models = {m["key"]: m for m in response.get_json()["models"]}
    assert sorted(models) == sorted(written)

    for key, spec in written.items():
        listed = models[key]
        assert listed["type"] == spec.kind
        assert listed["size_bytes"] == spec.path.stat().st_size
        assert listed["max_context_length"] == spec.context_length
        assert listed["quantization"] == {"name": spec.file_type,
                                          "bits_per_weight": NOMINAL_BITS[spec.file_type]}
        assert listed["params_string"] == (spec.size_label or expected_params(spec.n_params))
        assert listed["format"] == "gguf"
        assert listed["loaded_instances"] == []
        assert listed["publisher"] == spec.path.parent.parent.name
        fields = SEED_LLM_FIELDS if spec.kind == "llm" else SEED_EMBEDDING_FIELDS
        assert list(listed) == fields + EXTENSIONS, key  # absent, not null, for embeddings
        if spec.kind == "llm":
            assert listed["architecture"] == spec.architecture
            assert listed["capabilities"] == {"vision": False,
                                              "trained_for_tool_use": spec.chat_template
                                              == synthetic.TOOL_CHAT_TEMPLATE}
            assert listed["description"] is None

    assert models["tiny-llama"]["display_name"] == "Tiny Llama"
    assert models["tool-llama"]["display_name"] == "Tool Llama"  # no general.name: the folder
    assert models["tool-llama"]["capabilities"]["trained_for_tool_use"] is True
    assert models["tiny-embed"]["type"] == "embedding"


def test_variants_and_vision(client, models_dir):
    folder = models_dir / "lmhost" / "tiny-llama-GGUF"
    f16 = synthetic.write_dense_llama(folder / "tiny-llama-F16.gguf")
    synthetic.write_dense_llama(folder / "tiny-llama-Q8_0.gguf", file_type="Q8_0")
    shutil.copyfile(f16.path, folder / "mmproj-tiny-llama-f16.gguf")
    (model,) = client.get("/api/v1/models").get_json()["models"]
    assert model["variants"] == ["tiny-llama@f16", "tiny-llama@q8_0"]
    assert model["selected_variant"] == "tiny-llama@f16"
    assert model["size_bytes"] == f16.path.stat().st_size
    assert model["capabilities"]["vision"] is True


def test_new_model_appears_without_restart(client, models_dir):
    assert client.get("/api/v1/models").get_json() == {"models": []}
    synthetic.write_bert_embedding(models_dir / "p" / "e" / "e.gguf")
    assert [m["key"] for m in client.get("/api/v1/models").get_json()["models"]] == ["e"]


def test_a_bad_file_never_fails_the_listing(client, written, models_dir):
    (models_dir / "lmhost" / "broken-GGUF").mkdir()
    (models_dir / "lmhost" / "broken-GGUF" / "broken.gguf").write_bytes(b"GGUF\x03\0\0\0garbage")
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    assert "broken" not in [m["key"] for m in response.get_json()["models"]]


def _assert_error(response, status, type_):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "code", "param"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    return body["error"]


def test_unknown_routes_and_methods_get_json_errors(client):
    _assert_error(client.get("/api/v1/nope"), 404, "not_found")
    _assert_error(client.get("/v1/models/../../etc/passwd"), 404, "not_found")
    response = client.delete("/api/v1/models")
    _assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_an_unexpected_exception_is_a_json_500_without_a_trace(app, client, monkeypatch, caplog):
    def boom():
        raise RuntimeError("secret internals")
    monkeypatch.setattr(app.extensions["lmhost"].listing, "rows", boom)
    error = _assert_error(client.get("/api/v1/models"), 500, "internal_error")
    assert "secret" not in error["message"] and "request id" in error["message"]
    request_id = error["message"].split("request id ")[1].rstrip(")")
    assert request_id in caplog.text and "secret internals" in caplog.text


def test_health_and_openapi(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    spec = client.get("/openapi.json").get_json()
    assert "/api/v1/models" in spec["paths"]
    model = spec["components"]["schemas"]["Model"]["properties"]
    assert set(SEED_LLM_FIELDS) <= set(model)
