"""ReadAhead, the backend wrapper that reads the next manifests while one is decoded."""

from __future__ import annotations

import pytest

from aim_cli.backends.local import LocalBackend
from aim_cli.backends.readahead import ReadAhead
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError, StorageError
from tests.helpers import Fault, FaultyBackend


# -- ReadAhead -----------------------------------------------------------------------------------------
@pytest.fixture
def objects(tmp_path):
    backend = LocalBackend(tmp_path / "objects")
    keys = [f"k/{i:02d}" for i in range(10)]
    for i, key in enumerate(keys):
        backend.put(key, bytes([i]) * (i + 1))
    return FaultyBackend(backend), keys


def _gets(backend: FaultyBackend) -> list[str]:
    return [key for op, key, _ in backend.calls if op == "get"]


def test_read_ahead_answers_in_order_and_holds_at_most_jobs_ahead(objects):
    backend, keys = objects
    with ReadAhead(backend, keys, max_size=100, jobs=3) as ahead:
        for n, key in enumerate(keys):
            # Submitted reads run in any order, but never beyond the next ``jobs`` keys.
            assert set(_gets(backend)) <= set(keys[:n + 3])
            assert ahead.get(key, max_size=100) == bytes([n]) * (n + 1)
    assert sorted(_gets(backend)) == keys  # each read once, with the caller's bound
    assert {size for op, _, size in backend.calls if op == "get"} == {100}


def test_read_ahead_raises_what_the_read_raised_at_the_callers_get(objects):
    backend, keys = objects
    backend.inner.delete(keys[1])
    backend.faults += [Fault("get", "too_large", keys[2]), Fault("get", "storage", keys[3])]
    with ReadAhead(backend, keys, max_size=100, jobs=4) as ahead:
        assert ahead.get(keys[0], max_size=100) == b"\x00"
        with pytest.raises(KeyNotFoundError):
            ahead.get(keys[1], max_size=100)
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[2], max_size=100)
        with pytest.raises(StorageError):
            ahead.get(keys[3], max_size=100)
        assert ahead.get(keys[4], max_size=100) == b"\x04" * 5


def test_read_ahead_passes_other_reads_and_calls_through(objects):
    backend, keys = objects
    with ReadAhead(backend, keys[:2], max_size=100, jobs=2) as ahead:
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[9], max_size=3)  # not read ahead: the wrapped backend's bound applies
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[1], max_size=1)  # read ahead with another bound: read again with this one
        assert ahead.get(keys[1], max_size=100) == b"\x01\x01"
        assert ahead.exists(keys[5]) and [i.key for i in ahead.list("k/0")] != []
    assert ("get", keys[1], 1) in backend.calls
