"""safetensors_header: a layout only for a well-formed file, None for anything else, never an
exception (hostile headers included)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.chunking.safetensors import LENGTH_BYTES, Layout, Tensor, parse_header, read_layout
from tests.helpers import random_bytes, safetensors_bytes

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_HEADER = 1024 * 1024


def _header(entries: dict) -> bytes:
    return json.dumps(entries).encode()


def _file_size(header: bytes, data_len: int) -> int:
    return LENGTH_BYTES + len(header) + data_len


def _layout_of(data: bytes, tmp_path, max_header: int = MAX_HEADER) -> Layout | None:
    path = tmp_path / "f.safetensors"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_layout(fd, len(data), max_header)
    finally:
        os.close(fd)


def test_layout_lists_tensors_in_file_order(tmp_path):
    data = safetensors_bytes(
        [
            ("b", "BF16", [3, 2], random_bytes(12, 1)),
            ("a", "F32", [2], random_bytes(8, 2)),
            ("empty", "F16", [0, 5], b""),
            ("ids", "I64", [1], random_bytes(8, 3)),
            ("new", "F8_E8M0", [7, 3], random_bytes(5, 4)),  # unknown dtype: size not checked
        ],
        metadata={"format": "pt"},
    )
    layout = _layout_of(data, tmp_path)
    header_end = LENGTH_BYTES + int.from_bytes(data[:8], "little")
    assert layout == Layout(
        header_end,
        (
            Tensor(header_end, header_end + 12, 2, 2),
            Tensor(header_end + 12, header_end + 20, 4, 4),
            Tensor(header_end + 20, header_end + 20, 2, 2),
            Tensor(header_end + 20, header_end + 28, 8, 1),
            Tensor(header_end + 28, header_end + 33, 1, 1),
        ),
    )


def test_header_only_file_has_no_tensors(tmp_path):
    data = safetensors_bytes([], metadata={})
    assert _layout_of(data, tmp_path) == Layout(len(data), ())


def test_offsets_need_not_follow_header_order():
    header = _header(
        {
            "second": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]},
            "first": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        }
    )
    layout = parse_header(header, _file_size(header, 5))
    assert [(t.begin - layout.header_end, t.end - layout.header_end) for t in layout.tensors] == [(0, 3), (3, 5)]


def _entry(begin: int, end: int, dtype: str = "U8", shape: list | None = None) -> dict:
    return {"dtype": dtype, "shape": [end - begin] if shape is None else shape, "data_offsets": [begin, end]}


REFUSED_HEADERS = {
    "gap": ({"a": _entry(0, 4), "b": _entry(5, 8)}, 8),
    "overlap": ({"a": _entry(0, 5), "b": _entry(4, 8)}, 8),
    "short of the end": ({"a": _entry(0, 4)}, 8),
    "past the end": ({"a": _entry(0, 9, shape=[9])}, 8),
    "not from zero": ({"a": _entry(1, 8)}, 8),
    "end before begin": ({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}, "b": _entry(0, 8)}, 8),
    "size disagrees with shape": ({"a": _entry(0, 8, "F32", [3])}, 8),
    "size disagrees with dtype": ({"a": _entry(0, 8, "BF16", [8])}, 8),
    "negative dim": ({"a": _entry(0, 8, shape=[-8])}, 8),
    "float dim": ({"a": _entry(0, 8, shape=[8.0])}, 8),
    "bool dim": ({"a": _entry(0, 1, shape=[True])}, 1),
    "bool offset": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, 1),
    "three offsets": ({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8, 8]}}, 8),
    "offsets not a list": ({"a": {"dtype": "U8", "shape": [8], "data_offsets": {"0": 8}}}, 8),
    "shape not a list": ({"a": {"dtype": "U8", "shape": 8, "data_offsets": [0, 8]}}, 8),
    "dtype not a string": ({"a": {"dtype": 1, "shape": [8], "data_offsets": [0, 8]}}, 8),
    "no dtype": ({"a": {"shape": [8], "data_offsets": [0, 8]}}, 8),
    "entry not an object": ({"a": [0, 8]}, 8),
    "huge offsets": ({"a": _entry(0, 2**70, shape=[2**70])}, 8),
    "a million dimensions": ({"a": _entry(0, 8, shape=[2] * 1_000_000)}, 8),
}


@pytest.mark.parametrize("name", REFUSED_HEADERS)
def test_bad_headers_are_refused(name):
    entries, data_len = REFUSED_HEADERS[name]
    header = _header(entries)
    assert parse_header(header, _file_size(header, data_len)) is None


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"[]",
        b"null",
        b"12",
        b'"x"',
        b"{",
        b'{"a": 1}',
        b"{} {}",
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
def test_bad_json_is_refused(header):
    assert parse_header(header, _file_size(header, 0)) is None


def test_metadata_is_not_a_tensor():
    header = _header({"__metadata__": {"anything": [1, 2]}, "a": _entry(0, 2)})
    layout = parse_header(header, _file_size(header, 2))
    assert len(layout.tensors) == 1


@pytest.mark.parametrize("length", [2**64 - 1, 2**63, MAX_HEADER + 1])
def test_a_header_length_past_the_limit_is_not_read(tmp_path, length):
    data = length.to_bytes(8, "little") + b"{}" + bytes(MAX_HEADER + 100)
    assert _layout_of(data, tmp_path) is None


def test_header_length_past_the_file_and_short_files(tmp_path):
    assert _layout_of((100).to_bytes(8, "little") + b"{}", tmp_path) is None
    assert _layout_of(b"\x02\x00\x00", tmp_path) is None
    assert _layout_of(b"", tmp_path) is None


def test_header_exactly_at_the_limit_is_read(tmp_path):
    data = safetensors_bytes([("a", "U8", [4], b"abcd")])
    n = int.from_bytes(data[:8], "little")
    assert _layout_of(data, tmp_path, max_header=n) is not None
    assert _layout_of(data, tmp_path, max_header=n - 1) is None


def _assert_tiles(layout: Layout, file_size: int) -> None:
    pos = layout.header_end
    for t in layout.tensors:
        assert t.begin == pos and t.end >= t.begin
        pos = t.end
    assert pos == file_size


@FAST
@given(st.binary(max_size=400), st.integers(0, 1000))
def test_any_header_bytes_give_a_tiling_layout_or_none(header, data_len):
    layout = parse_header(header, _file_size(header, data_len))
    if layout is not None:
        _assert_tiles(layout, _file_size(header, data_len))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(st.lists(st.integers(0, 64), min_size=1, max_size=6), st.data())
def test_mutated_valid_headers_give_a_tiling_layout_or_none(sizes, data):
    entries, pos = {}, 0
    for i, size in enumerate(sizes):
        entries[f"t{i}"] = _entry(pos, pos + size)
        pos += size
    name = data.draw(st.sampled_from(sorted(entries)))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
    if field is None:
        entries[name] = data.draw(_json)
    else:
        entries[name][field] = data.draw(_json)
    header = _header(entries)
    layout = parse_header(header, _file_size(header, pos))
    if layout is not None:
        _assert_tiles(layout, _file_size(header, pos))
