"""The fast header reader agrees with the gguf package and fails cleanly on bad bytes."""

from __future__ import annotations

import random
import struct

import gguf
import pytest

from tests.helpers import write_gguf
from workers.gguf_header import ArrayValue, GgufError, parse_header, read_header


def test_reads_what_the_gguf_package_wrote(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", name="Tiny", file_type=7, context_length=8192,
                      chat_template="{{ messages }}",
                      extra={"tokenizer.ggml.tokens": [f"t{i}" for i in range(1000)],
                             "llama.block_count": 3, "general.flag": True},
                      tensors={"a.weight": (16, 8), "b.weight": (3, 4, 5), "c": (7,)})
    header = read_header(path)
    meta = header.metadata
    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == "Tiny"
    assert meta["general.file_type"] == 7
    assert meta["llama.context_length"] == 8192
    assert meta["tokenizer.chat_template"] == "{{ messages }}"
    assert meta["general.flag"] is True
    assert meta["tokenizer.ggml.tokens"] == ArrayValue(item_type=8, count=1000)
    # gguf stores dims innermost-first: numpy (16, 8) is ne = (8, 16)
    reference = gguf.GGUFReader(path)
    expected = {t.name: tuple(int(d) for d in t.shape) for t in reference.tensors}
    assert {t.name: t.shape for t in header.tensors} == expected
    assert sum(t.n_elements for t in header.tensors) == 16 * 8 + 3 * 4 * 5 + 7


def _header_bytes(kvs: list[bytes], tensors: list[bytes] = (), order="<", version=3) -> bytes:
    return (b"GGUF" + struct.pack(order + "IQQ", version, len(tensors), len(kvs))
            + b"".join(kvs) + b"".join(tensors))


def _s(text: str, order="<") -> bytes:
    raw = text.encode()
    return struct.pack(order + "Q", len(raw)) + raw


def test_nested_arrays_and_big_endian():
    nested = (_s("k.nested") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 2)
              + struct.pack("<IQ", 4, 3) + struct.pack("<3I", 1, 2, 3)
              + struct.pack("<IQ", 8, 2) + _s("x") + _s("yz"))
    after = _s("k.after") + struct.pack("<I", 4) + struct.pack("<I", 42)
    header = parse_header(_header_bytes([nested, after]))
    assert header.metadata["k.nested"] == ArrayValue(9, 2)
    assert header.metadata["k.after"] == 42

    big = _s("k.v", ">") + struct.pack(">I", 5) + struct.pack(">i", -7)
    tensor = _s("w", ">") + struct.pack(">I", 2) + struct.pack(">QQ", 4, 6) + struct.pack(">IQ", 0, 0)
    header = parse_header(_header_bytes([big], [tensor], order=">"))
    assert header.metadata["k.v"] == -7
    assert header.tensors[0].shape == (4, 6)


@pytest.mark.parametrize("data, reason", [
    (b"", "bad magic"),
    (b"GGUX" + bytes(20), "bad magic"),
    (b"GGUF", "truncated"),
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "implausible counts"),
    # an array claiming 2^60 strings in a few bytes: refused before any loop
    (_header_bytes([_s("k") + struct.pack("<IIQ", 9, 8, 1 << 60)]), "truncated"),
    # a string longer than the file
    (_header_bytes([_s("k") + struct.pack("<IQ", 8, 1 << 50)]), "truncated"),
    (_header_bytes([_s("k") + struct.pack("<I", 99)]), "unknown value type 99"),
])
def test_bad_headers_raise_gguf_error(data, reason):
    with pytest.raises(GgufError, match=reason):
        parse_header(data)


def test_every_truncation_of_a_real_header_raises_gguf_error(tmp_path):
    data = write_gguf(tmp_path / "m.gguf", name="Tiny",
                      extra={"tokenizer.ggml.tokens": ["a", "bb", "ccc"]}).read_bytes()
    full = parse_header(data)
    header_end = data.index(b"output_norm.weight") + len("output_norm.weight") + 4 + 8 + 4 + 8
    for cut in range(header_end):
        with pytest.raises(GgufError):
            parse_header(data[:cut])
    assert parse_header(data[:header_end]) == full


def test_random_garbage_after_the_magic_never_escapes_as_another_error():
    rng = random.Random(1234)
    for _ in range(2000):
        data = b"GGUF" + struct.pack("<I", rng.choice([2, 3])) + rng.randbytes(rng.randint(0, 400))
        try:
            parse_header(data)
        except GgufError:
            pass


def test_empty_file(tmp_path):
    (tmp_path / "e.gguf").write_bytes(b"")
    with pytest.raises(GgufError, match="empty"):
        read_header(tmp_path / "e.gguf")


def test_tensor_offsets_and_where_the_data_ends_agree_with_the_gguf_package(tmp_path):
    from lmhost.synthetic import write_dense_llama
    model = write_dense_llama(tmp_path / "q8.gguf", file_type="Q8_0")
    header = read_header(model.path)
    reference = gguf.GGUFReader(model.path)
    assert header.data_offset == reference.data_offset
    offsets = {t.name: (int(t.data_offset) - reference.data_offset, int(t.n_bytes))
               for t in reference.tensors}
    assert {t.name: (t.offset, t.n_bytes) for t in header.tensors} == offsets
    assert header.data_end() == max(int(t.data_offset) + int(t.n_bytes) for t in reference.tensors)
    assert header.data_end() <= model.path.stat().st_size


def test_a_file_whose_tensor_data_runs_past_its_end_is_refused(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tensors={"a.weight": (64, 64), "b": (64,)})
    full = path.read_bytes()
    header = read_header(path)
    path.write_bytes(full[:header.data_end() - 1])  # one byte short: an interrupted download
    with pytest.raises(GgufError, match="incomplete: its tensor data ends at byte"):
        read_header(path)
    path.write_bytes(full[:header.data_offset])  # the header alone, no data at all
    with pytest.raises(GgufError, match="incomplete"):
        read_header(path)
    path.write_bytes(full + b"\0" * 100)  # padding after the data is fine
    assert read_header(path).data_end() == header.data_end()


def test_general_alignment_moves_the_data_section(tmp_path):
    default = parse_header(_header_bytes([], [_s("t") + struct.pack("<IQIQ", 1, 32, 0, 0)]))
    assert default.data_offset % 32 == 0 and default.data_offset >= 24 + 8 + 1 + 4 + 8 + 4 + 8
    aligned = parse_header(_header_bytes(
        [_s("general.alignment") + struct.pack("<II", 4, 256)],
        [_s("t") + struct.pack("<IQIQ", 1, 32, 0, 0)]))
    assert aligned.data_offset == 256
    assert aligned.data_end() == 256 + 32 * 4  # one F32 tensor of 32 elements
