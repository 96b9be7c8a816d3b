"""Format 3's delta blobs in the repository layer (repository/blobs.py, delta_chain.py; docs/design.md
§3.4) on every backend: a chunk stored as a delta (``put_delta``) reads back through every read
(fetch, get, get_stored, read_stored), a chain as deep as the repository's max_depth decodes and a
deeper one is corrupt, a local ``base_source`` spares the base's read, ``put_plain`` turns a delta
back into a keyframe, and the edge marker is written before the blob, so a failed blob write
leaves the marker and the old blob, still readable. Hostile chains: tests/hostile/test_delta_hostile.py."""

from __future__ import annotations

import random

import blake3
import pytest

from aim_cli import api
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.errors import BlobCorruptError, StorageError
from aim_cli.format.blob_codec import CodecParams
from aim_cli.format.delta_codec import base_of, encode_delta
from aim_cli.format.layout import blob_key, edge_key
from aim_cli.repository import Repository
from tests.fakes import CountingBackend, Fault, FaultyBackend, HookedBackend
from tests.helpers import BACKENDS, NAME

SIZE = 64 * 1024
ES = 2  # the chunks are bf16-like: element size 2


@pytest.fixture(params=BACKENDS)
def f3(request, tmp_path) -> Repository:
    """A format 3 repository on each backend, built as the ``repo`` fixture builds its own."""
    yield from _repository(request, tmp_path, 3)


def _repository(request, tmp_path, version: int):
    kind = request.param if hasattr(request, "param") else "local"
    if kind in ("s3", "rgw"):
        from tests.s3_fixtures import s3_location, s3_repo_yaml

        endpoint, bucket = s3_location(request, kind)
        text = s3_repo_yaml(NAME, endpoint, bucket)
    else:
        text = f"repos:\n  {NAME}: {{type: local, path: {tmp_path / 'store'}}}\n"
    config = tmp_path / "model_repos.yaml"
    config.write_text(text)
    repository = api.open_repository(NAME, config=str(config))
    repository.init(ChunkingParams.for_average(4096), version=version)
    assert repository.format().version == version
    yield repository
    repository.backend.close()


def digest(data) -> str:
    return blake3.blake3(data).hexdigest()


