"""Names, nominal bits per weight and storage sizes of llama.cpp's quantization types.

Two enumerations matter: `general.file_type` (llama.cpp's `llama_ftype`, what the file as a
whole was quantized to) and each tensor's ggml type. "Nominal bits" is the number in the
type's name (Q4_0 -> 4), which is what LM Studio reports as `bits_per_weight` (seed 004).
"""

from __future__ import annotations

# llama_ftype (llama.h): value -> (name, nominal bits per weight)
FILE_TYPES: dict[int, tuple[str, int]] = {
    0: ("F32", 32), 1: ("F16", 16), 2: ("Q4_0", 4), 3: ("Q4_1", 4),
    7: ("Q8_0", 8), 8: ("Q5_0", 5), 9: ("Q5_1", 5), 10: ("Q2_K", 2),
    11: ("Q3_K_S", 3), 12: ("Q3_K_M", 3), 13: ("Q3_K_L", 3), 14: ("Q4_K_S", 4),
    15: ("Q4_K_M", 4), 16: ("Q5_K_S", 5), 17: ("Q5_K_M", 5), 18: ("Q6_K", 6),
    19: ("IQ2_XXS", 2), 20: ("IQ2_XS", 2), 21: ("Q2_K_S", 2), 22: ("IQ3_XS", 3),
    23: ("IQ3_XXS", 3), 24: ("IQ1_S", 1), 25: ("IQ4_NL", 4), 26: ("IQ3_S", 3),
    27: ("IQ3_M", 3), 28: ("IQ2_S", 2), 29: ("IQ2_M", 2), 30: ("IQ4_XS", 4),
    31: ("IQ1_M", 1), 32: ("BF16", 16), 36: ("TQ1_0", 1), 37: ("TQ2_0", 2),
    38: ("MXFP4_MOE", 4),
}

# ggml_type (ggml.h): value -> (name, nominal bits per weight)
GGML_TYPES: dict[int, tuple[str, int]] = {
    0: ("F32", 32), 1: ("F16", 16), 2: ("Q4_0", 4), 3: ("Q4_1", 4), 6: ("Q5_0", 5),
    7: ("Q5_1", 5), 8: ("Q8_0", 8), 9: ("Q8_1", 8), 10: ("Q2_K", 2), 11: ("Q3_K", 3),
    12: ("Q4_K", 4), 13: ("Q5_K", 5), 14: ("Q6_K", 6), 15: ("Q8_K", 8), 16: ("IQ2_XXS", 2),
    17: ("IQ2_XS", 2), 18: ("IQ3_XXS", 3), 19: ("IQ1_S", 1), 20: ("IQ4_NL", 4),
    21: ("IQ3_S", 3), 22: ("IQ2_S", 2), 23: ("IQ4_XS", 4), 24: ("I8", 8), 25: ("I16", 16),
    26: ("I32", 32), 27: ("I64", 64), 28: ("F64", 64), 29: ("IQ1_M", 1), 30: ("BF16", 16),
    34: ("TQ1_0", 1), 35: ("TQ2_0", 2), 39: ("MXFP4", 4), 40: ("NVFP4", 4), 41: ("Q1_0", 1),
}

# ggml_type -> (elements per block, bytes per block): ggml's type traits (ggml.c), which the
# tensor table needs to say where each tensor's data ends. F16 is (1, 2): 2 bytes an element.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17), 40: (64, 36), 41: (128, 18),
}


def from_file_type(file_type: int | None) -> tuple[str, int] | None:
    """(name, bits) for a `general.file_type` value; None when absent or unknown.

    llama.cpp sets bit 10 (LLAMA_FTYPE_GUESSED) on types it inferred; the type is the rest.
    """
    if not isinstance(file_type, int) or isinstance(file_type, bool):
        return None
    return FILE_TYPES.get(file_type & ~1024)


def dominant_tensor_type(tensors) -> tuple[str, int] | None:
    """(name, bits) of the ggml type holding the most weights among the matrices.

    Used when a file carries no `general.file_type`: norms and biases are small F32 vectors,
    so only tensors of two or more dimensions vote.
    """
    votes: dict[int, int] = {}
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            votes[tensor.ggml_type] = votes.get(tensor.ggml_type, 0) + tensor.n_elements
    if not votes:
        return None
    winner = max(sorted(votes), key=votes.__getitem__)
    return GGML_TYPES.get(winner)


def tensor_bytes(ggml_type: int, n_elements: int) -> int | None:
    """Bytes a tensor of `n_elements` of `ggml_type` takes; None for a type this table does
    not know (a newer llama.cpp's)."""
    block = GGML_BLOCKS.get(ggml_type)
    if block is None:
        return None
    per_block, size = block
    return -(-n_elements // per_block) * size


def bytes_per_element(ggml_type: int) -> float:
    """Average bytes an element of `ggml_type` takes (a KV cache's element size); F16's 2 for
    an unknown type."""
    per_block, size = GGML_BLOCKS.get(ggml_type, (1, 2))
    return size / per_block
