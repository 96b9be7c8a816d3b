"""The delta codec of format 3 (format/delta_codec.py, issue 18 item 2) on weights moved by a
training step: stored size / raw of the plain format 2 blob and of the delta blob, with the
alternatives the codec did not take, and the codec's speed.

    uv run python benchmarks/delta_codec_bench.py              # 16 MiB per dtype, 1 MiB chunks
    uv run python benchmarks/delta_codec_bench.py --size 64    # MiB per dtype

Data, drawn with numpy (no training): master weights w ~ N(0, 0.02) in f32 (N(0, 1) for fp8,
whose tensors are stored scaled), checkpoint A = w rounded to the dtype (round to nearest, ties
to even for bf16), checkpoint B = (w + step * N(0, 1)) rounded: an Adam-like update, the same size
for every weight. Fine-tuning: step = 0.006 sigma (relative changes ~1e-3..1e-2 of typical values;
bf16 then changes ~70-90% of its weights); pretraining: step = 0.05 sigma (~99% changed).

Columns (stored bytes / raw bytes of B, over all chunks):
  changed      share of elements of B that differ from A
  plain gN Lk  blob_codec.encode(B): byte-grouped by the element size (g1: not grouped), zstd level k
  delta gN Lk  delta_codec.encode_delta(B, A): the XOR, grouped by N, level k (what format 3 stores)
  dX full L    the XOR's byte streams with zstd's full match finder at level L (blob_codec uses
               entropy-only parameters for grouped streams): does a higher level pay for deltas?
  dX bits      the XOR split into bit planes (bit i of every element; 8 * element size streams,
               each zstd level 3): does splitting the mantissa byte further pay?
  enc/s dec/s  blob_codec.encode/decode (plain) and encode_delta/decode_delta (delta) speed, MiB
               of raw per second, one thread, level 1, grouped
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import zstandard

from aim_cli.format import blob_codec, delta_codec
from aim_cli.format.blob_codec import CodecParams

DTYPES = {"bf16": 2, "f16": 2, "f32": 4, "e4m3": 1, "e5m2": 1}
PHASES = {"fine-tune": 0.006, "pretrain": 0.05}
DIGEST = "ab" * 32


# --- dtypes: float32 values to the dtype's bytes (round to nearest) ----------------------------


def _fp8_positive_values(man_bits: int, bias: int, finite: int) -> np.ndarray:
    """The values of the fp8 codes 0 .. finite-1 (sign bit clear), ascending."""
    codes = np.arange(finite)
    e, m = codes >> man_bits, codes & ((1 << man_bits) - 1)
    frac = m / (1 << man_bits)
    return np.where(e == 0, frac * 2.0 ** (1 - bias), (1 + frac) * 2.0 ** (e - bias))


# e4m3fn: 4 exponent bits (bias 7), 3 mantissa bits, no infinities, 0x7F NaN: 127 finite codes.
# e5m2: 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like: 0x7C is infinity.
_FP8 = {"e4m3": _fp8_positive_values(3, 7, 127), "e5m2": _fp8_positive_values(2, 15, 124)}


def _to_fp8(x: np.ndarray, kind: str) -> bytes:
    """The nearest finite fp8 value of each float32 (saturating), as codes."""
    values = _FP8[kind]
    a = np.minimum(np.abs(x).astype(np.float64), values[-1])
    hi = np.clip(np.searchsorted(values, a), 1, len(values) - 1)
    code = np.where(a - values[hi - 1] <= values[hi] - a, hi - 1, hi).astype(np.uint8)
    return (code | (np.signbit(x).astype(np.uint8) << 7)).tobytes()


def _to_bf16(x: np.ndarray) -> bytes:
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def to_dtype(x: np.ndarray, dtype: str) -> bytes:
    """float32 values as little-endian ``dtype`` bytes (bf16, f16, f32, e4m3, e5m2)."""
    if dtype == "bf16":
        return _to_bf16(x)
    if dtype == "f16":
        return x.astype(np.float16).tobytes()
    if dtype == "f32":
        return x.astype(np.float32).tobytes()
    return _to_fp8(x, dtype)


def checkpoint_pair(dtype: str, n_bytes: int, step: float, seed: int = 0) -> tuple[bytes, bytes]:
    """(A, B): a weight tensor of ``n_bytes`` and the same tensor after an Adam-like step of
    ``step`` (in units of the weights' sigma), both rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    sigma = 1.0 if DTYPES[dtype] == 1 else 0.02
    w = rng.normal(0, sigma, n_bytes // DTYPES[dtype]).astype(np.float32)
    moved = w + (step * sigma * rng.normal(0, 1, len(w))).astype(np.float32)
    return to_dtype(w, dtype), to_dtype(moved, dtype)


def changed_share(a: bytes, b: bytes, element_size: int) -> float:
    kind = {1: np.uint8, 2: np.uint16, 4: np.uint32}[element_size]
    x, y = np.frombuffer(a, kind), np.frombuffer(b, kind)
    return float(np.count_nonzero(x != y)) / max(len(x), 1)


# --- the alternatives -------------------------------------------------------------------------


def _full_zstd_streams(x: bytes, groups: int, level: int) -> int:
    compressor = zstandard.ZstdCompressor(level=level)
    return sum(min(len(compressor.compress(x[i::groups])), len(x) // groups) for i in range(groups))


def _bit_planes(x: bytes, element_size: int, level: int = 3) -> int:
    """Stored bytes of the XOR as 8 * element_size bit planes, each zstd-coded (or raw)."""
    kind = {1: "<u1", 2: "<u2", 4: "<u4"}[element_size]
    words = np.frombuffer(x, kind).astype(np.uint64)
    compressor = zstandard.ZstdCompressor(level=level)
    total = 0
    for bit in range(8 * element_size):
        plane = np.packbits(((words >> bit) & 1).astype(np.uint8)).tobytes()
        total += min(len(compressor.compress(plane)), len(plane))
    return total


def _speed(fn, raw_bytes: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return raw_bytes / best / 2**20


def measure(dtype: str, step: float, size: int, chunk: int) -> dict[str, float]:
    es = DTYPES[dtype]
    a, b = checkpoint_pair(dtype, size, step)
    chunks = [(a[i : i + chunk], b[i : i + chunk]) for i in range(0, size, chunk)]
    p1, p3 = CodecParams(1), CodecParams(3)
    row: dict[str, float] = {"changed": changed_share(a, b, es)}

    def stored(fn) -> float:
        return sum(fn(ca, cb) for ca, cb in chunks) / size

    row["plain gN L1"] = stored(lambda ca, cb: len(blob_codec.encode(cb, es, p1)[0]))
    row["plain gN L3"] = stored(lambda ca, cb: len(blob_codec.encode(cb, es, p3)[0]))
    row["plain g1 L1"] = stored(lambda ca, cb: len(blob_codec.encode(cb, 1, p1)[0]))
    row["delta gN L1"] = stored(lambda ca, cb: len(delta_codec.encode_delta(cb, ca, DIGEST, es, p1)))
    row["delta gN L3"] = stored(lambda ca, cb: len(delta_codec.encode_delta(cb, ca, DIGEST, es, p3)))
    row["delta g1 L1"] = stored(lambda ca, cb: len(delta_codec.encode_delta(cb, ca, DIGEST, 1, p1)))
    for level in (3, 9):
        row[f"dX full L{level}"] = stored(lambda ca, cb, lv=level: _full_zstd_streams(delta_codec.xor(cb, ca), es, lv))
    row["dX bits"] = stored(lambda ca, cb: _bit_planes(bytes(delta_codec.xor(cb, ca)), es))
    blobs = [delta_codec.encode_delta(cb, ca, DIGEST, es, p1) for ca, cb in chunks]
    row["delta enc/s"] = _speed(lambda: [delta_codec.encode_delta(cb, ca, DIGEST, es, p1) for ca, cb in chunks], size)
    bases = [ca for ca, _ in chunks]
    row["delta dec/s"] = _speed(
        lambda: [delta_codec.decode_delta(d, len(ca), ca, "00" * 32) for d, ca in zip(blobs, bases, strict=True)], size
    )
    plain = [blob_codec.encode(cb, es, p1)[0] for _, cb in chunks]
    row["plain enc/s"] = _speed(lambda: [blob_codec.encode(cb, es, p1) for _, cb in chunks], size)
    row["plain dec/s"] = _speed(lambda: [blob_codec.decode(p, blob_codec.raw_size_of(p)) for p in plain], size)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="MiB of weights per dtype (default 16)")
    parser.add_argument("--chunk", type=int, default=1024, help="KiB per chunk (default 1024)")
    args = parser.parse_args()
    size, chunk = args.size << 20, args.chunk << 10
    rows = []
    for phase, step in PHASES.items():
        for dtype in DTYPES:
            row = measure(dtype, step, size, chunk)
            rows.append((phase, dtype, row))
    columns = list(rows[0][2])
    print(f"{'phase':10s} {'dtype':5s} " + " ".join(f"{c:>12s}" for c in columns))
    for phase, dtype, row in rows:
        cells = [f"{row[c]:12.0f}" if c.endswith("/s") else f"{row[c]:12.3f}" for c in columns]
        print(f"{phase:10s} {dtype:5s} " + " ".join(cells))
    print("gN: grouped by the element size (bf16/f16 2, f32 4, fp8 1 = not grouped); stored / raw; speeds in MiB/s")


if __name__ == "__main__":
    main()