def checkpoints(n: int, seed: int = 0) -> list[bytes]:
    """``n`` versions of one chunk, each a training step away from the one before: random bytes
    (so the plain blob cannot shrink) whose low bytes move by a few low bits, 1 in 8 elements."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(SIZE))
    out = [bytes(data)]
    for _ in range(n - 1):
        for i in range(0, SIZE, 16):
            data[i] ^= rng.randrange(1, 8)
        out.append(bytes(data))
    return out


def plain_size(repo: Repository, data: bytes) -> int:
    return len(repo.format().encode(data, ES))


def store_chain(repo: Repository, versions: list[bytes]) -> list[str]:
    """versions[0] whole, each later one a delta against the one before; their digests."""
    names = [digest(v) for v in versions]
    repo.put_plain(names[0], versions[0], ES)
    for i in range(1, len(versions)):
        stored = repo.put_delta(names[i], versions[i], names[i - 1], versions[i - 1], ES, plain_size(repo, versions[i]))
        assert stored is not None and stored < plain_size(repo, versions[i]) * 0.9
    return names


def stored_object(repo: Repository, name: str) -> bytes:
    return repo.backend.get(blob_key(name))


def test_a_chunk_stored_as_a_delta_reads_back_through_every_read(f3):
    base, new = checkpoints(2)
    b, d = store_chain(f3, [base, new])
    delta = stored_object(f3, d)
    assert base_of(delta[:48]) == b and f3.edges.dependents_of(b) == {d}
    assert len(delta) < plain_size(f3, new) // 2  # the point of it: a fraction of the plain blob
    raw, read = f3.fetch_blob(d, SIZE)
    assert bytes(raw) == new and read == len(delta) + len(stored_object(f3, b))  # the base counted too
    assert bytes(f3.get_blob(d, SIZE)) == new
    stored, raw = f3.get_stored_blob(d, SIZE)
    assert stored == delta and bytes(raw) == new
    assert f3.read_stored_blob(d, len(delta)) == SIZE
    assert bytes(f3.get_blob(b, SIZE)) == base  # the base itself is untouched


def test_a_chain_as_deep_as_max_depth_decodes_and_one_deeper_is_corrupt(f3):
    depth = f3.format().deltas.max_depth
    versions = checkpoints(depth + 2)
    names = store_chain(f3, versions)
    for i in range(depth + 1):  # 0 deltas (whole) up to max_depth deltas
        raw, read = f3.fetch_blob(names[i], SIZE)
        assert bytes(raw) == versions[i]
        assert read == sum(len(stored_object(f3, n)) for n in names[: i + 1])
    with pytest.raises(BlobCorruptError, match=f"max_depth of {depth}") as e:
        f3.get_blob(names[-1], SIZE, context="m:v/w.bin")
    assert e.value.digest == names[-1] and "m:v/w.bin" in str(e.value)
    with pytest.raises(BlobCorruptError, match="max_depth"):
        f3.read_stored_blob(names[-1], len(stored_object(f3, names[-1])))
    # A local source holding a base cuts the chain short: then it decodes.
    source = {names[1]: versions[1]}
    raw, _ = f3.fetch_blob(names[-1], SIZE, base_source=lambda dg, size: source.get(dg))
    assert bytes(raw) == versions[-1]


def test_a_base_from_base_source_is_not_read_from_storage(f3):
    base, new = checkpoints(2)
    b, d = store_chain(f3, [base, new])
    counting = CountingBackend(f3.backend)
    repo = Repository(counting, f3.name)
    asked = []

    def source(dg: str, size: int):
        asked.append((dg, size))
        return base

    raw, read = repo.fetch_blob(d, SIZE, base_source=source)
    assert bytes(raw) == new and asked == [(b, SIZE)]
    assert counting.got == [blob_key(d)] and read == len(stored_object(f3, d))
    # A local copy that does not match the base's hash is not used: the repository's is read.
    counting.got.clear()
    raw, _ = repo.fetch_blob(d, SIZE, base_source=lambda dg, size: bytes(SIZE))
    assert bytes(raw) == new and counting.got == [blob_key(d), blob_key(b)]
    counting.got.clear()
    raw, _ = repo.fetch_blob(d, SIZE, base_source=lambda dg, size: None)
    assert bytes(raw) == new and counting.got == [blob_key(d), blob_key(b)]


def test_put_plain_turns_a_delta_back_into_a_keyframe(f3):
    base, new = checkpoints(2)
    b, d = store_chain(f3, [base, new])
    stored = f3.put_plain(d, new, ES)
    assert stored == plain_size(f3, new) and base_of(stored_object(f3, d)[:48]) is None
    f3.delete_blobs([b])  # no longer needed
    raw, read = f3.fetch_blob(d, SIZE)
    assert bytes(raw) == new and read == stored
    assert f3.edges.dependents_of(b) == {d}  # the stale marker stays (harmless; optimize removes it)


def test_a_delta_not_worth_storing_writes_nothing(f3):
    new = random.Random(1).randbytes(SIZE)
    unrelated = random.Random(2).randbytes(SIZE)
    d, u = digest(new), digest(unrelated)
    f3.put_plain(d, new, ES)
    f3.put_plain(u, unrelated, ES)
    before = stored_object(f3, d)
    assert f3.put_delta(d, new, u, unrelated, ES, plain_size(f3, new)) is None
    assert stored_object(f3, d) == before and f3.edges.edges() == {}


def test_the_marker_is_written_before_the_blob(f3):
    base, new = checkpoints(2)
    b, d = digest(base), digest(new)
    f3.put_plain(b, base, ES)
    f3.put_plain(d, new, ES)
    puts = []
    hooked = Repository(HookedBackend(f3.backend, before=lambda op, key: puts.append(key) if op == "put" else None))
    assert hooked.put_delta(d, new, b, base, ES, plain_size(f3, new)) is not None
    assert puts == [edge_key(b, d), blob_key(d)]


@pytest.mark.parametrize("old", ["plain", "delta"])
def test_a_failed_blob_write_leaves_the_marker_and_the_old_blob_readable(f3, old):
    """Re-encoding ``d`` against ``b2`` fails at the blob write: the marker exists (it only keeps
    b2 alive), the old blob is intact and still decodes (a delta against ``b1``, or whole)."""
    b1, dv, b2v = checkpoints(3)
    names = store_chain(f3, [b1, dv]) if old == "delta" else [digest(b1), digest(dv)]
    if old == "plain":
        f3.put_plain(names[1], dv, ES)
    d, b2 = names[1], digest(b2v)
    f3.put_plain(b2, b2v, ES)
    before = stored_object(f3, d)
    faulty = Repository(FaultyBackend(f3.backend, Fault("put", "storage", pattern="blobs/*")), f3.name)
    with pytest.raises(StorageError):
        faulty.put_delta(d, dv, b2, b2v, ES, plain_size(f3, dv))
    assert d in f3.edges.dependents_of(b2)
    assert stored_object(f3, d) == before
    assert bytes(f3.get_blob(d, SIZE)) == dv


@pytest.mark.parametrize("version", [1, 2])
def test_outside_format_3_deltas_are_refused_and_a_delta_blob_is_corrupt(request, tmp_path, version):
    gen = _repository(request, tmp_path, version)
    repo = next(gen)
    base, new = checkpoints(2)
    b, d = digest(base), digest(new)
    repo.put_blob(b, base, ES)
    with pytest.raises(ValueError, match="format 3"):
        repo.put_delta(d, new, b, base, ES, SIZE)
    with pytest.raises(ValueError, match="format 3"):
        repo.put_plain(d, new, ES)
    assert repo.edges.edges() == {} and not repo.has_blob(d)
    delta = encode_delta(new, base, b, ES, CodecParams())  # a format 3 delta in an older repository
    repo.backend.put(blob_key(d), delta)
    with pytest.raises(BlobCorruptError):
        repo.get_blob(d, SIZE)
    with pytest.raises(BlobCorruptError):
        repo.read_stored_blob(d, len(delta))
    repo.backend.close()


def test_put_delta_refuses_a_chunk_as_its_own_base(f3):
    (data,) = checkpoints(1)
    with pytest.raises(ValueError, match="own delta base"):
        f3.put_delta(digest(data), data, digest(data), data, ES, SIZE)
