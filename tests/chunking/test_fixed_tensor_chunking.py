"""Format 3's tensor-relative cuts ("safetensors-fixed-v1", docs/design.md §4): a large tensor is
cut every ``tensor_chunk_bytes`` from its own start whatever its values; the header, the groups
of small tensors and any file that is not safetensors are cut exactly as format 2 cuts them.
Golden tests pin the boundaries (a moved boundary silently breaks dedup and delta pairing across
a team); property tests check the rule on any bytes."""

from __future__ import annotations

import os
import random

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.chunking.tensors import (
    MAX_TENSOR_CHUNK_BYTES,
    MIN_TENSOR_CHUNK_BYTES,
    TensorChunkingParams,
    iter_file_chunks,
)
from tests.chunking.test_tensor_chunking import (
    _KINDS,
    FAST,
    TINY,
    TINY_TENSORS,
    _assert_tiles,
    _golden_tensors,
    _layout,
    _mutate,
    _plain,
    _write,
)
from tests.helpers import random_bytes, safetensors_bytes

KiB = 1024
MiB = 1024 * KiB
FIXED = TensorChunkingParams.for_chunking(ChunkingParams(), fixed=True)
# Small parameters: the smallest step, so that tensors of a few KiB are cut several times.
TINY_FIXED = TensorChunkingParams(
    max_header_bytes=1024,
    large_tensor_bytes=64,
    tensor_chunk_bytes=MIN_TENSOR_CHUNK_BYTES,
    group_avg_bytes=256,
    group_max_bytes=1024,
)


DEFAULT = ChunkingParams()
FORMAT_2 = TensorChunkingParams()


def _chunks(path, params=DEFAULT, tensors=FIXED, **kw):
    return list(iter_file_chunks(path, params, tensors, **kw))


def _format2(path, params=DEFAULT, tensors=FORMAT_2):
    return list(iter_file_chunks(path, params, tensors))


def _expected_large_cuts(t, step: int) -> list[tuple[int, int]]:
    """(offset, size) of the chunks of the large tensor ``t``: every ``step`` from its start."""
    return [(o, min(step, t.end - o)) for o in range(t.begin, t.end, step)]


# -- golden ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    data = safetensors_bytes(_golden_tensors())
    path = tmp_path_factory.mktemp("golden3") / "model.safetensors"
    path.write_bytes(data)
    return path, data


# (offset, size, element_size, BLAKE3) with format 3's default parameters (the same file as
# format 2's golden test).
GOLDEN_CHUNKS = [
    (0, 5008, 1, "5d6cc03a56409cb317e79df73fb3ede569de7753f081e395e3d9515485584a9c"),
    (5008, 1048576, 2, "3254f6d971427166788946da3e4f02a10b15171f6e0ca561b1cd06631bfb8ae0"),
    (1053584, 1048576, 2, "4e403414384b08d4a03ad3a94edc55918616eb7719b20ac5c6b738d45c9c0ae1"),
    (2102160, 102848, 2, "78dadce2da9da58320d3c3099313521570ddfd86aa0abae41577cbaa2c7f26f1"),
    (2205008, 491520, 2, "c21d420a48005d585508b633f26abbe56ce0f4565f4191bbece5928e98f14cd2"),
    (2696528, 1048576, 4, "c7071a7b89aff040944f326c350f88595a948c6ba03a60d4c15b2249af805745"),
    (3745104, 151424, 4, "9d81c1deb46ae3506f77a1e0984867f5873067dcf1ddec51bf1d577bace18759"),
    (3896528, 11000, 1, "6f4a6f072a1b93e8e5023e71e11609c9ce55c547b08323e772371bb226c17ad8"),
    (3907528, 1048576, 2, "9e73814e542e373fa66efee1255c367704ffc643f42794726329352e90b703fc"),
    (4956104, 1048576, 2, "2ffde6ae8d62b863926055efe5893cf6cb95098ccd1a0e1a10993550a29a983c"),
    (6004680, 905848, 2, "8336ae44395151f1748f450938f908924b1aa9bd5228d93f842c56ddf9506178"),
    (6910528, 777, 1, "46a97a2555a9689eb9a4832aca55b8cce13db2c3737cb1dfe081062a362ed3ba"),
]


def test_default_parameters_cut_golden_boundaries(golden):
    path, _ = golden
    assert [(c.offset, c.size, c.element_size, c.digest) for c in _chunks(path)] == GOLDEN_CHUNKS


def test_golden_large_tensors_are_cut_from_their_start_the_rest_as_format_2(golden):
    path, data = golden
    chunks = _chunks(path)
    _assert_tiles(chunks, data)
    layout = _layout(path)
    large = [t for t in layout.tensors if t.size >= FIXED.large_tensor_bytes]
    assert len(large) == 3  # embed (bf16), proj (f32), head (f16)
    step = FIXED.tensor_chunk_bytes
    for t in large:
        inside = [c for c in chunks if t.begin <= c.offset < t.end]
        assert [(c.offset, c.size) for c in inside] == _expected_large_cuts(t, step)
        assert {c.element_size for c in inside} == {t.element_size}

    # Everything outside the large tensors is format 2's chunks, byte for byte.
    def outside(cs):
        return [c for c in cs if not any(t.begin <= c.offset < t.end for t in large)]

    assert outside(chunks) == outside(_format2(path))


