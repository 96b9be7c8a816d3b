"""tensor_chunking: tensor-aligned boundaries for safetensors files, chunking.iter_chunks' chunks
for everything else. Golden tests pin the boundaries (a moved boundary silently breaks dedup
across a team); dedup tests check what a changed, inserted or regrouped tensor costs."""

from __future__ import annotations

import os
import random

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.chunking.cdc import Chunk, ChunkingParams, iter_chunks
from aim_cli.chunking.safetensors import read_layout
from aim_cli.chunking.tensors import TensorChunkingParams, iter_file_chunks
from tests.helpers import random_bytes, safetensors_bytes

KiB = 1024
MiB = 1024 * KiB
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Small parameters: FastCDC cuts (and groups form) inside files of a few KiB.
TINY = ChunkingParams(64, 256, 1024)
TINY_TENSORS = TensorChunkingParams(
    max_header_bytes=1024, large_tensor_bytes=64, group_avg_bytes=256, group_max_bytes=1024
)


def _chunks(path, params=None, tensors=None, **kw) -> list[Chunk]:
    return list(iter_file_chunks(path, params or ChunkingParams(), tensors or TensorChunkingParams(), **kw))


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _layout(path, max_header: int = 16 * MiB):
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_layout(fd, os.fstat(fd).st_size, max_header)
    finally:
        os.close(fd)


def _assert_tiles(chunks: list[Chunk], data: bytes) -> None:
    pos = 0
    for c in chunks:
        assert c.offset == pos and c.size > 0
        assert c.digest == blake3.blake3(data[pos : pos + c.size]).hexdigest()
        pos += c.size
    assert pos == len(data)


def _boundaries(chunks: list[Chunk]) -> set[int]:
    return {c.offset for c in chunks} | {c.offset + c.size for c in chunks}


# -- golden ------------------------------------------------------------------------------------------
def _golden_tensors(seed: int = 20261127) -> list[tuple[str, str, list[int], bytes]]:
    """Large bf16/f32/f16 tensors, a run of small bf16 norms, small tensors of other dtypes, a
    zero-size tensor and an unknown dtype."""
    rng = random.Random(seed)

    def t(name, dtype, shape, itemsize):
        n = itemsize
        for d in shape:
            n *= d
        return name, dtype, shape, rng.randbytes(n)

    return [
        t("embed", "BF16", [1000, 1100], 2),
        *(t(f"norm.{i}", "BF16", [4096], 2) for i in range(60)),
        t("zero", "F32", [0], 4),
        t("proj", "F32", [300, 1000], 4),
        t("ids", "I64", [1000], 8),
        t("mask", "U8", [3000], 1),
        t("head", "F16", [1500, 1001], 2),
        t("scales", "F8_E8M0", [777], 1),
    ]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    data = safetensors_bytes(_golden_tensors())
    path = tmp_path_factory.mktemp("golden") / "model.safetensors"
    path.write_bytes(data)
    return path, data


# (offset, size, element_size, BLAKE3) with the default parameters.
GOLDEN_CHUNKS = [
    (0, 5008, 1, "5d6cc03a56409cb317e79df73fb3ede569de7753f081e395e3d9515485584a9c"),
    (5008, 720666, 2, "ac478b307af303bc7745a66b2e29226b139c1efbc45743672279548faa92b09a"),
    (725674, 1056954, 2, "ad343304c3497dae6eda39115bb2dbef5a4c75f94f98e884ee25c6528fee25c6"),
    (1782628, 422380, 2, "e874a97ba9482a167f8bd1b7f2ff5193ac8c567e028be26b8496a02069852ff7"),
    (2205008, 491520, 2, "c21d420a48005d585508b633f26abbe56ce0f4565f4191bbece5928e98f14cd2"),
    (2696528, 1200000, 4, "442f716197fabbf80619a1baafbd23f4a970c93b21a7e431d158b24ddfef3364"),
    (3896528, 11000, 1, "6f4a6f072a1b93e8e5023e71e11609c9ce55c547b08323e772371bb226c17ad8"),
    (3907528, 937912, 2, "512286b8d1438cafcf0dc7cd912118939f7853a217fd6e873ac67e63a5980aea"),
    (4845440, 337758, 2, "868584ca08bf840434229c6f92f3b9a267cebc33ada16c1b58c85280e3ce6da2"),
    (5183198, 1087126, 2, "5d3a4d052af0e2e349b6e4ada2d558408dd44a27ac23e486b4cb2913616b131b"),
    (6270324, 640204, 2, "2ac103e836cfe6de0f2896c80a9806eb0e69e9f1ffff33b3c6f18705e5449c85"),
    (6910528, 777, 1, "46a97a2555a9689eb9a4832aca55b8cce13db2c3737cb1dfe081062a362ed3ba"),
]


