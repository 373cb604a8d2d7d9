from __future__ import annotations

import pytest

from workers import quantization
from workers.gguf_header import GgufHeader, TensorInfo
from workers.model_facts import facts_from_header, params_string, readable_name


@pytest.mark.parametrize("n, text", [
    (0, None), (950, "950"), (403_072, "403K"), (270_000_000, "270M"), (1_540_000_000, "1.5B"),
    (7_241_000_000, "7.2B"), (13_000_000_000, "13B"), (8_030_000_000, "8B"), (1_000_000, "1M"),
])
def test_params_string(n, text):
    assert params_string(n) == text


@pytest.mark.parametrize("folder, name", [
    ("gemma-3-270m-it-qat-GGUF", "Gemma 3 270m It Qat"),
    ("Qwen3-8B-GGUF", "Qwen3 8B"),
    ("nomic_embed_text", "Nomic Embed Text"),
    ("x", "X"),
])
def test_readable_name(folder, name):
    assert readable_name(folder) == name


def _header(meta, tensors=()):
    return GgufHeader(3, meta, tuple(tensors))


def test_type_from_architecture_and_pooling():
    assert facts_from_header(_header({"general.architecture": "bert"})).is_embedding
    assert facts_from_header(_header({"general.architecture": "nomic-bert"})).is_embedding
    # a decoder converted for embeddings carries a pooling type
    assert facts_from_header(_header({"general.architecture": "qwen3", "qwen3.pooling_type": 3})).is_embedding
    assert not facts_from_header(_header({"general.architecture": "qwen3", "qwen3.pooling_type": 0})).is_embedding
    assert not facts_from_header(_header({"general.architecture": "llama"})).is_embedding


def test_tool_use_from_template():
    tool = "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}"
    assert facts_from_header(_header({"tokenizer.chat_template": tool})).tool_use
    assert not facts_from_header(_header({"tokenizer.chat_template": "{{ messages }}"})).tool_use
    assert not facts_from_header(_header({})).tool_use


def test_quantization_from_file_type_else_from_tensors():
    q4 = facts_from_header(_header({"general.file_type": 2}))
    assert q4.quantization == ("Q4_0", 4)
    guessed = facts_from_header(_header({"general.file_type": 15 | 1024}))  # LLAMA_FTYPE_GUESSED
    assert guessed.quantization == ("Q4_K_M", 4)
    tensors = [TensorInfo("w1", (64, 64), 8), TensorInfo("w2", (64, 32), 8),
               TensorInfo("norm", (64,), 0), TensorInfo("w3", (16, 16), 1)]
    assert facts_from_header(_header({}, tensors)).quantization == ("Q8_0", 8)
    assert facts_from_header(_header({})).quantization is None


def test_wrong_value_types_are_ignored_not_trusted():
    facts = facts_from_header(_header({"general.architecture": "llama", "llama.context_length": "big",
                                       "general.name": 5, "general.file_type": True}))
    assert facts.context_length is None and facts.name is None and facts.quantization is None


def test_every_file_type_has_nominal_bits_in_its_name():
    for name, bits in quantization.FILE_TYPES.values():
        assert str(bits) in name or name.startswith(("F", "BF", "MXFP")), name
