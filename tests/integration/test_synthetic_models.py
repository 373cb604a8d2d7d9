"""Synthetic GGUF models (lmhost/synthetic.py) really load and run in llama.cpp."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("workers") is None:  # run from elsewhere than the repo root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("GGML_NO_BACKTRACE", "1")

import gguf  # noqa: E402 - hard dependencies: a missing one must fail, not skip
import llama_cpp  # noqa: E402

from lmhost.synthetic import (  # noqa: E402
    SyntheticModel,
    write_bench_model,
    write_bert_embedding,
    write_demo_models,
    write_dense_llama,
    write_moe_llama,
    write_vocab_heavy_llama,
)

MB = 1_000_000


@pytest.fixture(autouse=True, scope="module")
def _load_like_instances(llama_in_process):
    """Every model here loads as instances load them: extra buffer types as the engine probe
    decided for this host (on a host that traps AMX, they would die with SIGILL)."""


@contextlib.contextmanager
def loaded(path: Path, *, n_ctx: int = 256, **kwargs):
    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=2, verbose=False, **kwargs)
    try:
        yield llm
    finally:
        llm.close()


def is_printable_ascii(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)


def assert_exact_ascii_completion(llm, n: int, **sampling) -> str:
    out = llm("Hello, my name is", max_tokens=n, **sampling)
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] == n, out
    assert choice["finish_reason"] == "length", out
    assert choice["text"] and is_printable_ascii(choice["text"]), repr(choice["text"])
    return choice["text"]


def read_gguf(path: Path):
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("tokenizer.ggml.")}
    fields["_n_tokens"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    return reader, fields


# --------------------------------------------------------------------------- module


def test_module_imports_neither_flask_nor_llama_cpp_and_is_lazy():
    code = (
        "import sys, lmhost.synthetic as s; "
        "bad = [m for m in ('flask', 'llama_cpp', 'gguf') if m in sys.modules]; "
        "assert not bad, bad; print(s.FILE_TYPES)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Q8_0" in proc.stdout


def test_unknown_file_type_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_dense_llama(tmp_path / "x.gguf", file_type="Q3_K_M")
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_dense_llama(tmp_path / "a.gguf", seed=3)
    b = write_dense_llama(tmp_path / "b.gguf", seed=3)
    c = write_dense_llama(tmp_path / "c.gguf", seed=4)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]  # no .part left


# --------------------------------------------------------------------------- sizes, params, metadata

TINY_WRITERS = {
    "dense": lambda p: write_dense_llama(p),
    "dense-q8": lambda p: write_dense_llama(p, file_type="Q8_0"),
    "dense-f32": lambda p: write_dense_llama(p, file_type="F32"),
    "moe": lambda p: write_moe_llama(p),
    "moe-q8": lambda p: write_moe_llama(p, file_type="Q8_0"),
    "bert": lambda p: write_bert_embedding(p),
    "bert-q8": lambda p: write_bert_embedding(p, file_type="Q8_0"),
}


@pytest.mark.parametrize("which", sorted(TINY_WRITERS))
def test_tiny_file_is_small_and_counts_params(tmp_path, which):
    path = tmp_path / f"{which}.gguf"
    model = TINY_WRITERS[which](path)
    assert isinstance(model, SyntheticModel)
    assert model.path == path and path.is_file()
    assert path.stat().st_size < 3 * MB

    reader, kv = read_gguf(path)
    assert model.n_params == sum(int(t.n_elements) for t in reader.tensors)
    arch = model.architecture
    assert kv["general.architecture"] == arch
    assert kv["general.name"] == model.name
    assert kv[f"{arch}.context_length"] == model.context_length
    assert kv["general.file_type"] == gguf.LlamaFileType[
        {"F32": "ALL_F32"}.get(model.file_type, "MOSTLY_" + model.file_type)]
    assert "general.size_label" not in kv and model.size_label is None
    assert kv["_n_tokens"] == model.vocab_size
    n_embd = kv[f"{arch}.embedding_length"]
    assert n_embd // kv[f"{arch}.attention.head_count"] >= 32
    for key in ("block_count", "feed_forward_length", "attention.head_count_kv"):
        assert f"{arch}.{key}" in kv

    types = {t.name: t.tensor_type.name for t in reader.tensors}
    expected_weight_type = model.file_type
    for name, ttype in types.items():
        if name.endswith((".bias", "_norm.weight", "ffn_gate_inp.weight")) or name in (
                "token_types.weight", "position_embd.weight"):
            assert ttype == "F32", name
        else:
            assert ttype == expected_weight_type, name

    if arch == "llama":
        assert model.kind == "llm"
        assert kv["llama.rope.dimension_count"] == n_embd // kv["llama.attention.head_count"]
        assert "llama.attention.layer_norm_rms_epsilon" in kv
        assert kv["tokenizer.chat_template"] == model.chat_template
        if which.startswith("moe"):
            assert (kv["llama.expert_count"], kv["llama.expert_used_count"]) == (4, 2)
            assert (model.expert_count, model.expert_used_count) == (4, 2)
            for suffix in ("ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
                assert f"blk.0.{suffix}.weight" in types
        else:
            assert model.expert_count is None and "llama.expert_count" not in kv
    else:
        assert model.kind == "embedding" and model.chat_template is None
        assert kv["bert.pooling_type"] == 1
        assert "bert.attention.layer_norm_epsilon" in kv


def test_size_label_and_vocab_size_are_written(tmp_path):
    model = write_dense_llama(tmp_path / "m.gguf", size_label="1M", name="Labelled", vocab_size=1000,
                              context_length=4096)
    _, kv = read_gguf(model.path)
    assert kv["general.size_label"] == "1M" == model.size_label
    assert kv["general.name"] == "Labelled"
    assert kv["llama.context_length"] == 4096 == model.context_length
    assert kv["_n_tokens"] == 1000 == model.vocab_size
    with loaded(model.path) as llm:
        assert llm.n_vocab() == 1000
        assert_exact_ascii_completion(llm, 8, temperature=1.0, seed=5)


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("file_type", ["F16", "Q8_0", "F32"])
def test_dense_generates_exactly_max_tokens_of_ascii(tmp_path, file_type):
    model = write_dense_llama(tmp_path / "dense.gguf", file_type=file_type, seed=11)
    with loaded(model.path) as llm:
        assert llm.metadata["general.file_type"] == str(int(gguf.LlamaFileType[
            {"F32": "ALL_F32"}.get(file_type, "MOSTLY_" + file_type)]))
        assert_exact_ascii_completion(llm, 24, temperature=0.0, seed=1)
        assert_exact_ascii_completion(llm, 24, temperature=0.8, seed=2)
        # no truncation of the distribution at all and a very high temperature:
        # byte, control and EOS tokens must still never come out
        assert_exact_ascii_completion(llm, 64, temperature=5.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)


def test_dense_chat_template_via_create_chat_completion(tmp_path):
    model = write_dense_llama(tmp_path / "chat.gguf")
    assert model.chat_template and "tools" not in model.chat_template
    with loaded(model.path, n_ctx=512) as llm:
        assert llm.metadata["tokenizer.chat_template"] == model.chat_template
        out = llm.create_chat_completion(
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi there!\nHow are you?"}],
            max_tokens=16, temperature=0.7, seed=9)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 16
        assert choice["message"]["role"] == "assistant"
        assert is_printable_ascii(choice["message"]["content"])


def test_tool_template_mentions_and_renders_tools(tmp_path):
    model = write_dense_llama(tmp_path / "tools.gguf", with_tool_template=True)
    template = model.chat_template
    assert "tools" in template and "for tool in tools" in template
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    fmt = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")
    prompt = fmt(messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools).prompt
    assert "get_weather" in prompt and prompt.endswith("<|im_start|>assistant\n")
    plain = fmt(messages=[{"role": "user", "content": "Hi"}]).prompt
    assert "get_weather" not in plain and "Hi" in plain
    with loaded(model.path, n_ctx=1024) as llm:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": "Weather in Paris?"}],
                                         tools=tools, max_tokens=8, seed=1)
        assert out["usage"]["completion_tokens"] == 8


def test_moe_generates_and_accepts_expert_used_count_override(tmp_path):
    model = write_moe_llama(tmp_path / "moe.gguf", seed=5)
    assert (model.expert_count, model.expert_used_count) == (4, 2)
    with loaded(model.path) as llm:
        assert llm.metadata["llama.expert_count"] == "4"
        assert_exact_ascii_completion(llm, 24, temperature=0.0, seed=1)
        assert_exact_ascii_completion(llm, 24, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    with loaded(model.path, kv_overrides={"llama.expert_used_count": 1}) as llm:
        assert_exact_ascii_completion(llm, 16, temperature=0.8, seed=2)


def test_bert_embeds_to_embedding_length_vector(tmp_path):
    model = write_bert_embedding(tmp_path / "embed.gguf", seed=2)
    _, kv = read_gguf(model.path)
    n_embd = kv["bert.embedding_length"]
    with loaded(model.path, embedding=True) as llm:
        assert llm.n_embd() == n_embd
        a = llm.embed("hello world")
        b = llm.embed("a tiny model, run locally!")
    for vec in (a, b):
        assert len(vec) == n_embd
        assert all(isinstance(x, float) and math.isfinite(x) for x in vec)
    assert a != b


# --------------------------------------------------------------------------- demo, bench, vocab-heavy


def test_write_demo_models_layout(tmp_path):
    models_dir = tmp_path / "models"
    written = write_demo_models(models_dir)
    expected = [
        "lmhost/tiny-llama-GGUF/tiny-llama-F16.gguf",
        "lmhost/tiny-moe-GGUF/tiny-moe-F16.gguf",
        "lmhost/tiny-embed-GGUF/tiny-embed-F16.gguf",
    ]
    assert [m.path.relative_to(models_dir).as_posix() for m in written] == expected
    assert sorted(p.relative_to(models_dir).as_posix() for p in models_dir.rglob("*") if p.is_file()) \
        == sorted(expected)
    llm, moe, embed = written
    assert (llm.kind, llm.architecture, llm.file_type) == ("llm", "llama", "F16")
    assert llm.chat_template and llm.expert_count is None
    assert (moe.kind, moe.expert_count, moe.expert_used_count) == ("llm", 4, 2)
    assert (embed.kind, embed.architecture) == ("embedding", "bert")
    for m in written:
        assert m.path.stat().st_size < 3 * MB
    with loaded(embed.path, embedding=True) as e:
        assert len(e.embed("demo")) == e.n_embd()
    with loaded(moe.path) as g:
        assert_exact_ascii_completion(g, 8, seed=1)
    # writing again over an existing layout is fine
    assert [m.path for m in write_demo_models(models_dir)] == [m.path for m in written]


def test_vocab_heavy_llama(tmp_path):
    model = write_vocab_heavy_llama(tmp_path / "vh.gguf", seed=1)
    assert model.vocab_size == 32000
    assert model.path.stat().st_size < 3 * MB
    with loaded(model.path) as llm:
        assert llm.n_vocab() == 32000
        assert int(llm.metadata["llama.vocab_size"]) == 32000
        assert_exact_ascii_completion(llm, 16, temperature=1.0, seed=4)


def test_bench_model(tmp_path):
    model = write_bench_model(tmp_path / "bench.gguf")
    assert 120_000_000 <= model.n_params <= 180_000_000
    assert model.file_type == "Q8_0" and model.architecture == "llama"
    assert model.path.stat().st_size < 200 * MB
    with loaded(model.path) as llm:
        assert llm.metadata["general.file_type"] == str(int(gguf.LlamaFileType.MOSTLY_Q8_0))
        assert_exact_ascii_completion(llm, 8, temperature=0.8, seed=1)