def test_default_parameters_cut_golden_boundaries(golden):
    path, _ = golden
    assert [(c.offset, c.size, c.element_size, c.digest) for c in _chunks(path)] == GOLDEN_CHUNKS


def test_golden_chunks_tile_the_file_and_fall_on_every_tensor_edge(golden):
    path, data = golden
    whole = blake3.blake3()
    seen = []
    chunks = _chunks(path, whole=whole, on_chunk=lambda c, view: seen.append((c, bytes(view))))
    _assert_tiles(chunks, data)
    assert whole.hexdigest() == blake3.blake3(data).hexdigest()
    assert seen == [(c, data[c.offset : c.offset + c.size]) for c in chunks]
    layout = _layout(path)
    edges = {0, layout.header_end} | {t.begin for t in layout.tensors} | {t.end for t in layout.tensors}
    large = [t for t in layout.tensors if t.size >= TensorChunkingParams().large_tensor_bytes]
    assert {t.begin for t in large} | {t.end for t in large} | {layout.header_end} <= _boundaries(chunks)
    # the 60 norms (480 KiB) are grouped, not 60 chunks, and a group never straddles a large tensor
    assert len(chunks) < 20
    assert _boundaries(chunks) - edges <= {b for t in large for b in range(t.begin, t.end)}


def test_element_sizes_of_the_golden_chunks(golden):
    path, _ = golden
    layout = _layout(path)
    by_begin = {t.begin: t for t in layout.tensors}
    for c in _chunks(path):
        owner = max((t for t in layout.tensors if t.begin <= c.offset < t.end), key=lambda t: t.begin, default=None)
        if c.offset < layout.header_end:
            assert c.element_size == 1
        elif owner.size >= TensorChunkingParams().large_tensor_bytes:  # inside one large tensor
            assert c.offset + c.size <= owner.end
            assert c.element_size == owner.element_size
            assert (c.offset - owner.begin) % owner.itemsize == 0
        else:  # a group of small tensors: starts on a tensor
            assert c.offset in by_begin


# -- what changes cost -------------------------------------------------------------------------------
def _digests(path, **kw) -> set[str]:
    return {c.digest for c in _chunks(path, **kw)}


def test_a_changed_tensor_changes_only_its_chunks(golden, tmp_path):
    path, data = golden
    layout = _layout(path)
    proj = next(t for t in layout.tensors if t.size == 300 * 1000 * 4)
    middle = (proj.begin + proj.end) // 2
    changed = _write(tmp_path, "changed.safetensors", data[:middle] + b"\x01\x02\x03\x04" + data[middle + 4 :])
    before, after = _chunks(path), _chunks(changed)
    outside = [c for c in before if c.offset + c.size <= proj.begin or c.offset >= proj.end]
    assert set(outside) <= set(after)
    assert len(set(before) - set(after)) == 1  # the one chunk of proj holding the change


def test_a_changed_small_tensor_changes_only_its_group(golden, tmp_path):
    path, data = golden
    layout = _layout(path)
    norm = layout.tensors[5]
    changed = _write(tmp_path, "changed.safetensors", data[: norm.begin] + bytes(2) + data[norm.begin + 2 :])
    assert len(_digests(path) - _digests(changed)) == 1


