"""Byte grouping and un-grouping (format/blob_codec.py, docs/design.md §3.4): which way to split a
chunk into its byte streams, and to interleave them back, keeps the GIL out of the hot loop.

    uv run python benchmarks/grouping_bench.py                # 4 MiB chunks, bf16-like and f32-like
    uv run python benchmarks/grouping_bench.py --chunk 1 --seconds 0.5

For each method and each group count (2: bf16/f16, 4: f32): MiB/s of raw bytes in one thread,
then the aggregate MiB/s of two threads grouping their own chunks at once, and their ratio. A
method that holds the GIL stays near 1.0x whatever the cores; one that releases it can reach
2.0x on two idle cores (less on a loaded or memory-bound machine). Every method's output is
checked against ``raw[i::N]`` first.

Methods:
  bytes slice       ``raw[i::N]`` per stream / ``out[i::N] = stream`` into a bytearray: C
                    loops, under the GIL
  numpy transpose   ``frombuffer(raw).reshape(-1, N).T.copy()`` / ``out.reshape(-1, N)[:] =
                    stack(streams).T``: one strided copy each way, GIL released
  numpy per stream  ``a[i::N].copy()`` per stream / ``out2d[:, i] = stream``: N strided copies
  numpy uint view   N = 2 only: ``u16 & 0xFF`` and ``u16 >> 8`` as uint8 / ``lo | hi << 8``
  zstd (reference)  entropy-only zstd of one stream, as blob_codec compresses it: what grouping
                    costs beside the compression it enables
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from aim_cli.format.blob_codec import _compressor

MiB = 1 << 20


def group_slice(raw: bytes, n: int) -> list:
    return [raw[i::n] for i in range(n)]


def ungroup_slice(streams: list, n: int) -> bytearray:
    out = bytearray(len(streams[0]) * n)
    for i, s in enumerate(streams):
        out[i::n] = s
    return out


def group_transpose(raw: bytes, n: int) -> list:
    t = np.frombuffer(raw, np.uint8).reshape(-1, n).T.copy()
    return [t[i] for i in range(n)]


def ungroup_transpose(streams: list, n: int) -> bytearray:
    out = bytearray(len(streams[0]) * n)
    grid = np.frombuffer(out, np.uint8).reshape(-1, n)
    for i, s in enumerate(streams):
        grid[:, i] = np.frombuffer(s, np.uint8)
    return out


def group_per_stream(raw: bytes, n: int) -> list:
    a = np.frombuffer(raw, np.uint8)
    return [a[i::n].copy() for i in range(n)]


def ungroup_stack(streams: list, n: int) -> bytearray:
    out = bytearray(len(streams[0]) * n)
    grid = np.frombuffer(out, np.uint8).reshape(-1, n)
    np.stack([np.frombuffer(s, np.uint8) for s in streams], axis=1, out=grid)
    return out


def group_u16(raw: bytes, n: int) -> list:
    u = np.frombuffer(raw, "<u2")
    return [(u & 0xFF).astype(np.uint8), (u >> 8).astype(np.uint8)]


def ungroup_u16(streams: list, n: int) -> bytearray:
    out = bytearray(len(streams[0]) * n)
    u = np.frombuffer(out, "<u2")
    np.left_shift(np.frombuffer(streams[1], np.uint8), 8, out=u, dtype="<u2", casting="unsafe")
    np.bitwise_or(u, np.frombuffer(streams[0], np.uint8), out=u, casting="unsafe")
    return out


_UINT = {2: "<u2", 4: "<u4"}


def group_cast(raw: bytes, n: int) -> list:
    u = np.frombuffer(raw, _UINT[n])
    return [u.astype(np.uint8)] + [(u >> (8 * i)).astype(np.uint8) for i in range(1, n)]


def ungroup_cast(streams: list, n: int) -> bytearray:
    out = bytearray(len(streams[0]) * n)
    u = np.frombuffer(out, _UINT[n])
    np.copyto(u, np.frombuffer(streams[0], np.uint8), casting="unsafe")
    part = np.empty_like(u)
    for i in range(1, n):
        np.left_shift(np.frombuffer(streams[i], np.uint8), 8 * i, out=part, dtype=u.dtype, casting="unsafe")
        np.bitwise_or(u, part, out=u)
    return out


def zstd_stream(stream: bytes, n: int) -> list:
    return [_compressor(1, entropy_only=True).compress(stream)]


METHODS: dict[str, tuple[Callable, Callable | None, tuple[int, ...]]] = {
    "bytes slice": (group_slice, ungroup_slice, (2, 4)),
    "numpy transpose": (group_transpose, ungroup_transpose, (2, 4)),
    "numpy per stream / stack": (group_per_stream, ungroup_stack, (2, 4)),
    "numpy uint view": (group_u16, ungroup_u16, (2,)),
    "numpy cast": (group_cast, ungroup_cast, (2, 4)),
}


def rate(fn: Callable, arg, n: int, size: int, seconds: float, threads: int) -> tuple[float, float]:
    """(MiB/s of raw bytes over ``threads`` threads, each calling ``fn(arg, n)`` for ``seconds``;
    MiB per CPU-second of those threads). The second does not move with the machine's load."""
    counts, cpu = [0] * threads, [0.0] * threads
    start = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        start.wait()
        cpu0 = time.thread_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fn(arg, n)
            counts[k] += 1
        cpu[k] = time.thread_time() - cpu0

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    done = sum(counts) * size / MiB
    return done / (time.perf_counter() - t0), done / max(sum(cpu), 1e-9)


