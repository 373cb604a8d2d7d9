"""A fast, bounds-checked reader for the header of a GGUF file.

`gguf.GGUFReader` decodes every array in the header (the vocabulary, scores, merges) and takes
seconds on real models; listing needs only scalar key/values and the tensor shapes. This reader
maps the file, reads scalars and strings, and steps over arrays without building them, so a
32k-token vocabulary costs a few milliseconds.

Every read is checked against the file's size, and every count is checked against the bytes left
before a loop starts, so a truncated or hostile file raises `GgufError` quickly instead of
looping or allocating: the loops are bounded by the file's length.

The tensor table also says where the data ends (each tensor's offset plus its size, from its
type and shape): `read_header` refuses a file whose tensor data runs past its end, such as an
interrupted download, whose header alone looks fine.

GGUF layout (v2/v3, little- or big-endian): magic "GGUF", u32 version, u64 tensor count,
u64 key/value count, the key/values, then one info record per tensor
(name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset), then the tensor data, from
the end of the header rounded up to ``general.alignment`` (32 by default); tensor offsets
count from there.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

from workers import quantization

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# Value types of the GGUF key/value section: type id -> struct format (scalars only).
_SCALAR_FORMATS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}
_STRING = 8
_ARRAY = 9

# Sane ceilings: real files have hundreds of keys and at most a few thousand tensors.
MAX_KV_COUNT = 1 << 20
MAX_TENSOR_COUNT = 1 << 20
MAX_DIMS = 8


class GgufError(ValueError):
    """The file is not a GGUF file this reader can parse (the message says why)."""


@dataclass(frozen=True)
class ArrayValue:
    """An array in the header, stepped over: only its element type and length are kept."""

    item_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int = 0  # of its data, from the start of the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def n_bytes(self) -> int | None:
        """Its data's size; None for a ggml type this reader does not know."""
        return quantization.tensor_bytes(self.ggml_type, self.n_elements)


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict  # key -> int | float | bool | str | ArrayValue
    tensors: tuple[TensorInfo, ...]
    data_offset: int = 0  # where the tensor data starts in the file

    def data_end(self) -> int:
        """Where the last tensor's data ends in the file (tensors of unknown types left out)."""
        return self.data_offset + max((t.offset + (t.n_bytes or 0) for t in self.tensors), default=0)


class _Cursor:
    """Reads little- or big-endian values from a buffer, refusing to read past its end."""

    __slots__ = ("buf", "end", "off", "order")

    def __init__(self, buf, order: str):
        self.buf = buf
        self.end = len(buf)
        self.off = 0
        self.order = order

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.off + n > self.end:
            raise GgufError(f"truncated: {what} needs {n} bytes at offset {self.off}, file has {self.end}")

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.off)
        self.off += size
        return value

    def string(self, what: str) -> str:
        length = self.scalar("Q", what)
        self.need(length, what)
        raw = bytes(self.buf[self.off:self.off + length])
        self.off += length
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        # Each string is at least its 8-byte length: reject impossible counts before looping.
        self.need(count * 8, what)
        unpack = struct.Struct(self.order + "Q").unpack_from
        buf, off, end = self.buf, self.off, self.end
        for _ in range(count):
            if off + 8 > end:
                raise GgufError(f"truncated: {what} at offset {off}")
            off += 8 + unpack(buf, off)[0]
        if off > end:
            raise GgufError(f"truncated: {what} ends at {off}, file has {end}")
        self.off = off


def _read_value(cur: _Cursor, value_type: int, key: str):
    fmt = _SCALAR_FORMATS.get(value_type)
    if fmt is not None:
        return cur.scalar(fmt, key)
    if value_type == _STRING:
        return cur.string(key)
    if value_type == _ARRAY:
        item_type = cur.scalar("I", key)
        count = cur.scalar("Q", key)
        _skip_array(cur, item_type, count, key)
        return ArrayValue(item_type, count)
    raise GgufError(f"unknown value type {value_type} for key {key!r}")


def _skip_array(cur: _Cursor, item_type: int, count: int, key: str) -> None:
    fmt = _SCALAR_FORMATS.get(item_type)
    if fmt is not None:
        size = struct.calcsize(fmt) * count
        cur.need(size, key)
        cur.off += size
    elif item_type == _STRING:
        cur.skip_strings(count, key)
    elif item_type == _ARRAY:
        cur.need(count * 12, key)  # each nested array is at least its type and count
        for _ in range(count):
            inner_type = cur.scalar("I", key)
            inner_count = cur.scalar("Q", key)
            _skip_array(cur, inner_type, inner_count, key)
    else:
        raise GgufError(f"unknown array item type {item_type} for key {key!r}")


def parse_header(buf) -> GgufHeader:
    """Parse the header from a bytes-like object holding (at least) the start of a GGUF file."""
    if len(buf) < 4 or bytes(buf[:4]) != MAGIC:
        raise GgufError("not a GGUF file (bad magic)")
    cur = _Cursor(buf, "<")
    cur.off = 4
    version = cur.scalar("I", "version")
    if version & 0xFFFF == 0 and version:  # a big-endian file read as little-endian
        cur.order = ">"
        cur.off = 4
        version = cur.scalar("I", "version")
    if version not in (2, 3):
        raise GgufError(f"unsupported GGUF version {version}")
    tensor_count = cur.scalar("Q", "tensor count")
    kv_count = cur.scalar("Q", "key/value count")
    if kv_count > MAX_KV_COUNT or tensor_count > MAX_TENSOR_COUNT:
        raise GgufError(f"implausible counts: {kv_count} keys, {tensor_count} tensors")

    metadata: dict = {}
    for _ in range(kv_count):
        key = cur.string("key")
        value_type = cur.scalar("I", key)
        metadata[key] = _read_value(cur, value_type, key)

    tensors = []
    for _ in range(tensor_count):
        name = cur.string("tensor name")
        n_dims = cur.scalar("I", name)
        if n_dims > MAX_DIMS:
            raise GgufError(f"tensor {name!r} has {n_dims} dimensions")
        cur.need(8 * n_dims, name)
        shape = struct.unpack_from(f"{cur.order}{n_dims}Q", cur.buf, cur.off)
        cur.off += 8 * n_dims
        ggml_type = cur.scalar("I", name)
        offset = cur.scalar("Q", name)
        tensors.append(TensorInfo(name, tuple(shape), ggml_type, offset))
    alignment = metadata.get("general.alignment")
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_offset = -(-cur.off // alignment) * alignment
    return GgufHeader(version, metadata, tuple(tensors), data_offset)


def read_header(path: str | os.PathLike) -> GgufHeader:
    """Read the header of the GGUF file at `path` (the file is mapped, not read whole). A file
    whose tensor data runs past its end is incomplete: `GgufError`."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise GgufError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            header = parse_header(mapped)
    end = header.data_end()
    if end > size:
        raise GgufError(f"incomplete: its tensor data ends at byte {end:,} but the file has "
                        f"{size:,} bytes (an interrupted download?)")
    return header
