"""Tiny synthetic GGUF models with random weights, for tests, demos and benchmarks.

Every writer here produces a file that llama.cpp loads and runs, deterministic from
``seed``.  The files are written with :class:`gguf.GGUFWriter` and numpy only; this
module imports neither Flask nor llama_cpp, and does nothing at import time (the
``gguf`` package itself is imported lazily, on the first write).

Generation from the llama models is tamed so that tests can rely on it: every token
embedding carries a large constant in one hidden dimension (``_BIAS_DIM``) that the
layers can neither read (the input columns of q/k/v, the FFN and the MoE router are
zero there) nor change (the output rows of ``attn_output`` and ``ffn_down`` are zero
there), so it reaches the output layer intact; the output layer's column for that
dimension is strongly positive for printable tokens and strongly negative for byte,
control, unknown and end-of-generation tokens.  Such tokens therefore have a logit
gap of ~100 and are never sampled, whatever the temperature or seed: a completion is
printable ASCII and always runs to ``max_tokens`` (finish_reason ``"length"``).
(The vocabulary-heavy model ties its output layer to ``token_embd``; there the bias
dimension holds 4*sqrt(n_embd) for printable tokens and sqrt(n_embd) for the others,
which gives printable tokens the same kind of margin whatever the input token.)
"""

from __future__ import annotations

import os
import pathlib
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

__all__ = [
    "SyntheticModel",
    "FILE_TYPES",
    "CHAT_TEMPLATE",
    "TOOL_CHAT_TEMPLATE",
    "write_dense_llama",
    "write_moe_llama",
    "write_bert_embedding",
    "write_bench_model",
    "write_vocab_heavy_llama",
    "write_demo_models",
    "DEMO_MODELS",
]


@dataclass(frozen=True)
class SyntheticModel:
    path: pathlib.Path          # the .gguf written
    architecture: str           # "llama" or "bert"
    kind: str                   # "llm" or "embedding"
    n_params: int               # sum of element counts of every tensor written
    context_length: int         # <arch>.context_length written
    file_type: str              # name matching general.file_type: "F32", "F16", "Q8_0", ...
    size_label: str | None      # general.size_label written, or None
    name: str | None            # general.name written, or None
    expert_count: int | None    # MoE only
    expert_used_count: int | None
    chat_template: str | None
    vocab_size: int


# ---------------------------------------------------------------------------
# Chat templates (Jinja, rendered by llama-cpp-python's Jinja2ChatFormatter)
# ---------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{{ message['content'] if message['content'] is string else '' }}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOL_CHAT_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\nYou may call these tools:\n' }}"
    "{% for tool in tools %}{{ tool | tojson }}{{ '\n' }}{% endfor %}"
    "{{ 'To call a tool answer <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>' }}"
    "{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{{ '<tool_call>' }}{{ call['function'] | tojson }}{{ '</tool_call>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# ---------------------------------------------------------------------------
# File types
# ---------------------------------------------------------------------------

# name -> (LlamaFileType member name, GGMLQuantizationType member name)
_FILE_TYPE_NAMES: dict[str, tuple[str, str]] = {
    "F32": ("ALL_F32", "F32"),
    "F16": ("MOSTLY_F16", "F16"),
    "BF16": ("MOSTLY_BF16", "BF16"),
    "Q8_0": ("MOSTLY_Q8_0", "Q8_0"),
    "Q5_1": ("MOSTLY_Q5_1", "Q5_1"),
    "Q5_0": ("MOSTLY_Q5_0", "Q5_0"),
    "Q4_1": ("MOSTLY_Q4_1", "Q4_1"),
    "Q4_0": ("MOSTLY_Q4_0", "Q4_0"),
}
FILE_TYPES: tuple[str, ...] = tuple(_FILE_TYPE_NAMES)

# Token types as written in tokenizer.ggml.token_type (gguf.TokenType values).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_BIAS_DIM = 0          # hidden dimension carrying the "printable token" bias
_OUT_BIAS = 8.0        # |output.weight[:, _BIAS_DIM]|
_SPM_SPACE = "\u2581"  # SentencePiece's word-boundary marker


def _gguf():
    import gguf  # lazy: ~80 ms, and nothing here should run at import time

    return gguf


