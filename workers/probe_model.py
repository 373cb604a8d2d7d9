"""The engine probe's model: the smallest llama that runs llama.cpp's quantized matrix kernels.

One layer, 128 wide, 256 tokens, every matrix Q8_0 (one of the types whose CPU kernels use
AMX tiles and repacked weights, where a host may trap them). The weights are noise: the probe
decodes token ids, it never reads what comes out. Written with the `gguf` package and numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

N_EMBD, N_FF, N_VOCAB, N_HEAD = 128, 256, 256, 4


def write_probe_model(path: Path) -> Path:
    """Write the model at `path`, atomically (several services may probe at once)."""
    import gguf  # lazy: nothing here runs at import time

    q8 = gguf.GGMLQuantizationType.Q8_0
    rng = np.random.default_rng(0)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    writer = gguf.GGUFWriter(str(part), "llama")
    writer.add_name("lmhost engine probe")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_context_length(512)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_vocab_size(N_VOCAB)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(N_VOCAB - 3)])
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types([2, 3, 3] + [1] * (N_VOCAB - 3))  # unknown, control x2, normal
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def matrix(name: str, rows: int, cols: int) -> None:
        weights = rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)
        writer.add_tensor(name, gguf.quants.quantize(weights, q8), raw_dtype=q8)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(N_EMBD, dtype=np.float32))

    matrix("token_embd.weight", N_VOCAB, N_EMBD)
    norm("blk.0.attn_norm.weight")
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        matrix(f"blk.0.{name}.weight", N_EMBD, N_EMBD)
    norm("blk.0.ffn_norm.weight")
    matrix("blk.0.ffn_gate.weight", N_FF, N_EMBD)
    matrix("blk.0.ffn_up.weight", N_FF, N_EMBD)
    matrix("blk.0.ffn_down.weight", N_EMBD, N_FF)
    norm("output_norm.weight")
    matrix("output.weight", N_VOCAB, N_EMBD)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(part, path)
    return path