def test_an_inserted_tensor_shifts_offsets_not_chunks(tmp_path):
    tensors = _golden_tensors()
    inserted = ("inserted", "BF16", [700, 800], random_bytes(700 * 800 * 2, 7))
    before = _chunks(_write(tmp_path, "v1.safetensors", safetensors_bytes(tensors)))
    after = _chunks(_write(tmp_path, "v2.safetensors", safetensors_bytes(tensors[:1] + [inserted] + tensors[1:])))
    lost = {c.digest for c in before} - {c.digest for c in after}
    assert lost == {before[0].digest}  # the header only
    assert len(after) > len(before)


def _tiny_tensors(n: int, seed: int) -> list[tuple[str, str, list[int], bytes]]:
    rng = random.Random(seed)
    sizes = [rng.randrange(64, 1024) for _ in range(n)]
    return [(f"t{i}", "BF16", [s], rng.randbytes(2 * s)) for i, s in enumerate(sizes)]


def test_thousands_of_tiny_tensors_are_grouped(tmp_path):
    data = safetensors_bytes(_tiny_tensors(4000, 1))
    assert len(data) > 4 * MiB
    chunks = _chunks(_write(tmp_path, "tiny.safetensors", data))
    _assert_tiles(chunks, data)
    assert 3 <= len(chunks) <= 16  # ~1 MiB groups, and the header


@pytest.mark.parametrize("at", [10, 3000, 5990])
def test_an_inserted_tiny_tensor_regroups_only_its_neighbours(tmp_path, at):
    tensors = _tiny_tensors(6000, 2)
    inserted = ("inserted", "BF16", [100], random_bytes(200, 3))
    before = _chunks(_write(tmp_path, "v1.safetensors", safetensors_bytes(tensors)))
    after = _chunks(_write(tmp_path, "v2.safetensors", safetensors_bytes(tensors[:at] + [inserted] + tensors[at:])))
    assert len(before) >= 6
    lost = {c.digest for c in before} - {c.digest for c in after}
    new = {c.digest for c in after} - {c.digest for c in before}
    assert len(lost) == 2 and before[0].digest in lost  # the header and the group it joined
    assert len(new) <= 3  # the header and that group, split in two if the tensor ends a group


def test_groups_end_by_content_not_by_count(tmp_path):
    """Deleting the first tiny tensor keeps every later group: a running byte count would
    move every later boundary."""
    tensors = _tiny_tensors(4000, 4)
    before = _chunks(_write(tmp_path, "v1.safetensors", safetensors_bytes(tensors)))
    after = _chunks(_write(tmp_path, "v2.safetensors", safetensors_bytes(tensors[1:])))
    assert len({c.digest for c in before} - {c.digest for c in after}) == 2


def test_a_group_never_passes_its_cap(tmp_path):
    """Identical tensors whose hash never ends a group: only the cap cuts."""
    params = TensorChunkingParams()
    norm = bytes(8 * KiB)  # all-zero norms: the rule is false for this content
    assert not _rule(norm, params.group_avg_bytes)
    data = safetensors_bytes([(f"n{i}", "BF16", [4 * KiB], norm) for i in range(1200)])
    chunks = _chunks(_write(tmp_path, "same.safetensors", data))
    _assert_tiles(chunks, data)
    assert [c.size for c in chunks[1:]] == [4 * MiB, 4 * MiB, 1200 * 8 * KiB - 8 * MiB]
    assert all(c.element_size == 2 for c in chunks[1:])


def _rule(data: bytes, avg: int) -> bool:
    return int.from_bytes(blake3.blake3(data).digest()[:8], "little") * avg < len(data) << 64