def test_default_step_is_the_average_chunk_size():
    assert FIXED.tensor_chunk_bytes == ChunkingParams().avg_size == 1 * MiB
    assert FIXED.as_dict() == {
        "algorithm": "safetensors-fixed-v1",
        "max_header_bytes": 16 * MiB,
        "large_tensor_bytes": 256 * KiB,
        "tensor_chunk_bytes": 1 * MiB,
        "group_avg_bytes": 1 * MiB,
        "group_max_bytes": 4 * MiB,
    }
    assert list(FIXED.as_dict()) == [
        "algorithm",
        "max_header_bytes",
        "large_tensor_bytes",
        "tensor_chunk_bytes",
        "group_avg_bytes",
        "group_max_bytes",
    ]


# -- what a new version costs --------------------------------------------------------------------------
def test_every_value_of_a_tensor_changed_keeps_its_boundaries_and_others_chunks(golden, tmp_path):
    """A training step moves every weight: format 2's content-defined cuts inside the tensor
    move with them, format 3's stay, so chunk i pairs with chunk i of the previous version."""
    path, data = golden
    proj = next(t for t in _layout(path).tensors if t.size == 300 * 1000 * 4)
    new = data[: proj.begin] + random_bytes(proj.size, 99) + data[proj.end :]
    changed = _write(tmp_path, "changed.safetensors", new)
    before, after = _chunks(path), _chunks(changed)
    assert [(c.offset, c.size) for c in before] == [(c.offset, c.size) for c in after]
    differ = [a for a, b in zip(before, after, strict=True) if a.digest != b.digest]
    assert differ and all(proj.begin <= c.offset < proj.end for c in differ)


# -- properties ----------------------------------------------------------------------------------------
_dtypes = st.sampled_from([("BF16", 2), ("F16", 2), ("F32", 4), ("I64", 8), ("U8", 1), ("F8_E4M3", 1)])


@st.composite
def _tensor_lists(draw):
    """Up to 8 tensors, some large enough (up to 8 KiB) for several fixed cuts of TINY_FIXED."""
    out = []
    for i in range(draw(st.integers(0, 8))):
        dtype, itemsize = draw(_dtypes)
        n = draw(st.integers(0, 8 * KiB // itemsize))
        out.append((f"t{i}", dtype, [n], draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))))
    return out


@FAST
@given(_tensor_lists(), st.booleans())
def test_large_tensors_are_cut_every_step_from_their_start_whatever_the_bytes(tmp_path_factory, tensors, metadata):
    data = safetensors_bytes(tensors, metadata={"m": "x"} if metadata else None)
    path = _write(tmp_path_factory.mktemp("v"), "f", data)
    whole = blake3.blake3()
    seen = []
    chunks = _chunks(path, TINY, TINY_FIXED, whole=whole, on_chunk=lambda c, view: seen.append(bytes(view)))
    _assert_tiles(chunks, data)
    assert whole.hexdigest() == blake3.blake3(data).hexdigest()
    assert seen == [data[c.offset : c.offset + c.size] for c in chunks]
    if len(data) < TINY.min_size:
        assert len(chunks) <= 1
        return
    layout = _layout(path, TINY_FIXED.max_header_bytes)
    for t in layout.tensors:
        if t.size >= TINY_FIXED.large_tensor_bytes:
            inside = [c for c in chunks if t.begin <= c.offset < t.end]
            assert [(c.offset, c.size) for c in inside] == _expected_large_cuts(t, TINY_FIXED.tensor_chunk_bytes)
            assert all(c.element_size == t.element_size for c in inside)


@FAST
@given(_tensor_lists(), st.data())
def test_changing_every_value_of_a_tensor_keeps_the_boundaries(tmp_path_factory, tensors, data):
    large = [i for i, (_, _, _, raw) in enumerate(tensors) if len(raw) >= TINY_FIXED.large_tensor_bytes]
    if not large:
        return
    i = data.draw(st.sampled_from(large))
    name, dtype, shape, raw = tensors[i]
    new_raw = data.draw(st.binary(min_size=len(raw), max_size=len(raw)))
    changed = [*tensors[:i], (name, dtype, shape, new_raw), *tensors[i + 1 :]]
    directory = tmp_path_factory.mktemp("c")
    a = _chunks(_write(directory, "a", safetensors_bytes(tensors)), TINY, TINY_FIXED)
    b = _chunks(_write(directory, "b", safetensors_bytes(changed)), TINY, TINY_FIXED)
    assert [(c.offset, c.size, c.element_size) for c in a] == [(c.offset, c.size, c.element_size) for c in b]


