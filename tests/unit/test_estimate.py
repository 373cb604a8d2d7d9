"""The memory estimate of a load: each part from the file's facts and the load's llama.cpp
parameters, placed in RAM or on the GPUs as llama.cpp places it."""

from __future__ import annotations

import dataclasses

import pytest

from workers.estimate import (CONTEXT_BYTES, CUDA_CONTEXT_BYTES, CUDA_HOST_BYTES,
                              HUGE_PAGE_HEAP_BYTES, HUGE_PAGE_SHARE, MERGE_BYTES,
                              PROCESS_BYTES, TOKEN_BYTES, estimate_load, need)
from workers.model_facts import FileFacts

LAYER = 1_000_000

FACTS = FileFacts(
    architecture="llama", name=None, description=None, size_label=None, quantization=None,
    context_length=8192, is_embedding=False, tool_use=False, n_params=0, expert_count=None,
    expert_used_count=None, block_count=4, embedding_length=256, head_count=8, head_count_kv=2,
    tensor_bytes=4 * LAYER + 300_000 + 200_000, layer_bytes=(LAYER,) * 4, output_bytes=300_000,
    token_embd_bytes=200_000, vocab_size=1000, merges=500, feed_forward_length=512)
KV_PER_LAYER_AND_CELL = 2 * 32 * (2 + 2)  # kv heads x head dim x (K + V) x F16


def kwargs(**extra):
    return {"n_ctx": 1024, "n_batch": 512, "n_gpu_layers": -1, "flash_attn": False,
            "offload_kqv": True, **extra}


def test_cpu_mode_puts_everything_in_ram():
    e = estimate_load(FACTS, kwargs(), gpus=0)
    assert e.gpu_bytes == 0 and e.total_bytes == e.ram_bytes
    assert e.ram["weights"] == FACTS.tensor_bytes
    assert e.ram["kv_cache"] == 1024 * 4 * KV_PER_LAYER_AND_CELL
    assert e.ram["overhead"] == PROCESS_BYTES + CONTEXT_BYTES + 1000 * TOKEN_BYTES + 500 * MERGE_BYTES
    # attention phase, no flash attention: 512-token micro-batch x 1024 cells x (8 heads + mask)
    # in F32, 6 rows of activations, and the F16 copy of the scores the matmul takes
    assert e.ram["compute"] == 4 * 512 * (1024 * 9 + 6 * 256) + 2 * 512 * 1024 * 8


def test_weights_in_huge_pages_add_the_heaps_step_and_a_share_of_the_partly_touched_buffers():
    mapped = estimate_load(FACTS, kwargs(), gpus=0)
    read = estimate_load(FACTS, kwargs(use_mmap=False), gpus=0)
    share = HUGE_PAGE_SHARE * (mapped.ram["kv_cache"] + mapped.ram["compute"])
    assert read.ram["overhead"] - mapped.ram["overhead"] == HUGE_PAGE_HEAP_BYTES + int(share)
    assert {k: v for k, v in read.ram.items() if k != "overhead"} == {
        k: v for k, v in mapped.ram.items() if k != "overhead"}
    assert estimate_load(FACTS, kwargs(use_mmap=True), gpus=0) == mapped


@pytest.mark.parametrize("n_ctx", [256, 1024, 4096, 8192])
def test_kv_cache_is_context_times_layers_times_k_and_v_widths(n_ctx):
    e = estimate_load(FACTS, kwargs(n_ctx=n_ctx))
    assert e.ram["kv_cache"] == n_ctx * 4 * KV_PER_LAYER_AND_CELL


@pytest.mark.parametrize("type_k, type_v, bytes_per_element", [
    (1, 1, (2, 2)),          # F16 (the default)
    (0, 0, (4, 4)),          # F32
    (8, 8, (34 / 32, 34 / 32)),  # Q8_0: 34 bytes per 32 elements
    (8, 1, (34 / 32, 2)),
])
def test_kv_cache_element_size_follows_the_cache_type(type_k, type_v, bytes_per_element):
    e = estimate_load(FACTS, kwargs(type_k=type_k, type_v=type_v))
    k, v = bytes_per_element
    assert e.ram["kv_cache"] == int(1024 * 4 * 2 * 32 * (k + v))


