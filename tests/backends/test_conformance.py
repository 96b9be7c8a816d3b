"""The Backend contract (aim_cli/backends/base.py), clause by clause, for every backend.

Each test runs once per backend: ``local`` (a directory under tmp_path) and ``s3`` (a fresh bucket
on the session's S3 server, see tests/s3_fixtures.py). A new backend joins by adding a parameter
to ``backend_factory``.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from aim_cli.backends.base import Backend, ObjectInfo
from aim_cli.backends.local import LocalBackend
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError
from tests.helpers import drop_from_page_cache
from tests.s3_fixtures import S3_SERVERS, s3_location, s3_region

#: Enough parallel requests to keep the S3 server busy; local writes do not mind.
THREADS = 16


@pytest.fixture(params=["local", *S3_SERVERS])
def backend_factory(request, tmp_path):
    """A function ``make(name) -> Backend``: backends under distinct prefixes of one storage root
    (one directory, or one bucket), so tests can check that prefixes keep them apart."""
    made: list[Backend] = []
    if request.param == "local":

        def make(name: str) -> Backend:
            backend = LocalBackend(tmp_path / name)
            made.append(backend)
            return backend

    else:
        from aim_cli.backends.s3.backend import S3Backend

        endpoint, bucket = s3_location(request, request.param)

        def make(name: str) -> Backend:
            backend = S3Backend(bucket, name, endpoint_url=endpoint, region=s3_region(), max_connections=THREADS)
            made.append(backend)
            return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def backend(backend_factory) -> Backend:
    return backend_factory("repo")


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def keys_of(backend: Backend, prefix: str) -> dict[str, int]:
    return {info.key: info.size for info in backend.list(prefix)}


def test_implements_protocol(backend):
    assert isinstance(backend, Backend)
    assert isinstance(backend.location, str) and backend.location


# -- put / get ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"hello world",
        bytearray(b"a bytearray"),
        memoryview(b"__a memoryview slice__")[2:-2],
        b"",
        payload(5 * 1024 * 1024, seed=5),
    ],
    ids=["bytes", "bytearray", "memoryview", "empty", "5MiB"],
)
def test_put_get_round_trip(backend, data):
    backend.put("blobs/ab/abcdef", data)
    got = backend.get("blobs/ab/abcdef")
    assert type(got) is bytes
    assert got == bytes(data)
    assert backend.size("blobs/ab/abcdef") == len(data)
    assert backend.exists("blobs/ab/abcdef")


def test_put_overwrites_and_is_idempotent(backend):
    backend.put("k/obj", b"first version")
    backend.put("k/obj", b"second")
    assert backend.get("k/obj") == b"second"
    assert backend.size("k/obj") == len(b"second")
    backend.put("k/obj", b"second")
    assert backend.get("k/obj") == b"second"
    assert keys_of(backend, "k/") == {"k/obj": len(b"second")}


def test_get_missing_raises_key_not_found(backend):
    with pytest.raises(KeyNotFoundError) as info:
        backend.get("blobs/00/does-not-exist")
    assert info.value.key == "blobs/00/does-not-exist"
    backend.put("blobs/00/other", b"x")  # a neighbour existing changes nothing
    with pytest.raises(KeyNotFoundError):
        backend.get("blobs/00/does-not-exist")


@pytest.mark.parametrize("size", [0, 1, 4095, 4097, 256 * 1024, 256 * 1024 + 1, 5 * 1024 * 1024 + 3])
def test_get_once_gives_the_bytes_get_gives_with_its_bounds(backend, size):
    """``get_once``: the same bytes and errors as ``get``, as any bytes-like object (local: read
    around the page cache when it holds none of the object, tests/backends/test_uncached_read.py)."""
    data = payload(size, seed=size)
    backend.put("blobs/ab/once", data)
    _drop_cached(backend, "blobs/ab/once")
    assert bytes(backend.get_once("blobs/ab/once", max_size=size)) == data
    assert bytes(backend.get_once("blobs/ab/once", max_size=size + 4096)) == data
    assert bytes(backend.get_once("blobs/ab/once")) == data
    if size:
        with pytest.raises(ObjectTooLargeError):
            backend.get_once("blobs/ab/once", max_size=size - 1)
    with pytest.raises(KeyNotFoundError):
        backend.get_once("blobs/ab/missing", max_size=size)


def _drop_cached(backend, key: str) -> None:
    """For a local backend, the object's pages out of the page cache (written back first)."""
    if isinstance(backend, LocalBackend):
        drop_from_page_cache(backend.root / key)


