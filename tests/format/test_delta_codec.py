"""delta_codec: format 3's codec 4, a chunk stored as the XOR against a base chunk (docs/design.md
§3.4, the module docstring).

The purpose (weights moved by a training step store in a fraction of their plain blob, for every
float dtype; random bytes are not worth a delta), the layout byte by byte, and hostile blobs: every
malformed delta is CorruptBlob (issue 18 item 8: itself as base, a base of another size, a delta
inside a delta, truncated, oversized, reserved bytes, raw size), with memory bounded by the chunk.
The data generators are the benchmark's (benchmarks/delta_codec_bench.py), so the test also pins
what the benchmark measures.
"""

from __future__ import annotations

import struct
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.format import blob_codec
from aim_cli.format.blob_codec import CodecParams, CorruptBlob
from aim_cli.format.delta_codec import (
    DELTA_HEADER_SIZE,
    base_of,
    decode_delta,
    encode_delta,
    max_delta_size,
    worth_storing,
    xor,
)
from tests.format.test_blob_codec import _bomb, _mutate, _mutations, zstd_blob
from tests.helpers import random_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import delta_codec_bench as bench

KiB, MiB = 1024, 1024 * 1024
PARAMS = CodecParams()
MIN_SAVING = 0.1  # format3.md's provisional "deltas" min_saving


def digest(data) -> str:
    return blake3.blake3(data).hexdigest()


def delta_of(raw: bytes, base: bytes, element_size: int = 2) -> bytes:
    return encode_delta(raw, base, digest(base), element_size, PARAMS)


# --- xor --------------------------------------------------------------------------------------


@given(data=st.binary(max_size=300), key=st.binary(max_size=300))
def test_xor_is_bytewise(data, key):
    key = (key * (len(data) // max(len(key), 1) + 1))[: len(data)] if key else bytes(len(data))
    assert xor(data, key) == bytes(a ^ b for a, b in zip(data, key, strict=True))
    assert xor(xor(data, key), key) == data  # symmetric: A = B ^ D and B = A ^ D


def test_many_threads_at_once():
    """encode and decode run in many threads at once (zstd contexts are per thread)."""
    pairs = [bench.checkpoint_pair("bf16", 64 * KiB, bench.PHASES["fine-tune"], seed=i) for i in range(8)]

    def round_trip(pair):
        base, raw = pair
        return decode_delta(delta_of(raw, base), len(raw), base, digest(raw)) == raw

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, pairs * 4))


def test_the_benchmark_rounds_to_each_dtype():
    """The data the ratios above are measured on is what it says: known values land on their
    codes (e4m3fn: bias 7, no infinities, 448 its largest; e5m2: bias 15, 57344 its largest
    finite; both saturate)."""
    x = np.array([1.0, -2.0, 448.0, 1e6, 2.0**-9, 0.0, 0.3], np.float32)  # 0.3: 0.3125 is nearest
    assert bench.to_dtype(x, "e4m3") == bytes([0x38, 0xC0, 0x7E, 0x7E, 0x01, 0x00, 0x2A])
    y = np.array([1.0, -2.0, 1.5, 0.25, 57344.0, 1e6, 2.0**-16], np.float32)
    assert bench.to_dtype(y, "e5m2") == bytes([0x3C, 0xC0, 0x3E, 0x34, 0x7B, 0x7B, 0x01])
    assert bench.to_dtype(np.array([1.0, 1.00390625, 1.01171875], np.float32), "bf16") == struct.pack(
        "<3H",
        0x3F80,
        0x3F80,
        0x3F82,  # ties to even: 1 + 2^-8 down, 1 + 3 * 2^-8 up
    )
    assert bench.to_dtype(x, "f32") == x.tobytes()
    assert bench.to_dtype(np.array([1.0, -2.0, 0.1], np.float32), "f16") == struct.pack("<3H", 0x3C00, 0xC000, 0x2E66)


def test_the_benchmark_measures_what_it_says():
    row = bench.measure("bf16", bench.PHASES["fine-tune"], 128 * KiB, 64 * KiB)
    assert 0.6 < row["changed"] < 0.9  # bf16 fine-tuning: 70-90% of the weights change
    assert row["delta gN L1"] < 0.5 * row["plain gN L1"] < row["plain g1 L1"]
    assert row["delta gN L1"] < row["delta g1 L1"] and row["delta gN L1"] < row["dX bits"]
    assert all(row[k] > 0 for k in row if k.endswith("/s"))


def test_xor_refuses_buffers_of_other_lengths():
    with pytest.raises(ValueError):
        xor(b"abc", b"ab")


