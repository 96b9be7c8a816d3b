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


# -- training_bench.py (issue 18): a real training run, format 2 measured, format 3 estimated -----
def tiny_config():
    import training_run

    return training_run.Config(d_in=16, hidden=(64, 32), d_out=8, teacher_hidden=16, pre_every=20, ft_every=5)


def test_training_run_is_deterministic_and_writes_real_safetensors(tmp_path):
    import training_run

    runs = [training_run.train(tmp_path / name, "bf16", seed=5, config=tiny_config()) for name in ("a", "b")]
    assert [c.loss for c in runs[0].checkpoints] == [c.loss for c in runs[1].checkpoints]
    files = sorted((tmp_path / "a").rglob("*.safetensors"))
    assert len(files) == 12
    for path in files:
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
        _, tensors = parse_shard(path)
        assert sorted(tensors) == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"] + [
            "layers.2.bias",
            "layers.2.weight",
        ]
        assert tensors["layers.1.weight"][0]["shape"] == [32, 64]
    # Fine-tuning starts from the last pretraining checkpoint as stored: with lr 1e-5 for five
    # steps, most of its bf16 weights are still those bits.
    base, first = (np.frombuffer(p.read_bytes(), np.uint8) for p in (files[-1], files[0]))
    assert files[0].parent.name == "step-00005" and files[-1].parent.name == "step-00120"
    assert len(base) == len(first) and np.count_nonzero(base != first) < 0.5 * len(base)


def test_training_run_f32_checkpoints_hold_the_float32_weights(tmp_path):
    import training_run

    run = training_run.train(tmp_path, "f32", seed=1, config=tiny_config())
    header, tensors = training_run.read_safetensors(Path(run.checkpoints[-1].dir) / training_run.SAFETENSORS)
    assert {dtype for dtype, _, _ in tensors.values()} == {"F32"} and header % 8 == 0
    assert sum(len(raw) for _, _, raw in tensors.values()) == 4 * run.weights


