"""The storage contract. A Backend moves bytes named by a key and knows nothing else.

Keys are '/'-separated relative strings such as ``blobs/ab/ab12...`` or
``models/m/versions/v1.json``. Everything about hashes, chunks and manifests lives above, in
the repository layer (``aim_cli/repository/``). Every backend passes the same conformance suite
(``tests/backends/``).

The contract every implementation must keep:

- ``put`` is atomic: a reader sees either the previous object or the whole new one, never a part.
  It replaces an existing object. It is idempotent. A backend may send it more than once at a
  time (S3 hedges a straggling PUT on a fresh connection), so a copy may land after ``put``
  returned; ``hedge=False`` forbids that, for a write that must not reappear once superseded or
  deleted (a lease: a late copy would bring back a lease its holder had released).
- ``put_if_absent`` is an exclusive create: of two concurrent calls for one key exactly one
  returns True; the other returns False and the stored object is the winner's, whole.
- ``get`` returns the whole object or raises ``KeyNotFoundError``. Read-after-write: once ``put``
  returned, ``get`` and ``exists`` see the object. With ``max_size``, an object larger than that
  raises ``ObjectTooLargeError`` after at most ``max_size + 1`` bytes were read: memory is bounded
  by what the caller expects, whatever the storage holds.
- ``get_prefix(key, n)`` returns the object's first ``n`` bytes (all of it when shorter) or raises
  ``KeyNotFoundError``: one ranged read, for headers (`repo check` reads delta blobs' bases so).
- ``delete`` of a missing key is not an error (idempotent); ``delete_many`` likewise.
- ``list(prefix)`` yields every key that starts with ``prefix`` (recursively), with its size and,
  where the storage gives it without another request, its modification time, in no promised order.
- Reading and listing agree: ``list`` shows exactly the keys ``get`` can read. Where the storage
  holds something a backend never writes and cannot treat as an object (a symlink or a FIFO in a
  directory), every operation that meets it raises ``DamagedStorageError`` naming its key: none
  follows it, none skips it.
- ``clean_incomplete(older_than, dirs)`` removes what interrupted writes left behind (a killed
  process's temp files) once older than ``older_than`` seconds, and returns (count, bytes). It
  looks only directly in ``dirs`` (directory keys; a ``*`` segment stands for any one segment)
  and removes only names of its own temp-file pattern: the caller owns the layout. Such
  leftovers are never visible to ``get``/``list``; a backend without them returns (0, 0).
- ``find_in_parents(key)`` names the nearest location above this one (a parent directory, a
  parent prefix up to the bucket) that holds an object ``key``, or returns None; a parent it may
  not read counts as not holding it. (Repositories use it to refuse nesting.)
- ``sync()`` is a durability barrier: every object ``put`` before it survives a crash once it
  returns. ``put_if_absent`` is durable when it returns (it is used for commit points).
- Failures of the storage itself (unreachable, permission denied, disk full, bad credentials)
  raise ``StorageError`` with a message that names the location and a hint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed object. ``mtime`` is when it was last written, in seconds since the epoch, as the
    listing gives it for free (S3's LastModified, 1-second resolution; a local file's mtime), or
    None where the storage does not say. The repository cross-checks the newest version with it."""

    key: str
    size: int
    mtime: float | None = None


@runtime_checkable
class Backend(Protocol):
    #: Where the data lives, for messages: a directory path or ``s3://bucket/prefix``.
    location: str

    def get(self, key: str, max_size: int | None = None) -> bytes: ...

    def get_once(self, key: str, max_size: int | None = None) -> Bytes:
        """``get`` of an object read once and dropped (a chunk a pull fetches): the same checks
        and errors, but any bytes-like object may come back, and the backend may keep the
        object out of its caches (local: uncached_read.py)."""
        ...

    def get_prefix(self, key: str, n: int) -> bytes: ...

    def put(self, key: str, data: Bytes, *, hedge: bool = True, durable: bool = False) -> None: ...

    def put_if_absent(self, key: str, data: Bytes) -> bool: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size, or None if there is no object under ``key``."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Iterable[str]) -> None: ...

    def sync(self) -> None: ...

    def clean_incomplete(self, older_than: float, dirs: Sequence[str] = ()) -> tuple[int, int]: ...

    def find_in_parents(self, key: str) -> str | None: ...

    def check_access(self) -> None:
        """Raise StorageError unless the location can be reached (the bucket or directory exists
        and the credentials are accepted). Used by ``repo create``."""
        ...

    def begin_access_check(self) -> None:
        """``check_access``, whose answer may come later, early in every command: a failure is
        then raised by the backend's next call instead of that call's own result. Reads may be
        sent while the check is out (its round trip overlaps theirs); writes and deletes are not."""
        ...

    def close(self) -> None: ...