def test_get_prefix_reads_the_first_bytes_only(backend):
    data = payload(5000, seed=7)
    backend.put("blobs/ab/prefix", data)
    backend.put("blobs/ab/short", b"abc")
    backend.put("blobs/ab/empty", b"")
    assert backend.get_prefix("blobs/ab/prefix", 48) == data[:48]
    assert type(backend.get_prefix("blobs/ab/prefix", 48)) is bytes
    assert backend.get_prefix("blobs/ab/short", 48) == b"abc"
    assert backend.get_prefix("blobs/ab/empty", 48) == b""
    with pytest.raises(KeyNotFoundError):
        backend.get_prefix("blobs/ab/missing", 48)


def test_exists_and_size(backend):
    assert backend.exists("models/m/versions/v1.json") is False
    assert backend.size("models/m/versions/v1.json") is None
    backend.put("models/m/versions/v1.json", b"{}")
    assert backend.exists("models/m/versions/v1.json") is True
    assert backend.size("models/m/versions/v1.json") == 2
    backend.put("empty", b"")
    assert backend.exists("empty") is True
    assert backend.size("empty") == 0
    # A "directory" is not an object.
    assert backend.exists("models/m") is False
    assert backend.size("models/m/versions") is None


def test_concurrent_readers_see_whole_objects(backend):
    """put is atomic: while a key is overwritten, readers see one whole version or the other."""
    versions = [bytes([i]) * (512 * 1024 + i) for i in range(2)]
    backend.put("hot", versions[0])
    seen: list[bytes] = []

    def writer():
        for i in range(12):
            backend.put("hot", versions[i % 2])

    def reader():
        for _ in range(12):
            seen.append(backend.get("hot"))

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(writer), pool.submit(reader), pool.submit(reader)]
        for f in futures:
            f.result()
    assert len(seen) == 24
    assert all(data in versions for data in seen)


# -- put_if_absent -----------------------------------------------------------------------------
def test_put_if_absent_creates_once(backend):
    assert backend.put_if_absent("models/m/versions/v1.json", b"first") is True
    assert backend.put_if_absent("models/m/versions/v1.json", b"second, longer") is False
    assert backend.get("models/m/versions/v1.json") == b"first"
    assert backend.size("models/m/versions/v1.json") == len(b"first")
    # put_if_absent also accepts any bytes-like object.
    assert backend.put_if_absent("models/m/versions/v2.json", memoryview(b"mv")) is True
    assert backend.get("models/m/versions/v2.json") == b"mv"


