"""util/allocator.py: freed chunk buffers stay in the process for the next chunk, so a worker
thread that takes and frees chunk-sized buffers stops faulting pages in (most of a pull's system
CPU on a VM); the command line applies it to the commands that move chunks, and only those,
with OpenBLAS's thread pool left unstarted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aim_cli.cli.main import main
from aim_cli.util import allocator

GLIBC = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

# A worker thread takes four buffers of 1-8 MiB at once, as a pull's thread takes a blob, its zstd
# output, its un-grouped bytes and numpy's temporaries, writes every page, and frees them; the
# minor page faults of the last 20 of 30 such rounds are printed.
CHURN = """
import random, resource, sys, threading
from aim_cli.util.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
random.seed(7)
def work():
    for i in range(30):
        if i == 10:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        buffers = [bytearray(random.randrange(1 << 20, 8 << 20)) for _ in range(4)]
        for b in buffers:
            b[::4096] = b"x" * len(b[::4096])
        del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
t = threading.Thread(target=work)
t.start(); t.join()
print(faults[1] - faults[0])
"""


def churn_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    if not GLIBC:
        assert allocator.keep_freed_memory() is False  # nothing to tune: nothing changes
        return
    default, kept = churn_faults("default"), churn_faults("keep")
    pages = 20 * 4 * (1 << 20) // 4096  # the smallest possible rounds' pages, faulted again
    assert default > pages // 2, default  # glibc's defaults trim the thread's heap: pages come back
    assert kept * 4 < default, (kept, default)  # kept: the rounds mostly reuse the same memory


@pytest.mark.parametrize(
    ("argv", "applied"),
    [
        (["model", "pull", "r", "m", "DEST", "--tag", "v1"], True),
        (["model", "push", "r", "m", "DIR", "--tag", "v1"], True),
        (["model", "copy", "r", "m", "r2", "--tag", "v1"], True),
        (["model", "verify", "r", "m", "--tag", "v1"], True),
        (["repo", "check", "r"], True),
        (["repo", "optimize", "r"], True),
        (["model", "list", "r"], False),
        (["repo", "list"], False),
    ],
)
def test_the_commands_that_move_chunks_apply_it(monkeypatch, tmp_path, argv, applied):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    config = tmp_path / "model_repos.yaml"
    config.write_text(f"repos:\n  r: {{type: local, path: {tmp_path / 'repo'}}}\n")
    argv = [a.replace("DEST", str(tmp_path / "d")).replace("DIR", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit):
        main(["--config", str(config), *argv])  # each fails (no repository): what matters is before
    assert bool(calls) is applied
    # and numpy, if it loads, starts no BLAS thread pool (aim_cli does no linear algebra)
    assert (os.environ.get("OPENBLAS_NUM_THREADS") == "1") is applied


# Sixteen live threads take turns: each takes 16 MiB in four buffers, writes every page and frees
# them, so no more than 16 MiB is ever live at once. The process's RSS growth (MiB) is printed.
ARENAS = """
import ctypes, sys, threading
from aim_cli.util import allocator
if sys.argv[1] == "capped":
    assert allocator.keep_freed_memory()
else:  # freed memory kept, as keep_freed_memory keeps it, but glibc's own number of arenas
    mallopt = ctypes.CDLL(None).mallopt
    assert mallopt(allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD) == 1
    assert mallopt(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD) == 1
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) // 1024
turns = [threading.Event() for _ in range(17)]
def work(i):
    turns[i].wait()
    buffers = [bytearray(4 << 20) for _ in range(4)]
    for b in buffers:
        b[::4096] = b"x" * len(b[::4096])
    del buffers, b
    turns[i + 1].set()
    turns[16].wait()
threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
before = rss()
for t in threads:
    t.start()
turns[0].set()
turns[16].wait()
print(rss() - before)
for t in threads:
    t.join()
"""


def arena_growth(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="arenas are glibc's; elsewhere keep_freed_memory changes nothing (tested above)")
def test_freed_memory_is_kept_in_few_arenas_not_one_per_thread():
    """Each arena keeps its own freed memory: threads that each had their own kept a chunk's
    buffers apiece (an S3 pull's 32 threads peaked over 200 MB). Capped, they share a few."""
    uncapped, capped = arena_growth("uncapped"), arena_growth("capped")
    assert uncapped >= 4 * 16, uncapped  # at least four threads' 16 MiB kept in their own arenas
    assert capped <= 16 * allocator.ARENA_MAX + 16, capped  # at most an arena's peak in each
    assert capped * 2 < uncapped, (capped, uncapped)