def piece(data: bytes):
    import f3_estimate

    return f3_estimate.Piece(("t", "BF16", (len(data) // 2,), 0), data, 2)


def versions(n: int, changed: float, seed: int = 0) -> list:
    """``n`` versions of one 1 MiB bf16 chunk, each with ``changed`` of the previous one's
    elements nudged by one unit in the last place."""
    import checkpoints

    rng = np.random.default_rng(seed)
    x = checkpoints.to_bf16(rng.standard_normal(1 << 19).astype(np.float32) * np.float32(0.02))
    out = [piece(x.tobytes())]
    for _ in range(n - 1):
        x = x + (rng.random(x.size) < changed).astype(np.uint16)
        out.append(piece(x.tobytes()))
    return out


def test_f3_estimate_chain_policies_lay_out_the_chains_they_promise():
    import f3_estimate

    from aim_cli.format import blob_codec

    pieces = versions(6, 0.3)
    layouts = {}
    for name, policy, depth in f3_estimate.POLICIES:
        layout = f3_estimate.Layout(pieces)
        policy(layout, depth)
        layouts[name] = layout
    depths = {name: [layout.depth(i) for i in range(6)] for name, layout in layouts.items()}
    assert depths["forward, unbounded"] == [0, 1, 2, 3, 4, 5]
    assert depths["forward, depth <= 3"] == [0, 1, 2, 3, 0, 1]
    assert depths["each against the first"] == [0, 1, 1, 1, 1, 1]
    # Reverse, re-encoding at push: the previous newest becomes a delta while its chain allows.
    assert depths["reverse, depth <= 3"] == [3, 2, 1, 0, 1, 0]
    assert depths["reverse, unbounded"] == [5, 4, 3, 2, 1, 0]
    # The product's rule (aim_cli.deltas.policy) at the bound: the newest pair stays linked, the
    # old end is cut (v0 at push 4, v1 at push 5) and v0 re-linked under the cut v1.
    assert depths["reverse, depth <= 3, cut and attach"] == [1, 0, 3, 2, 1, 0]
    # Right after each push, a pull of the newest into the one before fetches one delta with the
    # cut; with the first rule, push 4 left both whole and that pull fetched a whole chunk.
    cut, first = layouts["reverse, depth <= 3, cut and attach"], layouts["reverse, depth <= 3"]
    assert all(cut.at_push[i] < 0.5 * cut.whole(i) for i in range(1, 6))
    assert first.at_push[4] == first.whole(4)
    # A delta costs the codec-4 header plus the encoded XOR, and is smaller than the whole chunk.
    rev = layouts["reverse, unbounded"]
    xor = f3_estimate.xor(pieces[0].data, pieces[1].data)
    assert rev.cost[0] == 48 + len(blob_codec.encode(xor, 2)[0]) < 0.9 * rev.whole(0)
    assert rev.cold(5) == rev.whole(5) and rev.cold(0) == sum(rev.cost)
    assert rev.update(5) == rev.cost[4]  # N into N-1's directory: only the delta linking them


def test_f3_estimate_keeps_a_chunk_whole_unless_the_delta_saves_min_saving():
    import f3_estimate

    rng = np.random.default_rng(1)
    noise = [piece(rng.integers(0, 1 << 16, 1 << 19, dtype=np.uint16).tobytes()) for _ in range(3)]
    layout = f3_estimate.Layout(noise)
    f3_estimate.forward(layout, None)
    assert layout.base == [None, None, None] and [layout.depth(i) for i in range(3)] == [0, 0, 0]
    same = versions(1, 0.0) * 3  # the same chunk three times: stored once, no delta
    layout = f3_estimate.Layout(same)
    f3_estimate.forward(layout, None)
    assert layout.cost[1:] == [0, 0] and layout.update(2) == 0


@pytest.fixture(scope="module")
def training_figures(tmp_path_factory) -> dict:
    """training_bench.py --quick through the console script of this environment."""
    import subprocess

    work = tmp_path_factory.mktemp("training")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "training_bench.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(work / "out.json"), "--workdir", str(work)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert "| finetune | format 3 (estimate): reverse, depth <= 3 |" in out.stdout
    return json.loads((work / "out.json").read_text())


def test_training_bench_quick_learns_and_reports_sane_figures(training_figures):
    doc = training_figures
    run, (pre, ft) = doc["run"], doc["phases"]
    assert [c["step"] for c in run["checkpoints"]] == [25, 50, 75, 100, 125, 150, 10, 20, 30, 40, 50, 60]
    assert pre["loss"][-1] < 0.5 * run["start_loss"]["pretrain"] and pre["loss"][-1] < pre["loss"][0]
    assert ft["loss"][-1] < ft["loss"][0] < run["start_loss"]["finetune"]
    # Pretraining moves most weights, fine-tuning (lr 1e-5) fewer; every weight stays bf16.
    assert min(pre["changed"]) > max(ft["changed"]) > 0
    rows = {p["name"]: {r["policy"]: r for r in p["rows"]} for p in doc["phases"]}
    for phase in rows.values():
        f2 = phase["format 2 (measured)"]
        # Format 2 finds nothing to share between checkpoints: each costs what the first did.
        assert 0.55 < f2["stored_per_later"] < 0.8
        plain = phase["format 3 (estimate): format 3 without deltas"]
        assert abs(plain["stored_per_later"] - f2["stored_per_later"]) < 0.03
        for name, r in phase.items():
            if "reverse" in name:
                assert r["cold_newest"] <= 1.01
        assert phase["format 3 (estimate): forward, unbounded"]["cold_newest"] > 1.2
    fine = rows["finetune"]
    assert (
        fine["format 3 (estimate): reverse, depth <= 3"]["stored_per_later"]
        < 0.6 * fine["format 2 (measured)"]["stored_per_later"]
    )
    assert doc["base"]["format3_added"] < 0.6 * doc["base"]["format2_added"]


def test_training_bench_parses_its_options():
    import training_bench

    with pytest.raises(SystemExit) as exit_:
        training_bench.main(["--help"])
    assert exit_.value.code == 0


def test_format3_bench_measures_deltas_through_the_product(tmp_path):
    """format3_bench.py on a small real training run whose middle layer is a 1 MiB bf16 tensor
    (tensor-cut, paired): format 3 stores the later fine-tuning checkpoints in less than format 2
    and a pull of the newest over the previous fetches less, while every version pulls back."""
    import format3_bench
    import training_run

    config = training_run.Config(d_in=16, hidden=(512, 1024), d_out=8, teacher_hidden=16, pre_every=20, ft_every=5)
    training_run.train(tmp_path / "ckpt", "bf16", seed=2, config=config)
    ckpts = sorted((tmp_path / "ckpt" / "finetune").iterdir())
    (tmp_path / "w2").mkdir()
    (tmp_path / "w3").mkdir()
    f2 = format3_bench.measure(ckpts, tmp_path / "w2", 2)
    f3 = format3_bench.measure(ckpts, tmp_path / "w3", 3)
    assert f3["stored_per_later"] < 0.8 * f2["stored_per_later"]
    assert f3["newest_over_previous"] < 0.8 * f2["newest_over_previous"]


def test_stage_costs_prints_every_stage_and_the_sums(tmp_path):
    """benchmarks/stage_costs.py at a tiny size: each stage's row, a stored ratio of byte-grouped
    bf16 weights (the codec at work on them), and the push and pull sums of their stages."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "stage_costs.py"
    out = subprocess.run(
        [sys.executable, str(script), "--size", "2MiB", "--chunk", "256KiB", "--runs", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[3].strip(" *"))
        for line in out.stdout.splitlines()
        if line.startswith("| ") and line.split("|")[3].strip(" *")[:1].isdigit()
    }
    stages = [k for k in rows if not k.startswith("**")]
    assert len(stages) == 8 and all(v >= 0 for v in rows.values())
    push = rows["**push: the sum of its stages**"]
    assert (
        abs(
            push
            - sum(
                rows[k]
                for k in (
                    "BLAKE3 of each chunk",
                    "BLAKE3 of the whole file",
                    "encode (byte-grouped zstd)",
                    "write each blob as a new file",
                )
            )
        )
        < 0.01
    )
    stored = float(out.stdout.split("stored ")[1].split(" of raw")[0])
    assert 0.6 < stored < 0.75  # bf16 N(0, 0.02): the exponent bytes compress, the mantissas do not
    assert list(tmp_path.iterdir()) == []  # its files went with it
