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
