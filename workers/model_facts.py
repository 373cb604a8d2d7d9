"""What one model file says about itself, distilled from its GGUF header.

`FileFacts` is plain data (it round-trips through JSON for the on-disk metadata cache) and is
everything the catalog needs to derive the fields of seed 004 without reading the file again.
The derivations (`is_embedding`, `params_string`, ...) are pure functions, unit-tested.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from workers import quantization
from workers.gguf_header import GgufHeader

# Encoder-only architectures: their GGUF files are embedding models (llama.cpp's names).
ENCODER_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
    "neo-bert", "t5encoder", "gte",
})

# llama.cpp's pooling types: -1 unspecified, 0 none; 1 mean, 2 cls, 3 last, 4 rank pool.
_POOLING_NONE = (-1, 0)

_TOOLS_IN_TEMPLATE = re.compile(r"\btools\b|tool_call")


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

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FileFacts":
        data = dict(data)
        if data.get("quantization") is not None:
            data["quantization"] = tuple(data["quantization"])
        return cls(**data)


def _str(metadata: dict, key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _int(metadata: dict, key: str) -> int | None:
    value = metadata.get(key)
    # bool is an int in Python; a GGUF bool is never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