def _file_type(name: str):
    key = str(name).upper()
    if key not in _FILE_TYPE_NAMES:
        raise ValueError(f"unsupported file_type {name!r}; choose one of {', '.join(FILE_TYPES)}")
    gguf = _gguf()
    ftype_name, qtype_name = _FILE_TYPE_NAMES[key]
    return key, gguf.LlamaFileType[ftype_name], gguf.GGMLQuantizationType[qtype_name]


# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

_WORDS = (
    "the of and to in is was for on that with as by it at from he she they we you "
    "this be are or an his her their not but have has had one all were there which "
    "when will can more no if out so what up time about into than them some could "
    "would only other new over also after first two like just may any these then "
    "how most well way our use work day good world hello model token small tiny test "
    "local server host load run fast slow data byte word text line name value file "
    "list read write open close start stop red blue green light dark cat dog tree "
    "water fire stone river city house road night morning sun moon star sky"
).split()
_SUFFIXES = ("ing", "ed", "er", "ly", "tion", "es", "s", "est")

_PRINTABLE = [c for c in string.printable if 32 < ord(c) < 127]  # no space: that is "▁"


def _prefix_closure(words: Sequence[str], lead: str) -> list[str]:
    """lead+word for each word plus all its prefixes, so SPM merges can reach it."""
    out: list[str] = []
    seen: set[str] = set()
    for w in words:
        for i in range(1, len(w) + 1):
            piece = lead + w[:i]
            if len(piece) > 1 and piece not in seen:
                seen.add(piece)
                out.append(piece)
    return out


def _filler(count: int, taken: set[str], lead: str) -> list[str]:
    """``count`` deterministic unique word-like pieces not in ``taken``."""
    consonants = "bcdfghjklmnprstvwz"
    vowels = "aeiou"
    sylls = [c + v for c in consonants for v in vowels]  # 90 syllables
    out: list[str] = []
    i = 0
    while len(out) < count:
        n, parts = i, []
        while True:
            parts.append(sylls[n % len(sylls)])
            n //= len(sylls)
            if n == 0:
                break
        piece = lead + "".join(parts) + ("" if i % 3 else "n")
        i += 1
        if piece not in taken:
            taken.add(piece)
            out.append(piece)
    return out