def test_explicit_head_widths_win_over_embedding_over_heads():
    facts = dataclasses.replace(FACTS, key_length=64, value_length=48)
    assert estimate_load(facts, kwargs()).ram["kv_cache"] == 1024 * 4 * 2 * (64 + 48) * 2


def test_full_offload_puts_layers_output_and_kv_on_the_gpus_and_a_cuda_context_on_each():
    for gpus in (1, 2):
        e = estimate_load(FACTS, kwargs(), gpus=gpus)
        assert e.gpu["weights"] == 4 * LAYER + 300_000
        assert e.ram["weights"] == 200_000  # token_embd stays in RAM
        assert e.gpu["kv_cache"] == 1024 * 4 * KV_PER_LAYER_AND_CELL and e.ram["kv_cache"] == 0
        assert e.gpu["overhead"] == gpus * CUDA_CONTEXT_BYTES
        # the GPU allocates the whole reserved buffer: here the attention phase is the largest,
        # its scores and their F16 copy (measured on an H200: the copy is there too)
        assert e.gpu["compute"] == max(4 * 512 * (1000 + 2 * 256) + 2 * 512 * 1024,
                                       4 * 512 * (1024 * 9 + 6 * 256) + 2 * 512 * 1024 * 8)
        # the CUDA runtime's host memory, once per process however many GPUs
        cpu = estimate_load(FACTS, kwargs())
        assert e.ram["overhead"] == cpu.ram["overhead"] + CUDA_HOST_BYTES
        assert e.ram["compute"] == 4 * 512 * 256 * 2


@pytest.mark.parametrize("n_gpu_layers, layers_on_gpu, output_on_gpu", [
    (0, 0, False), (1, 1, False), (2, 2, False), (4, 4, False), (5, 4, True), (-1, 4, True),
    (99, 4, True),
])
def test_partial_offload_places_the_last_layers(n_gpu_layers, layers_on_gpu, output_on_gpu):
    e = estimate_load(FACTS, kwargs(n_gpu_layers=n_gpu_layers), gpus=1)
    assert e.gpu["weights"] == layers_on_gpu * LAYER + (300_000 if output_on_gpu else 0)
    assert e.gpu["kv_cache"] == 1024 * layers_on_gpu * KV_PER_LAYER_AND_CELL
    assert e.ram["kv_cache"] == 1024 * (4 - layers_on_gpu) * KV_PER_LAYER_AND_CELL
    assert e.ram["weights"] + e.gpu["weights"] == FACTS.tensor_bytes
    assert e.gpu["overhead"] == CUDA_CONTEXT_BYTES  # a CUDA process either way


def test_partial_offload_keeps_only_a_small_batchs_scratch_in_ram():
    # llama.cpp runs a batch of 32 tokens or more on the GPU, the layers left in RAM included
    # (op offload), so RAM holds the scratch of a 31-token batch at most. (On an H200, counting
    # the whole micro-batch put the RAM estimate 17-23 % over the peak RSS.)
    attention = 4 * 512 * (1024 * 9 + 6 * 256) + 2 * 512 * 1024 * 8
    e = estimate_load(FACTS, kwargs(n_gpu_layers=2), gpus=1)
    assert e.ram["compute"] == 4 * 31 * (1024 * 9 + 6 * 256) + 2 * 31 * 1024 * 8
    assert e.gpu["compute"] == attention
    # no layer on the GPU of a GPU host ("off"): op offload still runs large batches there
    off = estimate_load(FACTS, kwargs(n_gpu_layers=0), gpus=1)
    assert (off.ram["compute"], off.gpu["compute"]) == (e.ram["compute"], attention)
    # without a GPU, the CPU computes the whole micro-batch itself
    assert estimate_load(FACTS, kwargs(n_gpu_layers=2)).ram["compute"] == attention