def bf16_like(size: int) -> bytes:
    """N(0, 0.02) weights as bf16 (truncated f32): a realistic exponent byte for the zstd row."""
    w = np.random.default_rng(0).normal(0, 0.02, size // 4).astype(np.float32)
    return (w.view("<u4") >> 16).astype("<u2").tobytes() + w.tobytes()[: size - size // 2]


def python_progress(fn: Callable, arg, n: int, seconds: float) -> float:
    """How far a pure-Python thread gets while another calls ``fn(arg, n)`` in a loop, as a share
    of how far it gets alone in the same time: near 0 when ``fn`` holds the GIL (the Python thread
    runs only between calls), near 1 when ``fn`` releases it and a core is free."""

    def spin(until: float) -> int:
        count = 0
        while time.perf_counter() < until:
            count += 1
        return count

    alone = spin(time.perf_counter() + seconds / 2) * 2
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            fn(arg, n)

    worker = threading.Thread(target=busy)
    worker.start()
    beside = spin(time.perf_counter() + seconds)
    stop.set()
    worker.join()
    return beside / alone


def _cells(fn: Callable, arg, n: int, size: int, seconds: float, big) -> list[str]:
    one, cpu = rate(fn, arg, n, size, seconds, 1)
    two, _ = rate(fn, arg, n, size, seconds, 2)
    beside = python_progress(fn, big, n, seconds)
    return [f"{cpu:,.0f}", f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}x", f"{beside:.2f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk", type=float, default=4, help="chunk size in MiB (default 4)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per cell (default 1)")
    args = ap.parse_args(argv)
    size = int(args.chunk * MiB) // 8 * 8
    raw = bf16_like(size)
    big_raw = bf16_like(64 * MiB)
    print(
        f"{size / MiB:g} MiB chunks, {args.seconds:g} s per cell, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}. MiB of raw bytes per CPU-second of one thread (cpu), then per second "
        "of wall time with 1 and 2 threads; 2T/1T is their ratio (~1.0x: the GIL serialises it, or the "
        "machine has no second core free: see the zstd row, which releases it). py: how far a pure-Python "
        "thread gets while another thread runs the method on 64 MiB, as a share of how far it gets alone "
        "(near 0: the method holds the GIL)."
    )
    print()
    head = ["method", "N"] + [
        f"{op} {col}" for op in ("group", "ungroup") for col in ("cpu", "1T", "2T", "2T/1T", "py")
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, (group, ungroup, ns) in METHODS.items():
        for n in ns:
            expected = group_slice(raw, n)
            streams = group(raw, n)
            assert [bytes(s) for s in streams] == expected, name
            assert ungroup(expected, n) == raw, name
            cells = []
            big_streams = group_slice(big_raw, n)
            for fn, arg, big in ((group, raw, big_raw), (ungroup, expected, big_streams)):
                cells += _cells(fn, arg, n, size, args.seconds, big)
            print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    high = raw[1::2]
    cells = _cells(zstd_stream, high, 2, len(high), args.seconds, big_raw[1::2])
    print("| zstd entropy-only, one bf16 high stream (reference) | 2 | " + " | ".join(cells) + " |" + " |" * 5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
