"""What each stage of a push and a pull costs in CPU, one thread, per GiB of raw weights: the floor
under `benchmarks/run.py`'s CPU rows (issue 19 asks push <= 1.5 and pull <= 1.0 CPU-second per
GiB; this says which stages that leaves room for).

    uv run python benchmarks/stage_costs.py                  # 256 MiB of bf16 N(0, 0.02) weights
    uv run python benchmarks/stage_costs.py --size 1GiB --chunk 4MiB
    uv run python benchmarks/stage_costs.py --default-malloc # glibc's default trimming (see below)

The weights are generated (bf16 of N(0, 0.02), the statistics of trained weights that the codec's
constants were measured on) and cut into chunks of --chunk bytes; each stage runs over all chunks
on the calling thread, best of --runs, timed with process CPU time (user + system), so other load
on the machine changes it little. Files are written into a temporary directory beside the current
one. By default freed memory is kept, as the command line keeps it (aim_cli/util/allocator.py);
`--default-malloc` shows what glibc's defaults cost the same stages.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import blake3
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkpoints import to_bf16  # benchmarks/: the script's own directory is on the path

from aim_cli.format import blob_codec
from aim_cli.util.allocator import keep_freed_memory
from aim_cli.util.sizes import parse_size

GiB = 1 << 30
KEPT = "kept (as the command line does)"
RETURNED = "returned (glibc's defaults)"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def weights(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return to_bf16(rng.normal(0, 0.02, size=size // 2).astype(np.float32)).astype("<u2").tobytes()


def each(fn: Callable[[object], object], items: list) -> None:
    """``fn`` of every item, each result dropped before the next, as the pipelines drop theirs: a
    list of all the results would fault in fresh pages for every one (decode: 0.77 against 0.45
    CPU-s/GiB), a cost push and pull do not pay."""
    for item in items:
        fn(item)


def best(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = cpu()
        fn()
        times.append(cpu() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256MiB", help="raw bytes of weights (default 256MiB)")
    parser.add_argument("--chunk", default="1MiB", help="chunk size (default 1MiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per stage; the best is shown (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc settings alone")
    args = parser.parse_args(argv)
    kept = False if args.default_malloc else keep_freed_memory()
    size, chunk = parse_size(args.size, option="--size"), parse_size(args.chunk, option="--chunk")
    raw = weights(size, args.seed)
    view = memoryview(raw)
    chunks = [view[i : i + chunk] for i in range(0, len(raw), chunk)]
    encoded = [blob_codec.encode(c, 2)[0] for c in chunks]
    decoded = [blob_codec.decode(e, len(c)) for e, c in zip(encoded, chunks, strict=True)]
    assert all(bytes(d) == bytes(c) for d, c in zip(decoded[:4], chunks[:4], strict=False))
    stored = sum(map(len, encoded))
    sized = [(e, len(c)) for e, c in zip(encoded, chunks, strict=True)]

    def file_hash() -> None:
        h = blake3.blake3()
        for c in chunks:
            h.update(c)

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        blob_dir, target = Path(tmp, "blobs"), Path(tmp, "file")
        blob_dir.mkdir()

        def write_blobs() -> None:
            for n, e in enumerate(encoded):
                fd = os.open(blob_dir / str(n), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, e)
                os.close(fd)

        def read_blobs() -> None:
            for n in range(len(encoded)):
                with open(blob_dir / str(n), "rb") as f:
                    f.read()

        def write_file() -> None:
            target.unlink(missing_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
            for n, d in enumerate(decoded):
                os.pwrite(fd, d, n * chunk)
            os.close(fd)

        def copy_file() -> None:
            copy = Path(tmp, "copy")
            copy.unlink(missing_ok=True)
            src, dst = os.open(target, os.O_RDONLY), os.open(copy, os.O_WRONLY | os.O_CREAT, 0o644)
            for offset in range(0, size, chunk):
                os.copy_file_range(src, dst, min(chunk, size - offset), offset, offset)
            os.close(src)
            os.close(dst)

        stages = [
            ("BLAKE3 of each chunk", "push, pull", lambda: each(lambda c: blake3.blake3(c).digest(), chunks)),
            ("BLAKE3 of the whole file", "push, pull", file_hash),
            ("encode (byte-grouped zstd)", "push", lambda: each(lambda c: blob_codec.encode(c, 2), chunks)),
            ("decode", "pull", lambda: each(lambda ec: blob_codec.decode(*ec), sized)),
            ("write each blob as a new file", "push (local)", write_blobs),
            ("read each blob", "pull (local)", read_blobs),
            ("pwrite chunks into a new file", "pull", write_file),
            ("copy_file_range the file", "pull in place", copy_file),
        ]
        write_blobs()
        write_file()
        rows = [(name, used, best(args.runs, fn) * GiB / size) for name, used, fn in stages]

    print(
        f"{size / 2**20:.0f} MiB of bf16 N(0, 0.02) weights in {len(chunks)} chunks of {chunk / 2**20:g} MiB, "
        f"stored {stored / size:.3f} of raw; one thread, best of {args.runs}; freed memory "
        f"{KEPT if kept else RETURNED}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n"
    )
    print("| stage | in | CPU-s per GiB |\n|---|---|---:|")
    for name, used, seconds in rows:
        print(f"| {name} | {used} | {seconds:.3f} |")
    costs = dict((name, seconds) for name, _, seconds in rows)
    push = (
        costs["BLAKE3 of each chunk"]
        + costs["BLAKE3 of the whole file"]
        + costs["encode (byte-grouped zstd)"]
        + costs["write each blob as a new file"]
    )
    pull = (
        costs["read each blob"]
        + costs["decode"]
        + costs["BLAKE3 of each chunk"]
        + costs["BLAKE3 of the whole file"]
        + costs["pwrite chunks into a new file"]
    )
    print(f"| **push: the sum of its stages** | | **{push:.3f}** |")
    print(f"| **pull: the sum of its stages** | | **{pull:.3f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
