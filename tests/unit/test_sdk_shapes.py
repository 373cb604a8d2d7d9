"""ModelInfo and instance info as the SDKs' schemas want them (pure, over small GGUF files)."""

from __future__ import annotations

from tests.helpers import write_gguf
from workers.catalog import Catalog
from app.sdk.shapes import instance_info, model_info

# what the TypeScript client's zod schemas require (it drops a result missing any of them and
# then waits forever)
TS_MODEL_INFO = {"type", "modelKey", "format", "displayName", "publisher", "path", "sizeBytes",
                 "indexedModelIdentifier", "deviceIdentifier", "maxContextLength"}
TS_LLM_INFO = TS_MODEL_INFO | {"vision", "trainedForToolUse"}
TS_INSTANCE = {"identifier", "instanceReference", "ttlMs", "lastUsedTime", "contextLength"}


def _catalog(models_dir):
    folder = models_dir / "lmstudio-community" / "Llama-3.2-1B-Instruct-GGUF"
    write_gguf(folder / "Llama-3.2-1B-Instruct-Q4_0.gguf", file_type=2, name="Llama 3.2 1B",
               context_length=8192)
    write_gguf(folder / "Llama-3.2-1B-Instruct-Q8_0.gguf", file_type=7, name="Llama 3.2 1B",
               context_length=8192)
    write_gguf(models_dir / "pub" / "emb" / "e.gguf", arch="bert", context_length=None,
               extra={"bert.pooling_type": 1})
    return Catalog(models_dir)


def test_model_info_of_an_llm(models_dir):
    (emb, llm) = _catalog(models_dir).list_models()
    info = model_info(llm, models_dir, 4096)
    assert TS_LLM_INFO <= info.keys()
    assert info["type"] == "llm" and info["modelKey"] == "llama-3.2-1b-instruct"
    assert info["path"] == info["indexedModelIdentifier"] == \
        "lmstudio-community/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q8_0.gguf"
    assert (info["format"], info["publisher"], info["deviceIdentifier"]) == ("gguf", "lmstudio-community", None)
    assert info["quantization"] == {"name": "Q8_0", "bits": 8}
    assert info["maxContextLength"] == 8192 and isinstance(info["sizeBytes"], int)
    assert info["variants"] == ["llama-3.2-1b-instruct@q4_0", "llama-3.2-1b-instruct@q8_0"]
    assert info["selectedVariant"] == "llama-3.2-1b-instruct@q8_0"
    other = model_info(llm, models_dir, 4096, llm.variants[0])
    assert other["quantization"]["bits"] == 4 and other["path"].endswith("Q4_0.gguf")


def test_optional_fields_are_left_out_not_null(models_dir):
    (emb, _) = _catalog(models_dir).list_models()
    info = model_info(emb, models_dir, 4096)
    assert TS_MODEL_INFO <= info.keys() and info["type"] == "embedding"
    assert "vision" not in info and "variants" not in info
    assert info["maxContextLength"] == 4096  # unknown: the default context length
    assert None not in (info.get("paramsString", ""), info.get("architecture", ""),
                        info.get("quantization", ""))


def test_instance_info_of_a_table_row(models_dir):
    (_, llm) = _catalog(models_dir).list_models()
    row = {"id": "llama-3.2-1b-instruct:2", "handle": "0123456789ab", "model_key": llm.key,
           "variant": "q4_0", "path": str(llm.variants[0].files[0]), "type": "llm",
           "state": "loaded", "load_config": {"context_length": 1024}, "ttl": 60,
           "created": 1000.0, "last_used": 1234.5}
    info = instance_info(row, llm, models_dir, 4096)
    assert TS_LLM_INFO | TS_INSTANCE <= info.keys()
    assert (info["identifier"], info["instanceReference"]) == ("llama-3.2-1b-instruct:2", "0123456789ab")
    assert (info["ttlMs"], info["lastUsedTime"], info["contextLength"]) == (60_000, 1_234_500, 1024)
    assert info["path"].endswith("Q4_0.gguf")  # the row's variant, not the default one
    untimed = instance_info({**row, "ttl": None, "last_used": None}, llm, models_dir, 4096)
    assert (untimed["ttlMs"], untimed["lastUsedTime"]) == (None, None)
    # the model's files were removed while it stayed loaded: still a complete info
    gone = instance_info(row, None, models_dir, 4096)
    assert TS_LLM_INFO | TS_INSTANCE <= gone.keys() and gone["modelKey"] == llm.key
