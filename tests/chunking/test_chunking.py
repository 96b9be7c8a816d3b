"""Golden tests: fixed seeded input -> fixed boundaries and digests. If a pyfastcdc or blake3
upgrade moves a boundary, these fail: a moved boundary silently breaks dedup across a team."""

import random

import blake3
import pytest

from aim_cli.chunking.cdc import ChunkingParams, file_digest, iter_chunks

GOLDEN_SEED = 20261127
GOLDEN_SIZE = 6 * 1024 * 1024
# (offset, size, BLAKE3) of the default parameters (min 256 KiB, avg 1 MiB, max 4 MiB).
GOLDEN_CHUNKS = [
    (0, 720666, "ac478b307af303bc7745a66b2e29226b139c1efbc45743672279548faa92b09a"),
    (720666, 1056955, "8c29a19d5f77fd6f9b8b9aaecffdc3dd8869e2eb3f8a01cb198ac27179c1f61e"),
    (1777621, 1065522, "f666390ddc9d57bff0c3c4985aac409e06c3d35b47440020f4a1678b5d599322"),
    (2843143, 1997290, "1b5f1f30efdf8816d62b5882bebd258588a754a50b12a54bbdde1a3d85979a62"),
    (4840433, 337758, "cb86b2a0a64e85f29aac02e263d81ac52099f24dc52df67edde9bf52ba4cf5df"),
    (5178191, 1087126, "dec67fddd223a37382c42250d519d186241252cb63dccb66cb7615567516c721"),
    (6265317, 26139, "23ec34715133ce78727b5c05b63513327be098b7d9586e86918737cf3b8bd4b5"),
]


@pytest.fixture(scope="module")
def golden_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "input.bin"
    path.write_bytes(random.Random(GOLDEN_SEED).randbytes(GOLDEN_SIZE))
    return path


def test_default_parameters_cut_golden_boundaries(golden_file):
    chunks = [(c.offset, c.size, c.digest) for c in iter_chunks(golden_file, ChunkingParams())]
    assert chunks == GOLDEN_CHUNKS


def test_chunks_cover_the_file_and_digests_match_bytes(golden_file):
    data = golden_file.read_bytes()
    params = ChunkingParams.for_average(64 * 1024)
    chunks = list(iter_chunks(golden_file, params))
    assert sum(c.size for c in chunks) == len(data)
    pos = 0
    for c in chunks:
        assert c.offset == pos
        assert params.min_size <= c.size <= params.max_size or c is chunks[-1]
        assert c.digest == blake3.blake3(data[c.offset : c.offset + c.size]).hexdigest()
        pos += c.size


def test_whole_file_digest_is_b3sum(golden_file):
    whole = blake3.blake3()
    list(iter_chunks(golden_file, ChunkingParams(), whole=whole))
    expected = blake3.blake3(golden_file.read_bytes()).hexdigest()
    assert whole.hexdigest() == expected == file_digest(golden_file)


def test_small_and_empty_files(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    chunks = list(iter_chunks(small, ChunkingParams()))
    assert [(c.offset, c.size) for c in chunks] == [(0, 1000)]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(iter_chunks(empty, ChunkingParams())) == []


def test_insertion_shifts_only_nearby_boundaries(golden_file, tmp_path):
    """Content-defined: inserting bytes early keeps most later chunks identical (dedup works)."""
    data = golden_file.read_bytes()
    shifted = tmp_path / "shifted.bin"
    shifted.write_bytes(data[:100_000] + b"inserted" * 1000 + data[100_000:])
    before = {c.digest for c in iter_chunks(golden_file, ChunkingParams())}
    after = {c.digest for c in iter_chunks(shifted, ChunkingParams())}
    assert len(before & after) >= len(before) - 2


def test_parameters_round_trip_and_validate():
    p = ChunkingParams.for_average(512 * 1024)
    assert ChunkingParams.from_dict(p.as_dict()) == p
    with pytest.raises(ValueError):
        ChunkingParams(1, 2, 3).validate()
    with pytest.raises(ValueError):
        ChunkingParams.from_dict({"algorithm": "rabin", "min_size": 1, "avg_size": 2, "max_size": 3})
