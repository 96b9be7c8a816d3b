"""A backend wrapper that reads a known sequence of keys ahead, on threads.

Audits handle manifests one at a time, in order: decoding holds the GIL (parallel decoding gains
nothing) and a decoded 70B model's manifest takes ~23 MB (eight decoded at once took ~150 MB more
than one). Reading them is I/O, slow on S3. ``ReadAhead`` lets the reader take them one by one
and still wait for no round trip: the next ``jobs`` objects are already being read. At most
``jobs`` objects are held ahead. It moves bytes and knows nothing of what they hold.

``get`` of a key read ahead with the same ``max_size`` answers from the read (bytes, or the
exception the read raised: KeyNotFoundError, ObjectTooLargeError, DamagedStorageError ...), as if
it had been read then; every other call passes through to the wrapped backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor


class ReadAhead:
    def __init__(self, inner, keys: Iterable[str], *, max_size: int | None, jobs: int):
        self.inner = inner
        self._max_size = max_size
        self._keys = iter(keys)
        self._ahead: dict[str, Future[bytes]] = {}
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-readahead")
        for _ in range(max(1, jobs)):
            self._read_next()

    def _read_next(self) -> None:
        key = next(self._keys, None)
        if key is not None and key not in self._ahead:
            self._ahead[key] = self._pool.submit(self.inner.get, key, self._max_size)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        future = self._ahead.pop(key, None) if max_size == self._max_size else None
        if future is None:
            return self.inner.get(key, max_size)
        self._read_next()
        return future.result()

    def close(self) -> None:
        """Stop reading ahead (reads in progress finish); the wrapped backend stays open."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):  # every other operation of the contract: the wrapped backend's
        return getattr(self.inner, name)
