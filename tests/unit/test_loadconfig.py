from __future__ import annotations

import pytest

from tests.helpers import write_gguf
from workers.catalog import Catalog
from workers.errors import InvalidRequest, ModelLoadFailed
from workers.loadconfig import plan_load


@pytest.fixture
def catalog(models_dir):
    llama = {"llama.block_count": 4, "llama.embedding_length": 256, "llama.attention.head_count": 8,
             "llama.attention.head_count_kv": 2}
    write_gguf(models_dir / "p" / "dense" / "d.gguf", context_length=8192, extra=llama)
    write_gguf(models_dir / "p" / "moe" / "m.gguf", context_length=4096,
               extra={**llama, "llama.expert_count": 4, "llama.expert_used_count": 2})
    write_gguf(models_dir / "p" / "emb" / "e.gguf", arch="bert", context_length=512)
    return Catalog(models_dir)


def plan(catalog, ref, **request):
    model, variant = catalog.resolve(ref)
    return plan_load(request, model, variant, default_context_length=4096, n_threads=3)


def test_defaults_and_mapping(catalog):
    p = plan(catalog, "dense")
    assert p.llama_kwargs["n_ctx"] == 4096 and p.llama_kwargs["n_threads"] == 3
    assert p.llama_kwargs["n_gpu_layers"] == -1 and p.llama_kwargs["verbose"] is True
    assert p.load_config == {"context_length": 4096, "eval_batch_size": 512,
                             "flash_attention": False, "offload_kv_cache_to_gpu": True}
    # KV cache: 2 x 4 layers x 2 kv heads x 32 head dim x 4096 ctx x 2 bytes, all in RAM
    assert p.estimate.ram["kv_cache"] == 2 * 4 * 2 * 32 * 4096 * 2 and p.estimate.gpu_bytes == 0
    assert plan(catalog, "moe").llama_kwargs["n_ctx"] == 4096  # default capped by trained context
    small = plan(catalog, "dense", context_length=100, eval_batch_size=32, flash_attention=True,
                 offload_kv_cache_to_gpu=False, gpu_offload=0.5)
    expected = {"n_ctx": 100, "n_batch": 32, "flash_attn": True, "offload_kqv": False,
                "n_gpu_layers": 2}
    assert {k: small.llama_kwargs[k] for k in expected} == expected
    assert plan(catalog, "dense", gpu_offload="off").llama_kwargs["n_gpu_layers"] == 0


def test_num_experts(catalog):
    p = plan(catalog, "moe", num_experts=3)
    assert p.llama_kwargs["kv_overrides"] == {"llama.expert_used_count": 3}
    assert type(p.llama_kwargs["kv_overrides"]["llama.expert_used_count"]) is int
    assert p.load_config["num_experts"] == 3
    assert plan(catalog, "moe").load_config["num_experts"] == 2
    for bad in (0, 5):
        with pytest.raises(InvalidRequest) as info:
            plan(catalog, "moe", num_experts=bad)
        assert info.value.param == "num_experts"
    dense = plan(catalog, "dense", num_experts=2)
    assert "kv_overrides" not in dense.llama_kwargs and "num_experts" not in dense.load_config


def test_embedding_models_take_context_length_only(catalog):
    p = plan(catalog, "emb", flash_attention=True, eval_batch_size=8, context_length=256)
    assert p.load_config == {"context_length": 256}
    assert p.llama_kwargs["embedding"] is True
    assert "flash_attn" not in p.llama_kwargs and "n_batch" not in p.llama_kwargs


def test_context_beyond_training_is_refused(catalog):
    with pytest.raises(InvalidRequest, match="exceeds the model's trained context length 8192"):
        plan(catalog, "dense", context_length=8193)


def test_mlx_is_refused(catalog, models_dir):
    folder = models_dir / "mlx" / "x-4bit"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "w.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadFailed, match="MLX"):
        plan(catalog, "x-4bit")


def test_seed_and_gpu_offload_are_applied_and_recorded(catalog):
    p = plan(catalog, "dense", seed=7, gpu_offload="off")
    assert p.llama_kwargs["seed"] == 7 and type(p.llama_kwargs["seed"]) is int
    assert p.load_config["seed"] == 7 and p.load_config["gpu_offload"] == "off"
    default = plan(catalog, "dense")
    assert "seed" not in default.llama_kwargs and "seed" not in default.load_config
    emb = plan(catalog, "emb", seed=7, gpu_offload=0.5)  # sampling seeds are for LLMs
    assert "seed" not in emb.llama_kwargs and emb.load_config == {"context_length": 512,
                                                                   "gpu_offload": 0.5}