def test_put_if_absent_after_delete_creates_again(backend):
    assert backend.put_if_absent("locks/a.json", b"one") is True
    backend.delete("locks/a.json")
    assert backend.put_if_absent("locks/a.json", b"two") is True
    assert backend.get("locks/a.json") == b"two"


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_put_if_absent_has_one_winner(backend, round_):
    n = 8
    key = f"models/race/versions/v{round_}.json"
    contents = [payload(64 * 1024 + i, seed=i) for i in range(n)]
    start = threading.Barrier(n)

    def create(i: int) -> bool:
        start.wait()  # release all threads together to maximise the overlap
        return backend.put_if_absent(key, contents[i])

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(create, range(n)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert backend.get(key) == contents[winner]
    assert keys_of(backend, "models/race/") == {key: len(contents[winner])}


# -- list --------------------------------------------------------------------------------------
LAYOUT = {
    "aim-repo.json": 3,
    "blobs/ab/ab01": 10,
    "blobs/ab/ab02": 11,
    "blobs/ac/ac01": 0,
    "models/m/versions/v1.json": 20,
    "models/m/versions/v10.json": 21,
    "models/mm/versions/v1.json": 22,
    "locks/x.json": 5,
}


@pytest.fixture
def populated(backend):
    for key, size in LAYOUT.items():
        backend.put(key, b"z" * size)
    return backend


@pytest.mark.parametrize(
    "prefix, expected",
    [
        ("", set(LAYOUT)),
        ("blobs/", {"blobs/ab/ab01", "blobs/ab/ab02", "blobs/ac/ac01"}),
        ("blobs/ab/", {"blobs/ab/ab01", "blobs/ab/ab02"}),
        ("blobs/a", {"blobs/ab/ab01", "blobs/ab/ab02", "blobs/ac/ac01"}),  # partial directory name
        ("blobs/ab/ab0", {"blobs/ab/ab01", "blobs/ab/ab02"}),  # partial file name
        ("blobs/ab/ab01", {"blobs/ab/ab01"}),  # a whole key
        ("models/m/", {"models/m/versions/v1.json", "models/m/versions/v10.json"}),
        ("models/m", {"models/m/versions/v1.json", "models/m/versions/v10.json", "models/mm/versions/v1.json"}),
        ("models/m/versions/v1", {"models/m/versions/v1.json", "models/m/versions/v10.json"}),
        ("aim", {"aim-repo.json"}),
        ("nothing/", set()),
        ("blobs/zz/", set()),
    ],
)
def test_list_filters_by_prefix(populated, prefix, expected):
    listed = list(populated.list(prefix))
    assert all(isinstance(info, ObjectInfo) for info in listed)
    assert sorted(info.key for info in listed) == sorted(expected)  # each key exactly once
    assert {info.key: info.size for info in listed} == {k: LAYOUT[k] for k in expected}


def test_list_gives_each_objects_modification_time(backend):
    """The newest version is cross-checked with it (repository/versions.py): a later write is
    listed as no earlier, and the time is the wall clock's (S3 rounds it to the second)."""
    import time

    before = time.time()
    backend.put("models/m/versions/v1.json", b"1")
    backend.put("models/m/versions/v2.json", b"2")
    listed = {info.key: info.mtime for info in backend.list("models/m/")}
    first, second = listed["models/m/versions/v1.json"], listed["models/m/versions/v2.json"]
    assert first is not None and second is not None and second >= first
    assert before - 300 <= first <= time.time() + 300  # a server's clock may run apart from ours


def test_list_on_empty_storage(backend):
    assert list(backend.list("")) == []
    assert list(backend.list("blobs/")) == []


def test_prefixes_keep_backends_apart(backend_factory):
    """Two repositories on one storage root (two directories, or two prefixes of one bucket),
    where one's name is a prefix of the other's, see only their own keys."""
    a, b = backend_factory("team"), backend_factory("team-b")
    a.put("blobs/ab/ab01", b"from a")
    b.put("blobs/ab/ab01", b"from b, longer")
    b.put("only-in-b", b"b")
    assert a.get("blobs/ab/ab01") == b"from a"
    assert b.get("blobs/ab/ab01") == b"from b, longer"
    assert keys_of(a, "") == {"blobs/ab/ab01": 6}
    assert keys_of(b, "") == {"blobs/ab/ab01": 14, "only-in-b": 1}
    assert a.exists("only-in-b") is False
    a.delete_many(["blobs/ab/ab01", "only-in-b"])
    assert keys_of(a, "") == {}
    assert keys_of(b, "") == {"blobs/ab/ab01": 14, "only-in-b": 1}


def test_no_temporary_objects_are_listed(backend):
    """Only the keys that were stored show up, whatever the writes left behind in between."""
    expected: dict[str, int] = {}
    for i in range(20):
        key = f"blobs/{i % 3:02x}/{i:064x}"
        backend.put(key, payload(1000 + i, seed=i))
        expected[key] = 1000 + i
    backend.put("blobs/00/" + "0" * 64, b"overwritten")
    expected["blobs/00/" + "0" * 64] = len(b"overwritten")
    assert backend.put_if_absent("models/m/versions/v1.json", b"manifest") is True
    assert backend.put_if_absent("models/m/versions/v1.json", b"loser") is False
    expected["models/m/versions/v1.json"] = len(b"manifest")
    backend.sync()
    assert keys_of(backend, "") == expected


# -- many keys: pagination and batched deletion ------------------------------------------------
def test_list_and_delete_many_beyond_1000_keys(backend):
    """S3 lists 1000 keys per page and deletes 1000 per request: cross both limits."""
    keys = [f"blobs/{i % 7:02x}/{i:06d}" for i in range(1234)]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda k: backend.put(k, k.encode()), keys))
    backend.put("models/m/versions/v1.json", b"keep me")

    listed = keys_of(backend, "blobs/")
    assert listed == {k: len(k.encode()) for k in keys}
    assert len(keys_of(backend, "")) == len(keys) + 1

    # A generator (read once), with missing keys mixed in: deletion is idempotent.
    backend.delete_many(k for k in [*keys, "blobs/00/missing", "no/such/key"])
    assert keys_of(backend, "blobs/") == {}
    assert backend.exists(keys[0]) is False and backend.exists(keys[-1]) is False
    assert keys_of(backend, "") == {"models/m/versions/v1.json": len(b"keep me")}
    backend.delete_many(keys[:10])  # all gone already: still fine
    backend.delete_many([])


