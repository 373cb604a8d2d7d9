"""The catalog's reading of LM Studio's layout (API.md "Model references") and its cache."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import write_gguf
from workers.catalog import CACHE_VERSION, Catalog, group_gguf_files, model_key
from workers.errors import ModelNotFound
from workers.gguf_header import read_header


def _keys(catalog):
    return [m.key for m in catalog.list_models()]


def test_model_key_rule():
    assert model_key("Qwen3-8B-GGUF") == "qwen3-8b"
    assert model_key("gemma-3-270m-it-qat-gguf") == "gemma-3-270m-it-qat"
    assert model_key("Plain") == "plain"


def test_grouping_of_splits_mmproj_and_singles():
    sets, vision, rejected = group_gguf_files([
        "m-Q4_0.gguf", "big-00002-of-00002.gguf", "big-00001-of-00002.gguf",
        "mmproj-model-f16.gguf", "half-00001-of-00003.gguf"])
    assert sets == [["m-Q4_0.gguf"], ["big-00001-of-00002.gguf", "big-00002-of-00002.gguf"]]
    assert vision is True
    assert rejected == ["half-00001-of-00003.gguf"]


def test_layout_publisher_folder_file(models_dir):
    write_gguf(models_dir / "lmstudio-community" / "Qwen3-8B-GGUF" / "Qwen3-8B-Q4_0.gguf", file_type=2)
    write_gguf(models_dir / "stray.gguf")                     # wrong depth: ignored
    write_gguf(models_dir / "pub" / "loose.gguf")             # wrong depth: ignored
    write_gguf(models_dir / "pub" / "m" / "deeper" / "x.gguf")  # below a model folder: ignored
    models = Catalog(models_dir).list_models()
    assert [(m.publisher, m.key) for m in models] == [("lmstudio-community", "qwen3-8b")]


def test_variants_default_and_references(models_dir):
    folder = models_dir / "pub" / "Model-GGUF"
    write_gguf(folder / "model-Q4_0.gguf", file_type=2)
    write_gguf(folder / "model-Q8_0.gguf", file_type=7)
    catalog = Catalog(models_dir)
    (model,) = catalog.list_models()
    assert [v.name for v in model.variants] == ["q4_0", "q8_0"]
    assert model.selected.name == "q8_0"  # most bits per weight
    assert model.quantization == ("Q8_0", 8)
    assert model.size_bytes == (folder / "model-Q8_0.gguf").stat().st_size

    for ref in ("model", "MODEL", "pub/model", "pub/Model-GGUF", " model "):
        assert catalog.resolve(ref)[1].name == "q8_0"
    assert catalog.resolve("model@q4_0")[1].files == (folder / "model-Q4_0.gguf",)
    assert catalog.resolve("pub/model@Q4_0")[1].name == "q4_0"
    with pytest.raises(ModelNotFound, match="has no variant 'q2_k'.*q4_0, q8_0"):
        catalog.resolve("model@q2_k")
    for ref in ("nope", "other/model", "../pub/model", "/etc/passwd", "pub/Model-GGUF/model-Q4_0.gguf"):
        with pytest.raises(ModelNotFound):
            catalog.resolve(ref)


def test_same_quantization_twice_is_told_apart_by_file_stem(models_dir):
    folder = models_dir / "pub" / "m"
    write_gguf(folder / "a-Q8_0.gguf", file_type=7)
    write_gguf(folder / "b-Q8_0.gguf", file_type=7)
    (model,) = Catalog(models_dir).list_models()
    assert sorted(v.name for v in model.variants) == ["a-q8_0", "b-q8_0"]


def test_split_files_are_one_model_with_summed_size_and_params(models_dir):
    folder = models_dir / "pub" / "big"
    p1 = write_gguf(folder / "big-Q8_0-00001-of-00002.gguf", file_type=7, tensors={"a": (10, 10)})
    p2 = write_gguf(folder / "big-Q8_0-00002-of-00002.gguf", file_type=7, tensors={"b": (5, 4)})
    write_gguf(folder / "mmproj-big-f16.gguf", arch="clip")
    (model,) = Catalog(models_dir).list_models()
    assert model.size_bytes == p1.stat().st_size + p2.stat().st_size
    assert model.selected.facts.n_params == 120
    assert model.selected.files == (p1, p2)
    assert model.vision is True
    assert len(model.variants) == 1


def test_key_collision_across_publishers_uses_publisher_key(models_dir, caplog):
    write_gguf(models_dir / "alice" / "tiny-GGUF" / "t.gguf")
    write_gguf(models_dir / "bob" / "tiny" / "t.gguf")
    write_gguf(models_dir / "bob" / "Tiny-gguf" / "t.gguf")  # same publisher and key as bob/tiny
    catalog = Catalog(models_dir)
    assert _keys(catalog) == ["alice/tiny", "bob/tiny"]
    assert catalog.resolve("alice/tiny")[0].publisher == "alice"
    assert "key 'bob/tiny' is taken" in caplog.text


def test_mlx_folder_is_listed_with_format_mlx(models_dir):
    folder = models_dir / "mlx-community" / "Qwen3-4B-4bit"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen3", "max_position_embeddings": 40960,
        "quantization": {"group_size": 64, "bits": 4}}))
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    (model,) = Catalog(models_dir).list_models()
    assert (model.format, model.key, model.architecture) == ("mlx", "qwen3-4b-4bit", "qwen3")
    assert model.quantization == ("4bit", 4)
    assert (model.size_bytes, model.max_context_length) == (1000, 40960)


def test_warm_listing_parses_nothing_and_a_changed_file_is_parsed_again(models_dir, tmp_path):
    calls = []

    def counting_reader(path):
        calls.append(path)
        return read_header(path)

    a = write_gguf(models_dir / "p" / "a" / "a.gguf", context_length=100)
    write_gguf(models_dir / "p" / "b" / "b.gguf")
    catalog = Catalog(models_dir, tmp_path / "state", read_header=counting_reader)
    (tmp_path / "state").mkdir()
    first = catalog.list_models()
    assert len(calls) == 2
    assert catalog.list_models() is first  # nothing changed: the same snapshot, nothing parsed
    assert len(calls) == 2

    write_gguf(a, context_length=200)
    os.utime(a, ns=(1, 1))  # a new mtime even on filesystems with coarse timestamps
    models = catalog.list_models()
    assert calls[2:] == [a]
    assert models[0].max_context_length == 200

    # a new process finds the facts in the on-disk cache
    fresh = Catalog(models_dir, tmp_path / "state", read_header=counting_reader)
    assert [m.key for m in fresh.list_models()] == ["a", "b"]
    assert len(calls) == 3


def test_a_removed_model_disappears(models_dir):
    path = write_gguf(models_dir / "p" / "a" / "a.gguf")
    catalog = Catalog(models_dir)
    assert _keys(catalog) == ["a"]
    path.unlink()
    assert _keys(catalog) == []


def test_damaged_disk_cache_costs_only_a_cold_listing(models_dir, tmp_path):
    write_gguf(models_dir / "p" / "a" / "a.gguf")
    state = tmp_path / "state"
    state.mkdir()
    (state / "catalog-cache.json").write_text("{not json")
    assert _keys(Catalog(models_dir, state)) == ["a"]
    assert json.loads((state / "catalog-cache.json").read_text())["version"] == CACHE_VERSION