@lru_cache(maxsize=8)
def _spm_vocab(vocab_size: int | None) -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """SentencePiece-style ("llama") vocabulary: tokens, scores, token types.

    Ids: 0 <unk>, 1 <s>, 2 </s>, 3 <|im_start|>, 4 <|im_end|>, then 256 byte tokens
    <0x00>..<0xFF>, then "▁", the printable ASCII characters, words with their
    prefixes, suffix pieces, and (to reach ``vocab_size``) word-like fillers.
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types: list[int] = [_UNKNOWN, _CONTROL, _CONTROL, _CONTROL, _CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    n_fixed = len(tokens)
    normal = [_SPM_SPACE] + _PRINTABLE
    normal += _prefix_closure(_WORDS, _SPM_SPACE)
    normal += [p for p in _prefix_closure(_SUFFIXES, "") if p not in normal]
    minimum = n_fixed + 1 + len(_PRINTABLE)
    if vocab_size is None:
        vocab_size = n_fixed + len(normal)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum}, got {vocab_size}")
    normal = normal[: vocab_size - n_fixed]
    missing = vocab_size - n_fixed - len(normal)
    if missing > 0:
        normal += _filler(missing, set(normal), _SPM_SPACE)
    tokens += normal
    types += [_NORMAL] * len(normal)
    # SPM merges prefer higher scores: longer pieces first, then earlier ones.
    scores = [0.0] * n_fixed + [
        round(len(t) - i / (len(normal) + 1), 4) for i, t in enumerate(normal)
    ]
    return tuple(tokens), tuple(scores), tuple(types)


@lru_cache(maxsize=4)
def _wpm_vocab() -> tuple[tuple[str, ...], tuple[int, ...], dict[str, int]]:
    """WordPiece-style ("bert") vocabulary as llama.cpp expects it in GGUF: word-initial
    pieces carry a leading "▁", continuation pieces are bare (no "##")."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = list(special)
    types = [_CONTROL, _UNKNOWN, _CONTROL, _CONTROL, _CONTROL]
    chars = [c for c in _PRINTABLE if not c.isupper()]  # WPM lower-cases its input
    pieces = [_SPM_SPACE + c for c in chars] + chars
    pieces += [_SPM_SPACE + w for w in _WORDS]
    pieces += [p for p in _prefix_closure(_WORDS, "") if len(p) > 1]
    pieces += list(_SUFFIXES)
    seen: set[str] = set(tokens)
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(_NORMAL)
    ids = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    return tuple(tokens), tuple(types), ids


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _quantize(arr: np.ndarray, qtype: Any) -> np.ndarray:
    """gguf's quantizer, applied in ~1M-element chunks: ``gguf.quants.quantize`` works in
    groups of 16 rows, which is slow for the narrow 32k-row embedding matrices here."""
    gguf = _gguf()
    impl = getattr(gguf.quants, qtype.name, None)
    if impl is None or not hasattr(impl, "quantize_rows"):
        return gguf.quants.quantize(arr, qtype)
    rows = arr.reshape(-1, arr.shape[-1])
    step = max(1, (1 << 20) // rows.shape[1])
    out = np.concatenate([impl.quantize_rows(rows[i : i + step]) for i in range(0, rows.shape[0], step)])
    return out.reshape(*arr.shape[:-1], out.shape[-1])


class _Tensors:
    """Collects tensors, converting weight matrices to the requested file type."""

    def __init__(self, qtype: Any) -> None:
        self.qtype = qtype
        self.items: list[tuple[str, np.ndarray, Any]] = []
        self.n_params = 0

    def weight(self, name: str, arr: np.ndarray) -> None:
        """A 2-D (or stacked 3-D) weight: stored in the file type when its rows allow."""
        gguf = _gguf()
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        self.n_params += int(arr.size)
        q = self.qtype
        Q = gguf.GGMLQuantizationType
        if q == Q.F32:
            self.items.append((name, arr, None))
        elif q == Q.F16:
            self.items.append((name, arr.astype(np.float16), None))
        else:
            block = gguf.GGML_QUANT_SIZES[q][0]
            if arr.shape[-1] % block:
                # rows not divisible into blocks: F16, as llama.cpp's quantizer falls back
                self.items.append((name, arr.astype(np.float16), None))
            else:
                self.items.append((name, _quantize(arr, q), q))

    def f32(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        self.n_params += int(arr.size)
        self.items.append((name, arr, None))


_PACKED_ARRAYS: dict[int, tuple[Any, Any, bytes]] = {}
_WRITER_CLASS: Any = None


def _writer_class():
    """GGUFWriter that memoises the serialisation of the big (cached, immutable) vocabulary
    tuples: GGUFWriter packs arrays item by item in Python, ~90 ms for a 32k vocabulary,
    which would dominate writing thousands of vocabulary-heavy files."""
    global _WRITER_CLASS
    if _WRITER_CLASS is None:
        gguf = _gguf()

        class _Writer(gguf.GGUFWriter):
            def _pack_val(self, val, vtype, add_vtype, sub_type=None):  # type: ignore[override]
                if not (vtype == gguf.GGUFValueType.ARRAY and isinstance(val, tuple) and len(val) >= 1024):
                    return super()._pack_val(val, vtype, add_vtype, sub_type)
                key = (self.endianess, vtype, add_vtype, sub_type)
                hit = _PACKED_ARRAYS.get(id(val))
                if hit is not None and hit[0] is val and hit[1] == key:
                    return hit[2]
                packed = super()._pack_val(val, vtype, add_vtype, sub_type)
                if len(_PACKED_ARRAYS) >= 32:
                    _PACKED_ARRAYS.clear()
                _PACKED_ARRAYS[id(val)] = (val, key, packed)  # holding val keeps its id unique
                return packed

        _WRITER_CLASS = _Writer
    return _WRITER_CLASS


def _add_hparams(w, *, name, size_label, ftype, context_length, n_embd, n_layer, n_ff,
                 n_head, n_head_kv) -> None:
    """The general and per-architecture hyper-parameters every synthetic model carries."""
    if name is not None:
        w.add_name(name)
    if size_label is not None:
        w.add_size_label(size_label)
    w.add_file_type(int(ftype))
    w.add_quantization_version(_gguf().GGML_QUANT_VERSION)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)


def _write(path: pathlib.Path, writer_setup, tensors: _Tensors, arch: str) -> None:
    """Write atomically: a ``.part`` file renamed into place once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    w = _writer_class()(str(part), arch)
    try:
        try:
            writer_setup(w)
            for name, arr, raw in tensors.items:
                w.add_tensor(name, arr, raw_dtype=raw)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _normal(rng: np.random.Generator, shape: Sequence[int], std: float) -> np.ndarray:
    """Zero-mean random weights with standard deviation ``std`` (uniform, not Gaussian:
    about 4x faster to draw, which matters for the 150M-parameter bench model)."""
    a = rng.random(size=tuple(shape), dtype=np.float32)
    a -= np.float32(0.5)
    a *= np.float32(std * 2.0 * np.sqrt(3.0))
    return a


def _write_llama(
    path: os.PathLike[str] | str,
    *,
    seed: int,
    n_embd: int,
    n_layer: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    context_length: int,
    file_type: str,
    name: str | None,
    size_label: str | None,
    chat_template: str | None,
    vocab_size: int | None,
    expert_count: int | None = None,
    expert_used_count: int | None = None,
    tie_output: bool = False,
) -> SyntheticModel:
    path = pathlib.Path(path)
    ft_name, ftype, qtype = _file_type(file_type)
    head_dim = n_embd // n_head
    if head_dim * n_head != n_embd or head_dim < 32 or n_head % n_head_kv:
        raise ValueError("need n_embd = n_head * head_dim with head_dim >= 32 and n_head % n_head_kv == 0")
    if context_length < 1:
        raise ValueError("context_length must be positive")
    if expert_count is not None:
        if not (1 <= (expert_used_count or 0) <= expert_count):
            raise ValueError("need 1 <= expert_used_count <= expert_count")

    tokens, scores, types = _spm_vocab(vocab_size)
    n_vocab = len(tokens)
    good = np.asarray(types, dtype=np.int8) == _NORMAL  # printable pieces only
    rng = np.random.default_rng(seed)
    t = _Tensors(qtype)
    B = _BIAS_DIM
    n_kv = head_dim * n_head_kv

    def proj(n_out: int, n_in: int, *, hide_in: bool, hide_out: bool, extra: Sequence[int] = ()) -> np.ndarray:
        m = _normal(rng, (*extra, n_out, n_in), 1.0 / np.sqrt(n_in))
        if hide_in:
            m[..., :, B] = 0.0   # layers cannot read the bias dimension ...
        if hide_out:
            m[..., B, :] = 0.0   # ... nor write to it
        return m

    # token embeddings: noise plus a large positive constant in the bias dimension
    emb = _normal(rng, (n_vocab, n_embd), 0.25 if tie_output else 1.0)
    if tie_output:
        # token_embd is also the output layer: printable tokens get a larger constant
        # than the others, so whatever the input token, printable logits win by far.
        emb[:, B] = np.where(good, 4.0, 1.0) * np.sqrt(n_embd)
    else:
        emb[:, B] = 2.0 * np.sqrt(n_embd)
    t.weight("token_embd.weight", emb)
    for i in range(n_layer):
        p = f"blk.{i}."
        t.f32(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        t.weight(p + "attn_q.weight", proj(n_embd, n_embd, hide_in=True, hide_out=False))
        t.weight(p + "attn_k.weight", proj(n_kv, n_embd, hide_in=True, hide_out=False))
        t.weight(p + "attn_v.weight", proj(n_kv, n_embd, hide_in=True, hide_out=False))
        t.weight(p + "attn_output.weight", proj(n_embd, n_embd, hide_in=False, hide_out=True))
        t.f32(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        if expert_count is None:
            t.weight(p + "ffn_gate.weight", proj(n_ff, n_embd, hide_in=True, hide_out=False))
            t.weight(p + "ffn_up.weight", proj(n_ff, n_embd, hide_in=True, hide_out=False))
            t.weight(p + "ffn_down.weight", proj(n_embd, n_ff, hide_in=False, hide_out=True))
        else:
            E = expert_count
            router = proj(E, n_embd, hide_in=True, hide_out=False)
            t.f32(p + "ffn_gate_inp.weight", router)  # llama.cpp keeps the router F32
            t.weight(p + "ffn_gate_exps.weight", proj(n_ff, n_embd, hide_in=True, hide_out=False, extra=(E,)))
            t.weight(p + "ffn_up_exps.weight", proj(n_ff, n_embd, hide_in=True, hide_out=False, extra=(E,)))
            t.weight(p + "ffn_down_exps.weight", proj(n_embd, n_ff, hide_in=False, hide_out=True, extra=(E,)))
    t.f32("output_norm.weight", np.ones(n_embd, np.float32))
    if not tie_output:
        out = _normal(rng, (n_vocab, n_embd), 0.5)
        out[:, B] = np.where(good, _OUT_BIAS, -_OUT_BIAS)
        t.weight("output.weight", out)

    def setup(w) -> None:
        _add_hparams(w, name=name, size_label=size_label, ftype=ftype,
                     context_length=context_length, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff,
                     n_head=n_head, n_head_kv=n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_vocab_size(n_vocab)
        if expert_count is not None:
            w.add_expert_count(expert_count)
            w.add_expert_used_count(expert_used_count)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        if chat_template is not None:
            w.add_chat_template(chat_template)

    _write(path, setup, t, "llama")
    return SyntheticModel(
        path=path,
        architecture="llama",
        kind="llm",
        n_params=t.n_params,
        context_length=context_length,
        file_type=ft_name,
        size_label=size_label,
        name=name,
        expert_count=expert_count,
        expert_used_count=expert_used_count if expert_count is not None else None,
        chat_template=chat_template,
        vocab_size=n_vocab,
    )


# ---------------------------------------------------------------------------
# Public writers
# ---------------------------------------------------------------------------


def write_dense_llama(
    path: os.PathLike[str] | str,
    *,
    seed: int = 0,
    context_length: int = 2048,
    file_type: str = "F16",
    name: str | None = "Tiny Llama",
    size_label: str | None = None,
    with_tool_template: bool = False,
    vocab_size: int | None = None,
    chat_template: str | None = None,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 256,
) -> SyntheticModel:
    """A tiny dense llama (~1 MB in F16, ~0.5 MB in Q8_0) with a ChatML-like chat template.

    ``with_tool_template`` writes a template that renders ``tools``;
    ``chat_template`` (if given) overrides both built-in templates.
    ``vocab_size=None`` gives the built-in vocabulary (about 680 tokens)."""
    if chat_template is None:
        chat_template = TOOL_CHAT_TEMPLATE if with_tool_template else CHAT_TEMPLATE
    return _write_llama(
        path, seed=seed, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
        n_ff=n_ff, context_length=context_length, file_type=file_type, name=name,
        size_label=size_label, chat_template=chat_template, vocab_size=vocab_size,
    )


def write_moe_llama(
    path: os.PathLike[str] | str,
    *,
    seed: int = 0,
    context_length: int = 2048,
    expert_count: int = 4,
    expert_used_count: int = 2,
    file_type: str = "F16",
    name: str | None = "Tiny MoE",
    size_label: str | None = None,
    n_embd: int = 128,
    n_layer: int = 2,
    n_ff: int = 128,
) -> SyntheticModel:
    """A tiny mixture-of-experts llama (llama.expert_count / expert_used_count, router
    ``ffn_gate_inp`` and stacked ``ffn_{gate,up,down}_exps``)."""
    return _write_llama(
        path, seed=seed, n_embd=n_embd, n_layer=n_layer, n_head=4, n_head_kv=2, n_ff=n_ff,
        context_length=context_length, file_type=file_type, name=name, size_label=size_label,
        chat_template=CHAT_TEMPLATE, vocab_size=None,
        expert_count=expert_count, expert_used_count=expert_used_count,
    )


def write_bert_embedding(
    path: os.PathLike[str] | str,
    *,
    seed: int = 0,
    context_length: int = 512,
    file_type: str = "F16",
    name: str | None = "Tiny Embed",
    size_label: str | None = None,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 256,
) -> SyntheticModel:
    """A tiny BERT embedding model with mean pooling (``bert.pooling_type`` = 1)."""
    gguf = _gguf()
    path = pathlib.Path(path)
    ft_name, ftype, qtype = _file_type(file_type)
    if n_embd % n_head or n_embd // n_head < 32:
        raise ValueError("need n_embd = n_head * head_dim with head_dim >= 32")
    tokens, types, ids = _wpm_vocab()
    n_vocab = len(tokens)
    n_token_types = 2
    rng = np.random.default_rng(seed)
    t = _Tensors(qtype)

    def lin(prefix: str, n_out: int, n_in: int) -> None:
        t.weight(prefix + ".weight", _normal(rng, (n_out, n_in), 1.0 / np.sqrt(n_in)))
        t.f32(prefix + ".bias", _normal(rng, (n_out,), 0.02))

    def norm(prefix: str) -> None:
        t.f32(prefix + ".weight", np.ones(n_embd, np.float32))
        t.f32(prefix + ".bias", np.zeros(n_embd, np.float32))

    t.weight("token_embd.weight", _normal(rng, (n_vocab, n_embd), 1.0))
    # llama.cpp needs these two in F32 (they are added to the F32 token embeddings)
    t.f32("token_types.weight", _normal(rng, (n_token_types, n_embd), 0.1))
    t.f32("position_embd.weight", _normal(rng, (context_length, n_embd), 0.1))
    norm("token_embd_norm")
    for i in range(n_layer):
        p = f"blk.{i}."
        lin(p + "attn_q", n_embd, n_embd)
        lin(p + "attn_k", n_embd, n_embd)
        lin(p + "attn_v", n_embd, n_embd)
        lin(p + "attn_output", n_embd, n_embd)
        norm(p + "attn_output_norm")
        lin(p + "ffn_up", n_ff, n_embd)
        lin(p + "ffn_down", n_embd, n_ff)
        norm(p + "layer_output_norm")

    def setup(w) -> None:
        _add_hparams(w, name=name, size_label=size_label, ftype=ftype,
                     context_length=context_length, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff,
                     n_head=n_head, n_head_kv=n_head)
        w.add_layer_norm_eps(1e-12)
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_vocab_size(n_vocab)
        w.add_tokenizer_model("bert")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_type_count(n_token_types)
        w.add_pad_token_id(ids["pad"])
        w.add_unk_token_id(ids["unk"])
        w.add_bos_token_id(ids["cls"])  # llama.cpp uses BOS as [CLS]; no EOS, like converted BERTs
        w.add_sep_token_id(ids["sep"])  # appended by llama.cpp's WPM tokenizer
        w.add_mask_token_id(ids["mask"])
        w.add_add_bos_token(True)

    _write(path, setup, t, "bert")
    return SyntheticModel(
        path=path, architecture="bert", kind="embedding", n_params=t.n_params,
        context_length=context_length, file_type=ft_name, size_label=size_label, name=name,
        expert_count=None, expert_used_count=None, chat_template=None, vocab_size=n_vocab,
    )


def write_bench_model(
    path: os.PathLike[str] | str,
    *,
    seed: int = 0,
    file_type: str = "Q8_0",
    context_length: int = 4096,
    name: str | None = "Bench Llama 150M",
    size_label: str | None = "150M",
) -> SyntheticModel:
    """A ~153M-parameter llama (768 wide, 12 layers, 32k vocabulary), Q8_0 (~163 MB)."""
    return _write_llama(
        path, seed=seed, n_embd=768, n_layer=12, n_head=12, n_head_kv=4, n_ff=3072,
        context_length=context_length, file_type=file_type, name=name, size_label=size_label,
        chat_template=CHAT_TEMPLATE, vocab_size=32000,
    )


def write_vocab_heavy_llama(
    path: os.PathLike[str] | str,
    *,
    vocab_size: int = 32000,
    seed: int = 0,
    file_type: str = "Q8_0",
    name: str | None = "Vocab Heavy Llama",
    context_length: int = 2048,
) -> SyntheticModel:
    """Tiny layers (32 wide, 1 layer) with a full-size vocabulary in the header;
    the output layer is tied to token_embd to keep the file small (~1.9 MB at 32k)."""
    return _write_llama(
        path, seed=seed, n_embd=32, n_layer=1, n_head=1, n_head_kv=1, n_ff=64,
        context_length=context_length, file_type=file_type, name=name, size_label=None,
        chat_template=CHAT_TEMPLATE, vocab_size=vocab_size, tie_output=True,
    )


DEMO_MODELS = (
    ("lmhost", "tiny-llama-GGUF", "tiny-llama-F16.gguf"),
    ("lmhost", "tiny-moe-GGUF", "tiny-moe-F16.gguf"),
    ("lmhost", "tiny-embed-GGUF", "tiny-embed-F16.gguf"),
)


def write_demo_models(models_dir: os.PathLike[str] | str) -> list[SyntheticModel]:
    """Write the three demo models in LM Studio's ``<publisher>/<folder>/<file>.gguf`` layout."""
    root = pathlib.Path(models_dir)
    (llm, moe, embed) = (root.joinpath(*parts) for parts in DEMO_MODELS)
    return [
        write_dense_llama(llm, seed=0, file_type="F16", name="Tiny Llama"),
        write_moe_llama(moe, seed=1, file_type="F16", name="Tiny MoE",
                        expert_count=4, expert_used_count=2),
        write_bert_embedding(embed, seed=2, file_type="F16", name="Tiny Embed"),
    ]