# -- delete ------------------------------------------------------------------------------------
def test_delete_is_idempotent(backend):
    backend.delete("blobs/00/never-existed")  # missing: not an error
    backend.put("blobs/00/a", b"a")
    backend.put("blobs/00/b", b"b")
    backend.delete("blobs/00/a")
    assert backend.exists("blobs/00/a") is False
    assert backend.size("blobs/00/a") is None
    with pytest.raises(KeyNotFoundError):
        backend.get("blobs/00/a")
    backend.delete("blobs/00/a")
    assert keys_of(backend, "") == {"blobs/00/b": 1}  # the neighbour is untouched


# -- sync, check_access, keys ------------------------------------------------------------------
def test_sync_after_puts(backend):
    backend.sync()  # nothing written yet: still fine
    backend.put("blobs/ab/ab01", b"durable")
    backend.sync()
    assert backend.get("blobs/ab/ab01") == b"durable"


def test_check_access_on_a_usable_location(backend):
    backend.check_access()
    backend.put("aim-repo.json", b"{}")
    backend.check_access()


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "blobs/../../escape"])
def test_invalid_keys_are_refused(backend, key):
    with pytest.raises(ValueError):
        backend.put(key, b"x")
    with pytest.raises(ValueError):
        backend.get(key)


def test_clean_incomplete_leaves_objects_alone(backend):
    backend.put("blobs/aa/one", b"1")
    backend.put_if_absent("models/m/versions/v.json", b"{}")
    assert backend.clean_incomplete(0, ["", "*", "blobs/aa", "models/*/versions"]) == (0, 0)
    assert sorted(i.key for i in backend.list("")) == ["blobs/aa/one", "models/m/versions/v.json"]


@pytest.mark.parametrize(
    "key",
    [
        "models/m/versions/v1 copy.json",
        "models/m/versions/.DS_Store",
        "models/m/versions/x.json.bak",
        "blobs/.hidden",
        "models/m/v0.json",
    ],
)
def test_any_plain_name_round_trips(backend, key):
    """Keys aim_cli never writes (stray names people and tools leave) are still plain objects:
    listed, read, sized and deleted like any other, so the store can report and remove them."""
    backend.put(key, b"stray")
    assert keys_of(backend, "") == {key: 5}
    assert backend.get(key) == b"stray" and backend.size(key) == 5 and backend.exists(key)
    backend.delete(key)
    assert keys_of(backend, "") == {}


def test_find_in_parents_names_the_nearest_holder(backend_factory):
    """Repositories never nest: a backend can tell whether a location above it (a parent
    directory, a parent prefix up to the bucket) holds a key."""
    outer, inner, deeper = backend_factory("team"), backend_factory("team/models"), backend_factory("team/models/x")
    assert outer.find_in_parents("aim-repo.json") is None
    assert inner.find_in_parents("aim-repo.json") is None
    outer.put("aim-repo.json", b"{}")
    assert inner.find_in_parents("aim-repo.json") == outer.location
    assert deeper.find_in_parents("aim-repo.json") == outer.location
    inner.put("aim-repo.json", b"{}")
    assert deeper.find_in_parents("aim-repo.json") == inner.location  # the nearest one
    assert outer.find_in_parents("aim-repo.json") is None  # itself is not above itself
