"""The layout of a safetensors file, parsed as hostile input (docs/design.md §4).

A safetensors file is ``N`` (u64 little-endian) || ``N`` bytes of UTF-8 JSON || the data region.
The JSON maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the data region), plus an optional ``"__metadata__"`` entry. ``read_layout`` returns
the tensors in file order only when every check holds; anything else (a short file, a header
past the limit, bad JSON, offsets that overlap, leave gaps or miss the end of the file, a size
that disagrees with dtype and shape) returns None and the file is cut as plain bytes: for the
chunker a look-alike is an ordinary file, never an error.

An unknown dtype (safetensors adds some: F8_E8M0, F4, C64, ...) does not refuse the file: its
element size is taken as 1 and its byte size is not checked against its shape, since that needs
the dtype's width (sub-byte for F4). Its bytes still have to tile the data region like any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

#: Bytes per element of the dtypes safetensors documents: cuts inside a tensor fall on these.
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
#: What the codec may byte-group (Chunk.element_size): float data of 2 or 4 bytes. Integers,
#: 8-byte and 1-byte dtypes gain little from grouping and are plain data (1).
FLOAT_ELEMENT_SIZES = {"F16": 2, "BF16": 2, "F32": 4}

LENGTH_BYTES = 8  # the u64 header length


@dataclass(frozen=True, slots=True)
class Tensor:
    """One tensor's bytes ``[begin, end)`` in file offsets."""

    begin: int
    end: int
    #: Bytes per element (1 for an unknown dtype): cuts inside the tensor are multiples of it.
    itemsize: int
    #: Chunk.element_size of chunks of this tensor's data alone: 2/4 for float data, else 1.
    element_size: int

    @property
    def size(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class Layout:
    #: The end of the JSON header (8 + N): where the data region starts.
    header_end: int
    #: Every tensor, in file order; they tile ``[header_end, file size)``.
    tensors: tuple[Tensor, ...]


def read_layout(fd: int, file_size: int, max_header_bytes: int) -> Layout | None:
    """The layout of the open file ``fd`` of ``file_size`` bytes (from its fstat), or None when
    it is not a well-formed safetensors file. Reads at most ``8 + max_header_bytes`` bytes, with
    pread: the file offset is left where it was."""
    if file_size < LENGTH_BYTES:
        return None
    n = int.from_bytes(_pread_exactly(fd, LENGTH_BYTES, 0), "little")
    if n > max_header_bytes or LENGTH_BYTES + n > file_size:
        return None
    header = _pread_exactly(fd, n, LENGTH_BYTES)
    if len(header) != n:  # the file shrank since its fstat
        return None
    return parse_header(header, file_size)


def _pread_exactly(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset``: fewer only at the end of the file."""
    parts = []
    while n > 0:
        part = os.pread(fd, n, offset)
        if not part:
            break
        parts.append(part)
        n -= len(part)
        offset += len(part)
    return b"".join(parts)


def parse_header(header: bytes, file_size: int) -> Layout | None:
    """The layout that the JSON ``header`` describes for a file of ``file_size`` bytes, or None."""
    try:
        entries = msgspec.json.decode(header)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError):
        return None
    if type(entries) is not dict:
        return None
    header_end = LENGTH_BYTES + len(header)
    data_len = file_size - header_end
    tensors = []
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        tensor = _tensor(entry, header_end, data_len)
        if tensor is None:
            return None
        tensors.append(tensor)
    tensors.sort(key=lambda t: (t.begin, t.end))
    if not _tiles(tensors, header_end, file_size):
        return None
    return Layout(header_end, tuple(tensors))


def _tensor(entry: object, header_end: int, data_len: int) -> Tensor | None:
    if type(entry) is not dict:
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if type(dtype) is not str or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
        return None
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end <= data_len:
        return None
    if not all(type(d) is int and d >= 0 for d in shape):
        return None
    itemsize = DTYPE_SIZES.get(dtype)
    if itemsize is not None and _byte_size(shape, itemsize, data_len) != end - begin:
        return None
    return Tensor(header_end + begin, header_end + end, itemsize or 1, FLOAT_ELEMENT_SIZES.get(dtype, 1))


def _byte_size(shape: list[int], itemsize: int, limit: int) -> int | None:
    """prod(shape) * itemsize, or None once it passes ``limit``: a hostile shape of a million
    dimensions must not build a million-digit integer."""
    if 0 in shape:
        return 0
    size = itemsize
    for d in shape:
        size *= d
        if size > limit:
            return None
    return size


def _tiles(tensors: list[Tensor], start: int, end: int) -> bool:
    """Whether the sorted ``tensors`` cover ``[start, end)`` exactly: no gap, no overlap."""
    pos = start
    for t in tensors:
        if t.begin != pos:
            return False
        pos = t.end
    return pos == end
