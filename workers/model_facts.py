"""What one model file says about itself, distilled from its GGUF header.

`FileFacts` is plain data (it round-trips through JSON for the on-disk metadata cache) and is
everything the catalog needs to derive the fields of seed 004, and `workers.estimate` a load's
memory, without reading the file again: the sizes of the weights come from the tensor table
(per layer, so that a share of the layers can be placed on a GPU). The derivations
(`is_embedding`, `params_string`, ...) are pure functions, unit-tested.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from workers import quantization
from workers.gguf_header import ArrayValue, GgufHeader

# Encoder-only architectures: their GGUF files are embedding models (llama.cpp's names).
ENCODER_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
    "neo-bert", "t5encoder", "gte",
})

# llama.cpp's pooling types: -1 unspecified, 0 none; 1 mean, 2 cls, 3 last, 4 rank pool.
_POOLING_NONE = (-1, 0)

_TOOLS_IN_TEMPLATE = re.compile(r"\btools\b|tool_call")
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class FileFacts:
    architecture: str | None
    name: str | None
    description: str | None
    size_label: str | None
    quantization: tuple[str, int] | None  # (name, nominal bits)
    context_length: int | None
    is_embedding: bool
    tool_use: bool
    n_params: int
    expert_count: int | None
    expert_used_count: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    # What a load's memory estimate needs (workers.estimate). Weights: bytes of the tensor
    # data, of each layer's tensors (blk.N.*), of the output layer (output*, placed on the GPU
    # with the last layer) and of token_embd (which llama.cpp keeps in RAM).
    tensor_bytes: int = 0
    layer_bytes: tuple[int, ...] = ()
    output_bytes: int = 0
    token_embd_bytes: int = 0
    output_tied: bool = False  # no output.weight: llama.cpp uses token_embd there
    vocab_size: int | None = None
    merges: int = 0
    key_length: int | None = None
    value_length: int | None = None
    feed_forward_length: int | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FileFacts":
        data = dict(data)
        if data.get("quantization") is not None:
            data["quantization"] = tuple(data["quantization"])
        data["layer_bytes"] = tuple(data.get("layer_bytes") or ())
        return cls(**data)

    def with_parts(self, parts: list["FileFacts"]) -> "FileFacts":
        """The facts of a split model: this first part's metadata, the tensors of all parts."""
        layers = [0] * max(len(p.layer_bytes) for p in parts)
        for part in parts:
            for index, size in enumerate(part.layer_bytes):
                layers[index] += size
        return dataclasses.replace(
            self, n_params=sum(p.n_params for p in parts),
            tensor_bytes=sum(p.tensor_bytes for p in parts), layer_bytes=tuple(layers),
            output_bytes=sum(p.output_bytes for p in parts),
            token_embd_bytes=sum(p.token_embd_bytes for p in parts),
            output_tied=all(p.output_tied for p in parts))


def _str(metadata: dict, key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _int(metadata: dict, key: str) -> int | None:
    value = metadata.get(key)
    # bool is an int in Python; a GGUF bool is never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _array_length(metadata: dict, key: str) -> int | None:
    value = metadata.get(key)
    return value.count if isinstance(value, ArrayValue) else None


def _weights(header: GgufHeader) -> dict:
    """Sizes of the tensor data, in total and by where llama.cpp places it."""
    layers: dict[int, int] = {}
    total = output = token_embd = 0
    has_output = False
    for tensor in header.tensors:
        size = tensor.n_bytes or 0
        total += size
        layer = _LAYER.match(tensor.name)
        if layer:
            index = int(layer[1])
            layers[index] = layers.get(index, 0) + size
        elif tensor.name.startswith("output"):
            output += size
            has_output = has_output or tensor.name == "output.weight"
        elif tensor.name == "token_embd.weight":
            token_embd = size
    count = max(layers) + 1 if layers else 0
    return {"tensor_bytes": total, "layer_bytes": tuple(layers.get(i, 0) for i in range(count)),
            "output_bytes": output, "token_embd_bytes": token_embd, "output_tied": not has_output}


def facts_from_header(header: GgufHeader) -> FileFacts:
    meta = header.metadata
    arch = _str(meta, "general.architecture")
    prefix = f"{arch}." if arch else "\0"  # no architecture: no per-arch key matches
    pooling = _int(meta, prefix + "pooling_type")
    template = _str(meta, "tokenizer.chat_template") or ""
    return FileFacts(
        architecture=arch,
        name=_str(meta, "general.name"),
        description=_str(meta, "general.description"),
        size_label=_str(meta, "general.size_label"),
        quantization=(quantization.from_file_type(_int(meta, "general.file_type"))
                      or quantization.dominant_tensor_type(header.tensors)),
        context_length=_int(meta, prefix + "context_length"),
        is_embedding=(arch in ENCODER_ARCHITECTURES
                      or (pooling is not None and pooling not in _POOLING_NONE)),
        tool_use=(bool(_TOOLS_IN_TEMPLATE.search(template))
                  or "tokenizer.chat_template.tool_use" in meta),
        n_params=sum(t.n_elements for t in header.tensors),
        expert_count=_int(meta, prefix + "expert_count"),
        expert_used_count=_int(meta, prefix + "expert_used_count"),
        block_count=_int(meta, prefix + "block_count"),
        embedding_length=_int(meta, prefix + "embedding_length"),
        head_count=_int(meta, prefix + "attention.head_count"),
        head_count_kv=_int(meta, prefix + "attention.head_count_kv"),
        vocab_size=_array_length(meta, "tokenizer.ggml.tokens"),
        merges=_array_length(meta, "tokenizer.ggml.merges") or 0,
        key_length=_int(meta, prefix + "attention.key_length"),
        value_length=_int(meta, prefix + "attention.value_length"),
        feed_forward_length=_int(meta, prefix + "feed_forward_length"),
        **_weights(header),
    )


def params_string(n_params: int) -> str | None:
    """A human parameter count as LM Studio shows it: "270M", "1.5B", "7B"; None for 0."""
    if n_params <= 0:
        return None
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n_params >= scale:
            value = n_params / scale
            text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
            return text.removesuffix(".0") + suffix
    return str(n_params)


def readable_name(folder: str) -> str:
    """A display name from a folder name: "gemma-3-270m-it-qat-GGUF" -> "Gemma 3 270m It Qat"."""
    base = re.sub(r"[-_.]gguf$", "", folder, flags=re.IGNORECASE)
    words = [w for w in re.split(r"[-_\s]+", base) if w]
    return " ".join(w[0].upper() + w[1:] for w in words) or folder