def test_mixed_groups_are_plain_and_float_groups_keep_their_width(tmp_path):
    data = safetensors_bytes(
        [
            ("a", "F32", [16], random_bytes(64, 1)),
            ("b", "F32", [8], random_bytes(32, 2)),
            ("big", "U8", [4096], random_bytes(4096, 3)),
            ("c", "BF16", [16], random_bytes(32, 4)),
            ("d", "F16", [8], random_bytes(16, 5)),
            ("big2", "U8", [4096], random_bytes(4096, 6)),
            ("e", "BF16", [16], random_bytes(32, 7)),
            ("f", "I16", [8], random_bytes(16, 8)),
        ]
    )
    path = _write(tmp_path, "mixed.safetensors", data)
    tensors = TensorChunkingParams(
        max_header_bytes=1024, large_tensor_bytes=1024, group_avg_bytes=16 * MiB, group_max_bytes=16 * MiB
    )
    chunks = _chunks(path, ChunkingParams(64, 4096, 16384), tensors)
    layout = _layout(path)
    small_starts = {t.begin for t in layout.tensors if t.size < 1024}
    groups = [c for c in chunks if c.offset in small_starts]
    assert [c.element_size for c in groups] == [4, 2, 1]  # a+b, c+d, e+f
    assert [c.size for c in groups] == [96, 48, 48]