# --- the purpose: a training step stores in a fraction of its plain blob ------------------------

# Measured with 256 KiB tensors (fine-tuning step of bench.PHASES, level 1): delta / raw and plain
# format 2 blob / raw. The bound asserted is delta <= ratio * plain, ratio = measured with margin.
MEASURED = {  # dtype: (delta / raw, plain / raw, asserted delta / plain)
    "bf16": (0.29, 0.67, 0.50),
    "f16": (0.50, 0.84, 0.70),
    "f32": (0.65, 0.84, 0.85),
    "e4m3": (0.22, 0.81, 0.40),
    "e5m2": (0.16, 0.70, 0.35),
}


@pytest.mark.parametrize("dtype", sorted(MEASURED))
def test_a_fine_tuning_step_stores_in_a_fraction_of_the_plain_blob(dtype):
    es = bench.DTYPES[dtype]
    base, raw = bench.checkpoint_pair(dtype, 256 * KiB, bench.PHASES["fine-tune"], seed=7)
    assert 0.05 < bench.changed_share(base, raw, es) < 1.01 and raw != base
    blob = delta_of(raw, base, es)
    plain, _ = blob_codec.encode(raw, es, PARAMS)
    assert len(blob) <= MEASURED[dtype][2] * len(plain), (len(blob) / len(raw), len(plain) / len(raw))
    assert worth_storing(len(blob), len(plain), MIN_SAVING)
    assert decode_delta(blob, len(raw), base, digest(raw)) == raw
    assert base_of(blob[:DELTA_HEADER_SIZE]) == digest(base)


@pytest.mark.parametrize("dtype", sorted(MEASURED))
@pytest.mark.parametrize("size", [0, 1, 7, 64 * KiB + 3, 300 * KiB])
def test_round_trip_of_any_size_and_the_pretraining_step(dtype, size):
    es = bench.DTYPES[dtype]
    base, raw = bench.checkpoint_pair(dtype, size + 8, bench.PHASES["pretrain"], seed=size)
    base, raw = base[:size], raw[:size]  # not a multiple of the element size: one stream
    blob = delta_of(raw, base, es)
    assert len(blob) <= max_delta_size(size)
    if raw == base:  # (size 0, or a tiny fp8 chunk the step left alone) the delta names itself
        with pytest.raises(CorruptBlob, match="names itself"):
            decode_delta(blob, size, base, digest(raw))
        return
    assert decode_delta(blob, size, base, digest(raw)) == raw
    mutable_base, stored = bytearray(base), bytearray(blob)
    assert decode_delta(stored, size, mutable_base, digest(raw)) == raw  # any bytes-like base
    assert mutable_base == base and stored == blob  # decoding writes into neither


def test_pretraining_bf16_still_pays():
    base, raw = bench.checkpoint_pair("bf16", 256 * KiB, bench.PHASES["pretrain"], seed=3)
    assert bench.changed_share(base, raw, 2) > 0.95
    blob, (plain, _) = delta_of(raw, base), blob_codec.encode(raw, 2, PARAMS)
    assert len(blob) <= 0.85 * len(plain)  # measured 0.76 (0.51 vs 0.67 of raw)


@pytest.mark.parametrize("element_size", [1, 2, 4])
def test_random_bytes_are_not_worth_a_delta(element_size):
    base, raw = random_bytes(256 * KiB, 1), random_bytes(256 * KiB, 2)
    blob = delta_of(raw, base, element_size)
    plain, codec = blob_codec.encode(raw, element_size, PARAMS)
    assert codec == blob_codec.Codec.RAW and len(blob) == max_delta_size(len(raw)) == len(plain) + 48
    assert not worth_storing(len(blob), len(plain), MIN_SAVING)
    assert not worth_storing(len(blob), len(plain), 0.0)
    assert decode_delta(blob, len(raw), base, digest(raw)) == raw


def test_a_chunk_equal_to_its_base_is_no_delta():
    """Push never writes one (the chunk is its base: dedup); a blob that is one names itself."""
    base = bench.checkpoint_pair("bf16", 256 * KiB, 0.0)[0]
    blob = delta_of(base, base)
    assert len(blob) < 200
    with pytest.raises(CorruptBlob, match="names itself"):
        decode_delta(blob, len(base), base, digest(base))


def test_worth_storing_needs_the_pinned_saving_and_a_byte():
    assert worth_storing(90, 100, 0.1) and not worth_storing(91, 100, 0.1)
    assert worth_storing(99, 100, 0.0) and not worth_storing(100, 100, 0.0)
    assert not worth_storing(0, 0, 0.0)


