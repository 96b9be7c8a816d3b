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
