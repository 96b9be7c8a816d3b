"""benchmarks/checkpoints.py, the data of the format 2 benchmark, at a tiny size: its shards are
real safetensors (read here by a parser of the test's own), its bf16 rounding is round-to-nearest-
even, and the changes it reports are exactly the bytes that differ between variants."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import checkpoints

SIZE = 1 << 20


def parse_shard(path: Path) -> tuple[int, dict[str, tuple[dict, bytes]]]:
    """(header bytes, name -> (entry, tensor bytes)), asserting the format: a u64 little-endian
    length, a JSON header padded with spaces to a multiple of 8, offsets that tile the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    assert n % 8 == 0 and 8 + n <= len(raw)
    text = raw[8 : 8 + n]
    body = text.rstrip(b" ")
    assert len(text) - len(body) < 8
    header = json.loads(body)
    assert header.pop("__metadata__") == {"format": "pt"}
    data = raw[8 + n :]
    end = 0
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, stop = entry["data_offsets"]
        assert begin == end, f"{path.name}: {name} starts at {begin}, the previous tensor ends at {end}"
        assert entry["dtype"] == "BF16" and stop - begin == math.prod(entry["shape"]) * 2
        tensors[name] = (entry, data[begin:stop])
        end = stop
    assert end == len(data), f"{path.name}: tensors end at {end}, the data at {len(data)}"
    return 8 + n, tensors


def read_variant(d: Path) -> tuple[int, dict[str, tuple[dict, bytes]], list[list[str]]]:
    """(header bytes of all shards, every tensor, the names of each shard in data order)."""
    headers, tensors, order = 0, {}, []
    shards = sorted(d.glob("*.safetensors"))
    assert len(shards) == 4
    for shard in shards:
        h, t = parse_shard(shard)
        headers += h
        assert not set(t) & set(tensors)
        tensors |= t
        order.append(list(t))
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(len(b) for _, b in tensors.values())
    return headers, tensors, order


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, dict[str, dict]]:
    out = tmp_path_factory.mktemp("ckpt")
    return {kind: checkpoints.write_checkpoints(out / kind, SIZE, kind=kind, seed=3) for kind in checkpoints.KINDS}


@pytest.mark.parametrize("kind", checkpoints.KINDS)
def test_v2_changes_exactly_the_reported_tensors(made, kind):
    v1, v2 = made[kind]["v1"], made[kind]["v2"]
    h1, t1, order1 = read_variant(Path(v1["dir"]))
    h2, t2, order2 = read_variant(Path(v2["dir"]))
    assert (h1, order1) == (h2, order2) and v1["header_bytes"] == h1
    assert [t1[n][0] for n in t1] == [t2[n][0] for n in t1]  # same dtypes, shapes, offsets
    differ = [n for n in t1 if t1[n][1] != t2[n][1]]
    assert sorted(differ) == sorted(v2["changed_tensors"])
    assert sum(len(t1[n][1]) for n in differ) == v2["changed_tensor_bytes"] == v2["changed_bytes"] > 0
    # Big tensors redrawn whole (every 4 KiB block differs), plus some norms.
    assert {len(t1[n][0]["shape"]) for n in differ} == {1, 2}
    for n in differ:
        a, b = t1[n][1], t2[n][1]
        assert all(a[i : i + 4096] != b[i : i + 4096] for i in range(0, len(a), 4096))
    big = [n for n in t1 if len(t1[n][0]["shape"]) == 2]
    assert sum(len(t1[n][0]["shape"]) == 2 for n in differ) == round(0.1 * len(big))


def test_shifted_inserts_one_tiny_tensor_second_in_each_shard(made):
    v1, shifted = made["bf16"]["v1"], made["bf16"]["shifted"]
    _, t1, order1 = read_variant(Path(v1["dir"]))
    headers, ts, orders = read_variant(Path(shifted["dir"]))
    added = [order[1] for order in orders]
    assert added == shifted["added_tensors"] and len(set(added)) == 4
    for old, new in zip(order1, orders, strict=True):
        assert new[:1] + new[2:] == old
        # Every tensor after the inserted one moved by its size, plus the header's growth.
        assert all(ts[n][0]["data_offsets"][0] > t1[n][0]["data_offsets"][0] for n in old[1:])
    assert all(ts[n][1] == t1[n][1] for n in t1)
    assert shifted["added_tensor_bytes"] == sum(len(ts[n][1]) for n in added) < 4 * 1024
    assert shifted["changed_bytes"] == shifted["added_tensor_bytes"] + headers


def test_bf16_weights_are_drawn_per_tensor_and_random_bytes_are_not(made):
    _, ts, _ = read_variant(Path(made["bf16"]["v1"]["dir"]))
    _, tr, _ = read_variant(Path(made["random"]["v1"]["dir"]))
    sigmas = []
    for name, (_entry, raw) in ts.items():
        x = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        assert np.isfinite(x).all()
        if name.endswith("norm.weight"):
            assert abs(float(x.mean()) - 1) < 0.02
        elif x.size >= 4096:
            assert abs(float(x.mean())) < 0.005
            sigmas.append(float(x.std()))
    assert 0.009 < min(sigmas) < max(sigmas) < 0.041 and max(sigmas) / min(sigmas) > 1.5
    exponents = lambda raw: len(np.unique(np.frombuffer(raw, np.uint16) >> 7))  # noqa: E731
    big = max(ts, key=lambda n: len(ts[n][1]))
    assert exponents(ts[big][1]) < 64 < 500 < exponents(tr[big][1])


def test_to_bf16_rounds_to_nearest_even():
    bits = np.array(
        [0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0x3FFFFFFF, 0xBF808000], dtype=np.uint32
    )
    assert checkpoints.to_bf16(bits.view(np.float32)).tolist() == [
        0x3F80,
        0x3F80,
        0x3F82,
        0x3F81,
        0x3F81,
        0x4000,
        0xBF80,
    ]
    x = np.random.default_rng(0).standard_normal(100_000, dtype=np.float32)
    r = checkpoints.to_bf16(x).astype(np.uint32)
    value = lambda b: (b << 16).view(np.float32).astype(np.float64)  # noqa: E731
    err, below, above = (np.abs(value(b) - x) for b in (r, r - 1, r + 1))
    assert (err <= below).all() and (err <= above).all()


def test_same_arguments_write_the_same_bytes(tmp_path, made):
    again = checkpoints.write_checkpoints(tmp_path, SIZE, kind="bf16", variants=("v2",), seed=3)
    first = Path(made["bf16"]["v2"]["dir"])
    assert again["v2"]["changed_tensors"] == made["bf16"]["v2"]["changed_tensors"]
    for p in first.iterdir():
        assert (tmp_path / "v2" / p.name).read_bytes() == p.read_bytes()


def test_format2_bench_imports_and_parses_its_options():
    import format2_bench

    with pytest.raises(SystemExit) as exit_:
        format2_bench.main(["--help"])
    assert exit_.value.code == 0