# --- the layout, byte by byte -------------------------------------------------------------------


def test_golden_layout():
    base, raw = bytes(range(8)), bytes([1, 2, 3, 4, 5, 6, 7, 8])
    blob = encode_delta(raw, base, "cd" * 32, 2, PARAMS)
    inner, _ = blob_codec.encode(bytes(a ^ b for a, b in zip(raw, base, strict=True)), 2, PARAMS)
    assert blob == b"AIMB\x04\0\0\0" + struct.pack("<Q", 8) + b"\xcd" * 32 + inner
    assert inner[:16] == b"AIMB\x00\0\0\0" + struct.pack("<Q", 8)  # 8 bytes: stored raw
    assert blob[48 + 16 :] == bytes([1, 3, 1, 7, 1, 3, 1, 15])
    assert base_of(blob[:48]) == base_of(blob) == "cd" * 32
    assert max_delta_size(8) == len(blob) == 48 + 16 + 8


@pytest.mark.parametrize("codec", [0, 1, 2, 3])
def test_base_of_a_plain_blob_is_none(codec):
    assert base_of(b"AIMB" + bytes([codec]) + bytes(3) + struct.pack("<Q", 5)) is None


@pytest.mark.parametrize(
    "prefix",
    [
        b"",
        b"AIMB\x04\0\0",  # no room for a header
        b"XIMB\x00" + bytes(11),  # magic
        b"AIMB\x05" + bytes(43),  # unknown codec
        b"AIMB\x04" + bytes(42),  # a delta header cut short
        b"AIMB\x04\0\x01\0" + bytes(40),  # reserved
        b"AIMB\x01\x01\0\0" + bytes(8),  # reserved, in a plain blob's header
    ],
)
def test_base_of_refuses_a_malformed_prefix(prefix):
    with pytest.raises(CorruptBlob):
        base_of(prefix)


def test_encode_refuses_a_broken_contract():
    with pytest.raises(ValueError):
        encode_delta(b"ab", b"a", "00" * 32, 1, PARAMS)
    with pytest.raises(ValueError):
        encode_delta(b"ab", b"ab", "AB" * 32, 1, PARAMS)


# --- hostile blobs (issue 18 item 8, the codec's part) -------------------------------------------

RAW, BASE = bench.checkpoint_pair("bf16", 4 * KiB, bench.PHASES["fine-tune"], seed=11)
GOOD = delta_of(RAW, BASE)


def _header(raw_size: int, base: str, codec: int = 4, reserved: bytes = b"\0\0\0") -> bytes:
    return b"AIMB" + bytes([codec]) + reserved + struct.pack("<Q", raw_size) + bytes.fromhex(base)


HOSTILE = {
    "names itself as its base": (_header(len(RAW), digest(RAW)) + GOOD[48:], BASE),
    "base of another size": (GOOD, BASE[:-2]),
    "base of another size, larger": (GOOD, BASE + b"\0\0"),
    "a delta inside the delta": (_header(len(RAW), digest(BASE)) + GOOD, BASE),
    "a delta inside, behind a raw-sized header": (
        _header(len(RAW), digest(BASE)) + b"AIMB\x04\0\0\0" + struct.pack("<Q", len(RAW)) + RAW,
        BASE,
    ),
    "truncated in the header": (GOOD[:40], BASE),
    "truncated in the inner header": (GOOD[:60], BASE),
    "truncated in the payload": (GOOD[:-1], BASE),
    "a byte after the payload": (GOOD + b"\0", BASE),
    "oversized": (_header(len(RAW), digest(BASE)) + blob_codec.encode(RAW, 1, PARAMS)[0][:16] + RAW + b"x", BASE),
    "reserved bytes": (GOOD[:5] + b"\0\0\x01" + GOOD[8:], BASE),
    "codec 3 in the delta header": (GOOD[:4] + b"\x03" + GOOD[5:], BASE),
    "raw size in the header": (GOOD[:8] + struct.pack("<Q", len(RAW) - 2) + GOOD[16:], BASE),
    "raw size in the inner header": (GOOD[:56] + struct.pack("<Q", len(RAW) - 2) + GOOD[64:], BASE),
    "magic": (b"AIMC" + GOOD[4:], BASE),
    "a plain blob": (blob_codec.encode(RAW, 2, PARAMS)[0], BASE),
}


