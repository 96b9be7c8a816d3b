"""Small shared test helpers: model trees, tree comparison, a counting/faulty backend wrapper."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path


def write_model(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """{relative path: (content, permission bits)} of regular files, ignoring aim_cli's .aim dir."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] == ".aim":
            continue
        for name in filenames:
            p = Path(dirpath) / name
            out[(rel_dir / name).as_posix()] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


class CountingBackend:
    """Delegates to a real backend; counts gets (and the bytes they return) and can fail the
    get number ``fail_after`` + 1 onwards, to simulate a pull cut off midway."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner = inner
        self.location = inner.location
        self.gets = 0
        self.get_bytes = 0
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def get(self, key, max_size=None):
        with self._lock:
            if key.startswith("blobs/"):
                if self.fail_after is not None and self.gets >= self.fail_after:
                    raise ConnectionAbortedError("injected: link dropped")
                self.gets += 1
        data = self.inner.get(key, max_size)
        if key.startswith("blobs/"):
            with self._lock:
                self.get_bytes += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.inner, name)


class HookedBackend:
    """Delegates to a real backend and calls ``before(op, key)`` before, ``after(op, key)`` after
    every get, put, exists and delete (``op`` is the method's name): a test runs another
    process's step at an exact point of a protocol, with no sleeps."""

    def __init__(self, inner, before=None, after=None):
        self.inner = inner
        self.location = inner.location
        self.before = before or (lambda op, key: None)
        self.after = after or (lambda op, key: None)

    def _call(self, op: str, key: str, *args):
        self.before(op, key)
        result = getattr(self.inner, op)(key, *args)
        self.after(op, key)
        return result

    def get(self, key, max_size=None):
        return self._call("get", key, max_size)

    def put(self, key, data):
        return self._call("put", key, data)

    def exists(self, key):
        return self._call("exists", key)

    def delete(self, key):
        return self._call("delete", key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FakeClock:
    """A wall clock and a monotonic clock that move only when told (``advance``)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid

def drop_dac_caps() -> list[str]:
    """A command prefix under which root obeys file permissions (as a user would): without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, mode 000 denies root too. Empty when not root."""
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root needs setpriv (util-linux) to test unreadable files"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


# -- a fault-injecting backend (like kopia's blobtesting and restic's test backends) ------------
# Imported here, not at the top: this section was appended (other sections append too).
import fnmatch  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from aim_cli.backends.base import ObjectInfo  # noqa: E402
from aim_cli.errors import ObjectTooLargeError, StorageError  # noqa: E402


@dataclass
class Fault:
    """One fault to inject. It strikes the calls of Backend method ``op`` ("get", "put",
    "put_if_absent", "exists", "size", "list", "delete", "delete_many", or "*" for any) whose key
    matches the fnmatch ``pattern`` (for "list": the prefix; for "delete_many": its first key),
    numbers ``nth`` to ``nth + times - 1`` of them (1-based; ``times=None``: every one from ``nth``).

    ``kind``:
      "storage"     raise StorageError (what a backend raises for a failing storage)
      "connection"  raise ConnectionResetError (an error a backend failed to map)
      "short"       get returns the object without its last byte
      "long"        get returns the object plus ``arg`` (default 1) zero bytes, ignoring max_size:
                    a backend that breaks the bounded-read contract
      "too_large"   get raises ObjectTooLargeError, as a backend does past max_size
      "corrupt"     get returns the object with one bit of its first byte flipped
      "miss"        list leaves out the entries whose key matches the fnmatch ``arg``
      "extra"       list adds an entry (size 1) for each key in ``arg`` that starts with the prefix
    """

    op: str
    kind: str
    pattern: str = "*"
    nth: int = 1
    times: int | None = 1
    arg: object = None
    hits: int = 0  # matching calls seen so far

    def strikes(self, op: str, key: str) -> bool:
        if self.op not in (op, "*") or not fnmatch.fnmatchcase(key, self.pattern):
            return False
        self.hits += 1
        return self.hits >= self.nth and (self.times is None or self.hits < self.nth + self.times)


class FaultyBackend:
    """Wraps any Backend and injects ``faults`` (see Fault). Records every call as (op, key,
    max_size) in ``calls``; ``struck`` lists the faults that fired as (op, key, kind)."""

    def __init__(self, inner, *faults: Fault):
        self.inner = inner
        self.location = inner.location
        self.faults = list(faults)
        self.calls: list[tuple[str, str, int | None]] = []
        self.struck: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def _active(self, op: str, key: str, max_size: int | None = None) -> list[Fault]:
        with self._lock:
            self.calls.append((op, key, max_size))
            active = [f for f in self.faults if f.strikes(op, key)]
            self.struck += [(op, key, f.kind) for f in active]
        for f in active:
            if f.kind == "storage":
                raise StorageError(f"injected: {op} {key} failed", "retry")
            if f.kind == "connection":
                raise ConnectionResetError(f"injected: connection reset during {op} {key}")
        return active

    def get(self, key, max_size=None):
        active = self._active("get", key, max_size)
        if any(f.kind == "too_large" for f in active):
            raise ObjectTooLargeError(key, max_size or 0)
        data = self.inner.get(key, max_size)
        for f in active:
            if f.kind == "short":
                data = data[:-1]
            elif f.kind == "long":
                data = data + bytes(f.arg or 1)
            elif f.kind == "corrupt" and data:
                data = bytes([data[0] ^ 0x01]) + data[1:]
        return data

    def put(self, key, data):
        self._active("put", key)
        self.inner.put(key, data)

    def put_if_absent(self, key, data):
        self._active("put_if_absent", key)
        return self.inner.put_if_absent(key, data)

    def exists(self, key):
        self._active("exists", key)
        return self.inner.exists(key)

    def size(self, key):
        self._active("size", key)
        return self.inner.size(key)

    def delete(self, key):
        self._active("delete", key)
        self.inner.delete(key)

    def delete_many(self, keys):
        keys = list(keys)
        self._active("delete_many", keys[0] if keys else "")
        self.inner.delete_many(keys)

    def list(self, prefix):
        active = self._active("list", prefix)
        for info in self.inner.list(prefix):
            if not any(f.kind == "miss" and fnmatch.fnmatchcase(info.key, f.arg) for f in active):
                yield info
        for f in active:
            if f.kind == "extra":
                yield from (ObjectInfo(k, 1) for k in f.arg if k.startswith(prefix))

    def __getattr__(self, name):  # sync, clean_incomplete, check_access, find_in_parents, close
        return getattr(self.inner, name)


def commit_versions(repo, model: str, tags: list[str], *, chunks: int, unique: int = 1, files: int = 3,
                    chunk_size: int = 64) -> list[str]:
    """Commit one version per tag without chunking (benchmarks/scale_bench.py does the same at
    scale): each manifest names ``chunks`` stored blobs of ``chunk_size`` bytes over ``files``
    files, shared by every version but ``unique`` per version (near-identical checkpoints, cheap
    to make in any number). Files' whole digests are made up: pulls would refuse them, audits
    never read them. Returns the digests every version shares."""
    import blake3

    from aim_cli import manifest as mf

    def blob(seed: int) -> tuple[str, int]:
        data = random_bytes(chunk_size, seed)
        digest = blake3.blake3(data).hexdigest()
        repo.put_blob(digest, data)
        return digest, chunk_size

    shared = [blob(i) for i in range(chunks - unique)]
    for v, tag in enumerate(tags):
        named = shared + [blob(10**9 + v * unique + i) for i in range(unique)]
        per_file = -(-len(named) // files)
        entries = []
        for f in range(files):
            part = named[f * per_file:(f + 1) * per_file]
            whole = blake3.blake3(f"{tag}/{f}".encode()).hexdigest()
            entries.append(mf.FileEntry(f"shard-{f:03d}.bin", sum(s for _, s in part), 0o644, whole, part))
        repo.commit(mf.Manifest(mf.FORMAT, model, tag, f"2026-01-01T00:00:00.{v:06d}Z", "test@host", "",
                                sum(e.size for e in entries), entries))
    return [d for d, _ in shared]
