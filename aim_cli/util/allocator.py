"""Keep freed chunk buffers in the process for the next chunk (glibc only; docs/design.md §6, item 5).

Push and pull allocate a few buffers of a chunk's size per chunk (the blob read, the zstd output,
the un-grouped bytes) on worker threads, and free them moments later. With glibc's defaults each
worker thread's arena gives such a buffer back to the kernel as soon as it is freed (the top of a
thread's heap is trimmed with madvise(MADV_DONTNEED) past a threshold that starts at 128 KiB), so
the next chunk's buffer faults every page in again, zero-filled. On a 2-core virtual machine
that was most of a pull's system time: `aim_cli model pull` of 1 GiB took 2.8-3.1 s of system
CPU with the defaults and 0.9-1.3 s with freed memory kept (`benchmarks/run.py`'s CPU rows).

``keep_freed_memory`` raises the trim threshold and fixes the mmap threshold (which glibc
otherwise adjusts as it goes), so that a freed buffer is reused by the next allocation instead.
The memory kept is what the transfer's own buffers took at their peak, which the memory budgets
of push and pull bound already (peak RSS is measured in `benchmarks/run.py`). It is process-wide,
so it is applied by the command line (the process is aim_cli's), not by the library.

It also caps glibc's arenas at ARENA_MAX. Each arena keeps its own freed memory, and glibc gives
threads up to 8 arenas per CPU: an S3 pull's 32 threads, all busy once the transfer gate let them
run at once, kept a chunk's buffers in each of 16 arenas. A cold pull of 1 GiB through
`benchmarks/s3_bench.py --link` peaked at 222-233 MB of RSS, over the 200 MB a pull may take;
with 2 arenas 137-138 MB, 4: 151-160, 8: 181-184, in the same time and CPU (2 runs each, 2 CPUs).
Threads then share an arena's lock, held for a chunk buffer's malloc and free only: small objects
come from Python's own allocator.
"""

from __future__ import annotations

import os
from functools import cache

#: mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Freed memory at the top of a heap is kept up to this much.
TRIM_THRESHOLD = 256 * 1024 * 1024
#: Arenas at most (see the module docstring).
_M_ARENA_MAX = -8
ARENA_MAX = 2
#: Allocations up to this size come from the heaps, where freed memory is reused; glibc's largest
#: allowed value on 64-bit systems (half of a thread heap's 64 MiB): every chunk is smaller.
MMAP_THRESHOLD = 32 * 1024 * 1024


@cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (see the module docstring); once per
    process. False where the C library is not glibc, or refused: nothing changes then."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # no such name on this system
        libc = ""
    if not libc.startswith("glibc"):
        return False
    import ctypes  # only here: `aim_cli --help` never loads it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_ARENA_MAX, ARENA_MAX),  # before any thread has an arena: the CLI calls this first
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        )
    )