# Each case is refused by its own check (the reason's words), not by a later one by luck.
REASONS = {
    "names itself as its base": "names itself",
    "base of another size": "its base is 4094 bytes",
    "base of another size, larger": "its base is 4098 bytes",
    "a delta inside the delta": "a delta inside a delta",
    "a delta inside, behind a raw-sized header": "a delta inside a delta",
    "truncated in the header": "40 bytes stored",
    "truncated in the inner header": "60 bytes stored",
    "truncated in the payload": "runs past the end",
    "a byte after the payload": "follow the last stream",
    "oversized": "4161 bytes stored",
    "reserved bytes": "no delta blob header",
    "codec 3 in the delta header": "no delta blob header",
    "raw size in the header": "header says 4094",
    "raw size in the inner header": "header says 4094",
    "magic": "no delta blob header",
    "a plain blob": "no delta blob header",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_delta_is_corrupt(name):
    blob, base = HOSTILE[name]
    with pytest.raises(CorruptBlob, match=REASONS[name]) as e:
        decode_delta(blob, len(RAW), base, digest(RAW))
    assert "\n" not in str(e.value)


def test_the_hostile_cases_differ_from_a_valid_blob_only_where_they_break_it():
    assert decode_delta(GOOD, len(RAW), BASE, digest(RAW)) == RAW
    assert GOOD[48] == ord("A") and GOOD[52] == 2  # the inner blob is bg2
    assert HOSTILE["names itself as its base"][0][48:] == GOOD[48:]


def _peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("declared", [32 * 1024 * MiB, None, MiB])
def test_a_zstd_bomb_inside_a_delta_is_refused_without_allocating_it(declared):
    raw_size = MiB
    inner = zstd_blob(_bomb(declared, (raw_size - 32) // 4 - 12), raw_size)
    blob = _header(raw_size, "ab" * 32) + inner
    assert len(blob) <= max_delta_size(raw_size)
    base = bytes(raw_size)

    def refused():
        with pytest.raises(CorruptBlob):
            decode_delta(blob, raw_size, base, "cd" * 32)

    assert _peak_allocation(refused) < 4 * MiB


def _check(blob: bytes, raw_size: int, base: bytes) -> bytes | None:
    """CorruptBlob with a one-line reason, or raw_size bytes, allocating at most ~3 raw sizes."""
    result: list = []

    def run():
        try:
            result.append(decode_delta(blob, raw_size, base, "ee" * 32))
        except CorruptBlob as e:
            assert str(e) and "\n" not in str(e)

    assert _peak_allocation(run) <= 3 * raw_size + 64 * KiB
    if not result:
        return None
    assert len(result[0]) == raw_size
    return bytes(result[0])


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=400), raw_size=st.integers(0, 400), base_size=st.integers(0, 400))
def test_fuzz_random_bytes(blob, raw_size, base_size):
    _check(blob, raw_size, bytes(base_size))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), raw_size=st.integers(0, 300))
def test_fuzz_random_payloads_behind_a_valid_delta_header(payload, raw_size):
    _check(_header(raw_size, "ab" * 32) + payload, raw_size, bytes(raw_size))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(MEASURED)),
    size=st.integers(0, 3000),
    seed=st.integers(0, 50),
    mutations=_mutations(),
    in_headers=st.booleans(),
)
def test_fuzz_mutated_deltas(dtype, size, seed, mutations, in_headers):
    es = bench.DTYPES[dtype]
    base, raw = bench.checkpoint_pair(dtype, size + 8, bench.PHASES["fine-tune"], seed=seed)
    base, raw = base[:size], raw[:size]
    blob = delta_of(raw, base, es)
    if in_headers:  # aim at the delta header, the inner header and the stream table
        mutations = [(op, pos % 90, value) for op, pos, value in mutations]
    mutated = _mutate(blob, mutations)
    out = _check(mutated, size, base)
    if mutated == blob:
        assert out == raw
    if out is not None:  # what decodes names its base where base_of reads it
        assert base_of(mutated[:48]) == mutated[16:48].hex()


@settings(max_examples=300, deadline=None)
@given(prefix=st.one_of(st.binary(max_size=60), st.binary(max_size=60).map(lambda b: b"AIMB" + b)))
def test_fuzz_base_of(prefix):
    try:
        base = base_of(prefix)
    except CorruptBlob as e:
        assert str(e)
        return
    assert len(prefix) >= 16 and prefix[:4] == b"AIMB" and prefix[5:8] == bytes(3)
    if base is None:
        assert prefix[4] < 4
    else:
        assert prefix[4] == 4 and base == prefix[16:48].hex()
