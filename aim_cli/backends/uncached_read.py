"""Read a large file the page cache does not hold straight from the disk (``O_DIRECT``).

A pull reads each blob once: through the page cache, the kernel allocates a page for every 4 KiB
read, fills it, copies it out, and keeps it, evicting pages a user may want, for bytes nobody reads
again. Read with ``O_DIRECT``, the disk writes into the process's buffer. Measured on 2 cores,
reading 1 GiB of a repository's blobs (1,129 files) after dropping the caches: 0.31-0.34 s of CPU
buffered, 0.09-0.10 s direct, the wall time the same (0.60-0.96 s). The bytes are handed on where
the disk put them, as a memoryview (a copy into ``bytes`` would add ~0.08 s): hence a backend
method of its own, ``get_once``, whose callers take any bytes-like object.

Only when the cache holds none of it: a file whose first page is cached (a blob just pushed or
just read) is read buffered, which costs a copy where a direct read would go to the disk again
(1 GiB warm: 0.16 s buffered, 0.42-0.45 s direct). ``cachestat(2)`` (Linux 6.5) tells without
any I/O; ``preadv2(RWF_NOWAIT)`` would tell too, but a miss starts the readahead it meant to
avoid. Anything this cannot do (an older kernel, a filesystem without ``O_DIRECT``, an alignment it
refuses) answers None, and the caller reads as before: the bytes are the same either way, only
their path differs. A direct read sees the file's current bytes: the kernel writes back
any dirty cached page of the range first.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import sys

#: Files smaller than this are read buffered: per file, the probe and the flag changes cost more
#: than the cache does.
MIN_SIZE = 256 * 1024
#: Buffer address, offsets and lengths of a direct read: a multiple of every common logical
#: block size (512 B, 4 KiB).
ALIGN = 4096

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_GIVE_UP = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)
#: cachestat's number in the unified system call table (every Linux architecture since 6.5).
_SYS_CACHESTAT = 451


def read_uncached(fd: int, size: int, limit: int) -> memoryview | None:
    """The bytes of the open regular file ``fd`` from offset 0 to its end, at most ``limit``
    (the caller's bound: a file that grew past it shows as ``limit`` bytes), read with O_DIRECT
    when the page cache holds none of its first page; None when the caller should read it as it
    would any file (small, cached, or this system cannot tell or cannot). ``size``: its fstat
    size. The file offset is not moved; the descriptor's flags are put back."""
    if size < MIN_SIZE or not _O_DIRECT or _cached_pages(fd, ALIGN) != 0:
        return None
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
    except OSError:
        return None
    try:
        return _read_direct(fd, limit)
    except OSError as e:
        if e.errno in _GIVE_UP:
            return None
        raise
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _cached_pages(fd: int, length: int) -> int | None:
    """Pages of the first ``length`` bytes of ``fd`` in the page cache, by ``cachestat(2)``
    (no I/O); None where the kernel has no such call."""
    call = _cachestat()
    if call is None:
        return None
    syscall, cache_range, counts = call
    found = counts()  # cached, dirty, under writeback, evicted, recently evicted
    if syscall(_SYS_CACHESTAT, fd, cache_range(0, length), found, 0) != 0:
        return None
    return found[0]


@functools.cache
def _cachestat():
    """(libc's syscall, cachestat's range and result types), made once; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    class Range(ctypes.Structure):
        _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    return syscall, lambda off, n: ctypes.byref(Range(off, n)), ctypes.c_uint64 * 5


def _read_direct(fd: int, limit: int) -> memoryview:
    """Up to ``limit`` bytes from offset 0, in aligned reads into an aligned buffer. The buffer
    comes from the allocator (numpy's empty: freed memory reused, no page faulted in again)."""
    import numpy as np  # lazily, as the codecs do: listing a repository needs none

    length = -(-limit // ALIGN) * ALIGN
    buffer = np.empty(length + ALIGN, np.uint8)
    start = -buffer.ctypes.data % ALIGN
    view = buffer[start : start + length].data
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], got)
        got += n
        if n == 0 or got % ALIGN:  # the end of the file: a direct read stops short only there
            break
    return view[: min(got, limit)]