@FAST
@given(_tensor_lists(), st.sampled_from(_KINDS), st.randoms(use_true_random=False))
def test_malformed_safetensors_fall_back_to_format_2s_plain_fastcdc(tmp_path_factory, tensors, kind, rnd):
    data = _mutate(safetensors_bytes(tensors), kind, rnd)
    path = _write(tmp_path_factory.mktemp("m"), "f", data)
    chunks = _chunks(path, TINY, TINY_FIXED)
    _assert_tiles(chunks, data)
    if _layout(path, TINY_FIXED.max_header_bytes) is None:
        assert chunks == _plain(path, TINY) == _format2(path, TINY, TINY_TENSORS)


@FAST
@given(st.binary(max_size=3000))
def test_any_bytes_are_cut_as_format_2_cuts_them(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("b"), "f", data)
    assert _chunks(path, TINY, TINY_FIXED) == _plain(path, TINY)


@pytest.mark.parametrize("kind", ["huge length", "not an object", "appended byte", "cut byte", "overlap"])
def test_each_mutation_falls_back_to_plain_chunking(tmp_path, kind):
    tensors = [("a", "BF16", [3000], random_bytes(6000, 1)), ("b", "F32", [300], random_bytes(1200, 2))]
    data = _mutate(safetensors_bytes(tensors), kind, random.Random(0))
    path = _write(tmp_path, "f", data)
    assert _layout(path, TINY_FIXED.max_header_bytes) is None
    assert _chunks(path, TINY, TINY_FIXED) == _plain(path, TINY)


def test_other_files_and_a_file_larger_than_the_window(tmp_path):
    """A plain file larger than the read window, and a safetensors file whose large tensor is:
    the window moves many times and holds one step at most."""
    plain = _write(tmp_path, "plain.bin", random_bytes(20 * MiB + 5, 3))
    assert _chunks(plain) == _plain(plain, ChunkingParams())
    big = safetensors_bytes([("w", "BF16", [6 * MiB + 3], random_bytes(12 * MiB + 6, 4))])
    path = _write(tmp_path, "big.safetensors", big)
    chunks = _chunks(path)
    _assert_tiles(chunks, big)
    t = _layout(path).tensors[0]
    assert [(c.offset, c.size) for c in chunks[1:]] == _expected_large_cuts(t, MiB)
    assert chunks[-1].size == (12 * MiB + 6) % MiB


def test_a_file_that_shrinks_inside_a_large_tensor_ends_where_its_bytes_end(tmp_path):
    """Past the read window (the first read takes ~12 MiB): the file ends inside the tensor."""
    data = safetensors_bytes([("w", "F32", [6 * MiB], random_bytes(24 * MiB, 5))])
    path = _write(tmp_path, "f.safetensors", data)
    begin = _layout(path).tensors[0].begin
    cut_at = begin + 17 * MiB + 100
    chunks = iter_file_chunks(path, ChunkingParams(), FIXED)
    first = next(chunks)
    os.truncate(path, cut_at)
    got = [first, *chunks]
    _assert_tiles(got, data[:cut_at])
    assert (got[-1].offset, got[-1].size) == (begin + 17 * MiB, 100)


# -- parameters --------------------------------------------------------------------------------------
def test_parameters_round_trip_and_follow_the_chunking():
    assert TensorChunkingParams.from_dict(FIXED.as_dict()) == FIXED
    assert FIXED.algorithm == "safetensors-fixed-v1" and TensorChunkingParams().algorithm == "safetensors-v1"
    steps = [(4 * KiB, 4 * KiB), (1 * KiB, 1 * KiB), (1000, 1 * KiB), (64 * KiB + 5, 64 * KiB), (4 * MiB, 4 * MiB)]
    for avg, step in steps:
        p = TensorChunkingParams.for_chunking(ChunkingParams.for_average(avg), fixed=True)
        assert p.tensor_chunk_bytes == step
        assert TensorChunkingParams.from_dict(p.as_dict()) == p


def _with(**changes) -> dict:
    return {**FIXED.as_dict(), **changes}


@pytest.mark.parametrize(
    "d",
    [
        _with(tensor_chunk_bytes=None),
        _with(tensor_chunk_bytes=True),
        _with(tensor_chunk_bytes=1.0 * MiB),
        _with(tensor_chunk_bytes="1048576"),
        _with(tensor_chunk_bytes=MIN_TENSOR_CHUNK_BYTES - 8),
        _with(tensor_chunk_bytes=MAX_TENSOR_CHUNK_BYTES + 8),
        _with(tensor_chunk_bytes=MiB + 4),  # not a multiple of 8
        _with(tensor_chunk_bytes=-MiB),
        _with(tensor_chunk_bytes=2**70),
        _with(algorithm="safetensors-v1"),  # format 2 has no step
        _with(algorithm="safetensors-fixed-v2"),
        _with(extra=1),
        {k: v for k, v in FIXED.as_dict().items() if k != "tensor_chunk_bytes"},
        {**TensorChunkingParams().as_dict(), "tensor_chunk_bytes": MiB},  # a step in format 2's
    ],
)
def test_parameters_refuse_anything_as_dict_does_not_write(d):
    with pytest.raises(ValueError):
        TensorChunkingParams.from_dict(d)