def test_kv_cache_stays_in_ram_without_offload_kqv():
    e = estimate_load(FACTS, kwargs(offload_kqv=False), gpus=1)
    assert e.gpu["kv_cache"] == 0 and e.ram["kv_cache"] == 1024 * 4 * KV_PER_LAYER_AND_CELL


def test_a_tied_output_layer_is_a_gpu_copy_of_token_embd():
    tied = dataclasses.replace(FACTS, output_tied=True, output_bytes=0,
                               tensor_bytes=4 * LAYER + 200_000)
    e = estimate_load(tied, kwargs(), gpus=1)
    assert e.gpu["weights"] == 4 * LAYER + 200_000 and e.ram["weights"] == 200_000
    assert estimate_load(tied, kwargs()).ram["weights"] == tied.tensor_bytes  # CPU: one copy


def test_flash_attention_and_smaller_batches_shrink_the_compute_buffer():
    plain = estimate_load(FACTS, kwargs()).ram["compute"]
    flash = estimate_load(FACTS, kwargs(flash_attn=True)).ram["compute"]
    assert flash == 4 * 512 * (2 * 512 + 8 * 256) + 2 * 512 * 1024  # the feed-forward phase
    small = estimate_load(FACTS, kwargs(n_batch=64)).ram["compute"]
    assert small == 4 * 64 * (1024 * 9 + 6 * 256) + 2 * 64 * 1024 * 8
    assert flash < plain and small < plain
    # n_ubatch is capped by n_ctx (llama-cpp-python: n_batch = min(n_ctx, n_batch))
    tiny = estimate_load(FACTS, kwargs(n_ctx=128)).ram["compute"]
    assert tiny == 4 * 128 * (128 * 9 + 6 * 256) + 2 * 128 * 128 * 8


def test_encoders_have_no_kv_cache_and_attend_within_the_batch():
    bert = dataclasses.replace(FACTS, architecture="bert", is_embedding=True)
    e = estimate_load(bert, {"n_ctx": 512, "n_gpu_layers": -1, "embedding": True})
    assert e.ram["kv_cache"] == 0
    assert e.ram["compute"] == 4 * 512 * (512 * 9 + 6 * 256) + 2 * 512 * 512 * 8


def test_moe_feed_forward_counts_the_experts_used():
    moe = dataclasses.replace(FACTS, expert_count=8, expert_used_count=2)
    flash = kwargs(flash_attn=True)
    two = estimate_load(moe, flash).ram["compute"]
    four = estimate_load(moe, {**flash, "kv_overrides": {"llama.expert_used_count": 4}}).ram["compute"]
    assert two == 4 * 512 * (2 * 512 * 2 + 8 * 256) + 2 * 512 * 1024
    assert four == 4 * 512 * (2 * 512 * 4 + 8 * 256) + 2 * 512 * 1024


def test_logits_all_keeps_every_row():
    e = estimate_load(FACTS, kwargs(logits_all=True))
    assert e.ram["compute"] == (max(4 * 512 * (1024 * 9 + 6 * 256) + 2 * 512 * 1024 * 8,
                                    4 * 512 * (1000 + 2 * 256) + 2 * 512 * 1024)
                                + 4 * 1024 * 1000)


def test_json_form_sums_parts_and_need_reads_it_back():
    e = estimate_load(FACTS, kwargs(n_gpu_layers=2), gpus=1)
    body = e.to_json()
    assert body["total_bytes"] == e.total_bytes == body["ram_bytes"] + body["gpu_bytes"]
    assert sum(body[f"{p}_bytes"] for p in ("weights", "kv_cache", "compute", "overhead")) \
        == body["total_bytes"]
    assert body["on_gpu"]["weights_bytes"] == 2 * LAYER
    assert need(body) == {"ram": e.ram_bytes, "gpu": e.gpu_bytes}
    assert need(None) == {"ram": 0, "gpu": 0}