# -- cuts inside tensors -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,itemsize", [("BF16", 2), ("F32", 4), ("F64", 8)])
def test_cuts_inside_a_tensor_fall_on_elements(tmp_path, dtype, itemsize):
    params = ChunkingParams.for_average(16 * KiB)
    body = random_bytes(2 * MiB, 11)
    # an odd header length: without the move, FastCDC's cuts in file offsets would be odd
    data = safetensors_bytes([("t", dtype, [len(body) // itemsize], body)], metadata={"k": "x"})
    path = _write(tmp_path, "t.safetensors", data)
    begin = _layout(path).header_end
    chunks = [c for c in _chunks(path, params, TensorChunkingParams.for_chunking(params)) if c.offset >= begin]
    _assert_tiles(_chunks(path, params, TensorChunkingParams.for_chunking(params)), data)
    assert len(chunks) > 50
    assert all((c.offset - begin) % itemsize == 0 for c in chunks)
    assert {c.element_size for c in chunks} == {{2: 2, 4: 4, 8: 1}[itemsize]}
    # the test bites: FastCDC alone cuts this tensor off the element grid
    plain = [c.offset for c in iter_chunks(_write(tmp_path, "body", body), params)]
    assert any(o % itemsize for o in plain)


def test_inside_a_tensor_the_cuts_are_fastcdc_cuts_moved_down(tmp_path):
    params = ChunkingParams.for_average(16 * KiB)
    body = random_bytes(1 * MiB, 12)
    data = safetensors_bytes([("t", "F32", [len(body) // 4], body)])
    path = _write(tmp_path, "t.safetensors", data)
    begin = _layout(path).header_end
    cuts = [
        c.offset - begin for c in _chunks(path, params, TensorChunkingParams.for_chunking(params)) if c.offset > begin
    ]
    plain = [c.offset for c in iter_chunks(_write(tmp_path, "body", body), params)][1:]
    assert cuts == [o - o % 4 for o in plain]


# -- plain files -------------------------------------------------------------------------------------
def _plain(path, params=TINY) -> list[Chunk]:
    return list(iter_chunks(path, params))


def _assert_plain(tmp_path, data: bytes, params=TINY, tensors=TINY_TENSORS) -> None:
    path = _write(tmp_path, "f", data)
    whole = blake3.blake3()
    chunks = _chunks(path, params, tensors, whole=whole)
    assert chunks == _plain(path, params)
    assert whole.hexdigest() == blake3.blake3(data).hexdigest()


def test_other_files_are_cut_as_iter_chunks_cuts_them(golden, tmp_path):
    # larger than the read window (READ_SIZE + max_size): the window moves many times
    _assert_plain(tmp_path, random_bytes(40 * MiB + 5, 3), ChunkingParams(), TensorChunkingParams())
    _assert_plain(tmp_path, b"", ChunkingParams(), TensorChunkingParams())
    _, data = golden
    _assert_plain(tmp_path, data[:-1], ChunkingParams(), TensorChunkingParams())  # short of its header's end


def test_a_small_safetensors_file_is_one_chunk(tmp_path):
    """chunking.is_one_chunk holds in format 2 too: push reads such files whole."""
    data = safetensors_bytes([(f"t{i}", "F32", [100], random_bytes(400, i)) for i in range(100)])
    assert len(data) < ChunkingParams().min_size
    path = _write(tmp_path, "small.safetensors", data)
    assert [(c.offset, c.size) for c in _chunks(path)] == [(0, len(data))]


def _valid(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    return safetensors_bytes(tensors)


_dtypes = st.sampled_from([("BF16", 2), ("F16", 2), ("F32", 4), ("I64", 8), ("U8", 1), ("F8_E8M0", 1)])


@st.composite
def _tensor_lists(draw):
    out = []
    for i in range(draw(st.integers(0, 12))):
        dtype, itemsize = draw(_dtypes)
        n = draw(st.integers(0, 300))
        out.append((f"t{i}", dtype, [n], draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))))
    return out


def _mutate(data: bytes, kind: str, rnd: random.Random) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header, body = data[8 : 8 + n], data[8 + n :]
    if kind == "huge length":
        return (2**63 + rnd.randrange(2**32)).to_bytes(8, "little") + data[8:]
    if kind == "length off":
        return (n + rnd.choice([-1, 1, 7])).to_bytes(8, "little") + data[8:]
    if kind == "flipped header byte":
        i = rnd.randrange(n)
        return data[: 8 + i] + bytes([data[8 + i] ^ (1 << rnd.randrange(8))]) + data[9 + i :]
    if kind == "not an object":
        raw = b"[" + header + b"]"
        return len(raw).to_bytes(8, "little") + raw + body
    if kind == "appended byte":
        return data + b"\x00"
    if kind == "cut byte":
        return data[:-1]
    if kind == "overlap":
        return data.replace(b'"data_offsets":[0,', b'"data_offsets":[1,', 1)
    raise AssertionError(kind)


_KINDS = ["huge length", "length off", "flipped header byte", "not an object", "appended byte", "cut byte", "overlap"]


@FAST
@given(_tensor_lists(), st.sampled_from(_KINDS), st.randoms(use_true_random=False))
def test_mutated_safetensors_never_fail(tmp_path_factory, tensors, kind, rnd):
    """Whatever the mutation: chunks tile the file; and a file that no longer parses is cut
    exactly as iter_chunks cuts it."""
    data = _mutate(_valid(tensors), kind, rnd)
    path = _write(tmp_path_factory.mktemp("m"), "f", data)
    whole = blake3.blake3()
    chunks = _chunks(path, TINY, TINY_TENSORS, whole=whole)
    _assert_tiles(chunks, data)
    assert whole.hexdigest() == blake3.blake3(data).hexdigest()
    if _layout(path, TINY_TENSORS.max_header_bytes) is None:
        assert chunks == _plain(path)


@pytest.mark.parametrize("kind", ["huge length", "not an object", "appended byte", "cut byte", "overlap"])
def test_each_mutation_falls_back_to_plain_chunking(tmp_path, kind):
    tensors = [("a", "BF16", [300], random_bytes(600, 1)), ("b", "F32", [300], random_bytes(1200, 2))]
    data = _mutate(_valid(tensors), kind, random.Random(0))
    path = _write(tmp_path, "f", data)
    assert _layout(path, TINY_TENSORS.max_header_bytes) is None
    assert _chunks(path, TINY, TINY_TENSORS) == _plain(path)


def test_a_header_past_the_limit_is_plain(tmp_path):
    data = _valid([(f"tensor.with.a.long.name.{i}", "U8", [64], random_bytes(64, i)) for i in range(30)])
    assert int.from_bytes(data[:8], "little") > TINY_TENSORS.max_header_bytes
    path = _write(tmp_path, "f", data)
    assert _chunks(path, TINY, TINY_TENSORS) == _plain(path)


@FAST
@given(st.binary(max_size=3000))
def test_any_bytes_never_fail(tmp_path_factory, data):
    _assert_plain(tmp_path_factory.mktemp("b"), data)


@FAST
@given(_tensor_lists(), st.booleans())
def test_valid_files_cut_on_every_tensor_edge(tmp_path_factory, tensors, metadata):
    data = safetensors_bytes(tensors, metadata={"m": "x"} if metadata else None)
    path = _write(tmp_path_factory.mktemp("v"), "f", data)
    chunks = _chunks(path, TINY, TINY_TENSORS)
    _assert_tiles(chunks, data)
    if len(data) < TINY.min_size:
        return
    layout = _layout(path, TINY_TENSORS.max_header_bytes)
    cuts = _boundaries(chunks)
    assert layout.header_end in cuts
    for t in layout.tensors:
        if t.size >= TINY_TENSORS.large_tensor_bytes:
            assert {t.begin, t.end} <= cuts
            inside = [c for c in chunks if t.begin <= c.offset < t.end]
            assert all((c.offset - t.begin) % t.itemsize == 0 and c.element_size == t.element_size for c in inside)
    assert all(c.size <= max(TINY.max_size, TINY_TENSORS.group_max_bytes) for c in chunks)


# -- files that change while they are read -----------------------------------------------------------
def _big_file(tmp_path) -> tuple:
    data = safetensors_bytes([(f"w{i}", "BF16", [2 * MiB], random_bytes(4 * MiB, i)) for i in range(6)])
    return _write(tmp_path, "big.safetensors", data), data


def test_a_file_that_shrinks_while_read_ends_where_its_bytes_end(tmp_path):
    path, data = _big_file(tmp_path)
    chunks = iter_file_chunks(path, ChunkingParams(), TensorChunkingParams())
    first = [next(chunks)]
    os.truncate(path, 17 * MiB + 1)
    got = first + list(chunks)
    pos = 0
    for c in got:
        assert c.offset == pos and c.digest == blake3.blake3(data[pos : pos + c.size]).hexdigest()
        pos += c.size
    assert 17 * MiB + 1 <= pos < len(data)


def test_a_file_that_grows_while_read_gets_its_new_bytes_cut(tmp_path):
    path, data = _big_file(tmp_path)
    chunks = iter_file_chunks(path, ChunkingParams(), TensorChunkingParams())
    first = [next(chunks)]
    extra = random_bytes(3 * MiB, 99)
    with open(path, "ab") as f:
        f.write(extra)
    got = first + list(chunks)
    _assert_tiles(got, data + extra)
    assert got[-1].element_size == 1


# -- parameters --------------------------------------------------------------------------------------
def test_parameters_round_trip_and_defaults_suit_the_default_chunking():
    p = TensorChunkingParams()
    assert TensorChunkingParams.from_dict(p.as_dict()) == p
    assert p.as_dict() == {
        "algorithm": "safetensors-v1",
        "max_header_bytes": 16 * MiB,
        "large_tensor_bytes": 256 * KiB,
        "group_avg_bytes": 1 * MiB,
        "group_max_bytes": 4 * MiB,
    }
    assert TensorChunkingParams.for_chunking(ChunkingParams()) == p
    small = TensorChunkingParams.for_chunking(ChunkingParams.for_average(64 * KiB))
    assert TensorChunkingParams.from_dict(small.as_dict()) == small


def _with(**changes) -> dict:
    return {**TensorChunkingParams().as_dict(), **changes}


@pytest.mark.parametrize(
    "d",
    [
        _with(algorithm="safetensors-v2"),
        _with(extra=1),
        {"algorithm": "safetensors-v1"},
        [],
        None,
        "x",
        _with(max_header_bytes=True),
        _with(max_header_bytes=1.0 * MiB),
        _with(max_header_bytes="1048576"),
        _with(max_header_bytes=1023),
        _with(max_header_bytes=100 * MiB + 1),
        _with(large_tensor_bytes=63),
        _with(large_tensor_bytes=8 * MiB),
        _with(group_avg_bytes=255),
        _with(group_avg_bytes=5 * MiB),
        _with(group_max_bytes=16 * MiB + 1, group_avg_bytes=16 * MiB),
        {k: v for k, v in TensorChunkingParams().as_dict().items() if k != "group_max_bytes"},
    ],
)
def test_parameters_refuse_anything_as_dict_does_not_write(d):
    with pytest.raises(ValueError):
        TensorChunkingParams.from_dict(d)
