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

import dataclasses
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
    #: The header's name, dtype and shape: filled only by ``parse_header(..., named=True)``
    #: (delta pairing needs them; the chunker does not, and a header of 130,000 tensors would
    #: keep their strings alive).
    name: str = ""
    dtype: str = ""
    shape: tuple[int, ...] = ()

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
    header_end = header_end_of(_pread_exactly(fd, LENGTH_BYTES, 0), file_size, max_header_bytes)
    if header_end is None:
        return None
    n = header_end - LENGTH_BYTES
    header = _pread_exactly(fd, n, LENGTH_BYTES)
    if len(header) != n:  # the file shrank since its fstat
        return None
    return parse_header(header, file_size)


def header_end_of(prefix: bytes, file_size: int, max_header_bytes: int) -> int | None:
    """Where the header of a file of ``file_size`` bytes starting with ``prefix`` (at least its
    first LENGTH_BYTES bytes) ends: ``8 + N``, the bytes a reader needs to parse its layout; None
    when the file cannot be safetensors (too short, a header past ``max_header_bytes`` or past the
    end of the file)."""
    if file_size < LENGTH_BYTES or len(prefix) < LENGTH_BYTES:
        return None
    n = int.from_bytes(prefix[:LENGTH_BYTES], "little")
    if n > max_header_bytes or LENGTH_BYTES + n > file_size:
        return None
    return LENGTH_BYTES + n


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


class _Entry(msgspec.Struct, gc=False):
    """One tensor's header entry, decoded typed (other keys are ignored, as before): far smaller
    and faster than a dict of lists, which a header of 130,000 tensors made 100 MB of."""

    dtype: str
    shape: list[int]
    data_offsets: tuple[int, int]


_ENTRIES = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENTRY = msgspec.json.Decoder(_Entry)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError, ValueError)


def parse_header(header: bytes, file_size: int, *, named: bool = False) -> Layout | None:
    """The layout that the JSON ``header`` describes for a file of ``file_size`` bytes, or None.
    ``named``: each Tensor also keeps its name, dtype and shape.

    Memory: the header's top level is decoded to raw slices of ``header`` (no Python object per
    field), then each entry, one at a time, into a typed Struct that is dropped once its Tensor
    is made."""
    try:
        entries = _ENTRIES.decode(header)
    except _DECODE_ERRORS:
        return None
    header_end = LENGTH_BYTES + len(header)
    data_len = file_size - header_end
    tensors = []
    for name, raw in entries.items():
        if name == "__metadata__":
            continue
        try:
            entry = _ENTRY.decode(raw)
        except _DECODE_ERRORS:
            return None
        tensor = _tensor(entry, header_end, data_len)
        if tensor is None:
            return None
        if named:
            tensor = dataclasses.replace(tensor, name=name, dtype=entry.dtype, shape=tuple(entry.shape))
        tensors.append(tensor)
    del entries
    tensors.sort(key=lambda t: (t.begin, t.end))
    if not _tiles(tensors, header_end, file_size):
        return None
    return Layout(header_end, tuple(tensors))


def _tensor(entry: _Entry, header_end: int, data_len: int) -> Tensor | None:
    begin, end = entry.data_offsets
    if not 0 <= begin <= end <= data_len:
        return None
    shape = entry.shape
    if not all(d >= 0 for d in shape):
        return None
    itemsize = DTYPE_SIZES.get(entry.dtype)
    if itemsize is not None and _byte_size(shape, itemsize, data_len) != end - begin:
        return None
    return Tensor(header_end + begin, header_end + end, itemsize or 1, FLOAT_ELEMENT_SIZES.get(entry.dtype, 1))


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
