"""Pairing the tensor chunks of two versions (aim_cli/deltas/pairing.py, docs/design.md §3.5): from
manifests and the headers held in each file's first chunks, with format 3's cuts. Golden tests on
small safetensors files made here (numpy tensors, cut by the real chunker); hypothesis for the
header parser, which reads bytes from the repository."""

from __future__ import annotations

import blake3
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.chunking.tensors import TensorChunkingParams, iter_file_chunks
from aim_cli.deltas.pairing import (
    TensorKey,
    chunk_info,
    head_chunks,
    header_end,
    pair_versions,
    parse_layout,
    tensor_chunks,
    version_tensors,
)
from aim_cli.format import manifest as mf
from tests.helpers import safetensors_bytes

PARAMS = ChunkingParams(64, 256, 1024)
STEP = 1024
FIXED = TensorChunkingParams(
    max_header_bytes=1024, large_tensor_bytes=512, tensor_chunk_bytes=STEP, group_avg_bytes=256, group_max_bytes=1024
)
FORMAT_2 = TensorChunkingParams(
    max_header_bytes=1024, large_tensor_bytes=512, group_avg_bytes=256, group_max_bytes=1024
)


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((40, 32)).astype(np.float16),  # 2560 bytes: 3 chunks
        "norm.bias": rng.standard_normal(16).astype(np.float32),  # small: grouped
        "out.weight": rng.standard_normal((24, 32)).astype(np.float32),  # 3072 bytes: 3 chunks
    }


DTYPES = {np.float16: "F16", np.float32: "F32"}


def write(path, tensors: dict[str, np.ndarray]) -> bytes:
    data = safetensors_bytes([(n, DTYPES[a.dtype.type], list(a.shape), a.tobytes()) for n, a in tensors.items()])
    path.write_bytes(data)
    return data


def entry(path, name: str, tensors=FIXED) -> tuple[mf.FileEntry, dict[str, bytes]]:
    """The manifest entry push would write for ``path`` and the blobs it would store."""
    blobs: dict[str, bytes] = {}

    def keep(chunk, data):
        blobs[chunk.digest] = bytes(data)

    chunks = list(iter_file_chunks(path, PARAMS, tensors, on_chunk=keep))
    data = path.read_bytes()
    return (
        mf.FileEntry(name, len(data), 0o644, blake3.blake3(data).hexdigest(), [(c.digest, c.size) for c in chunks]),
        blobs,
    )


def fetch_layout(e: mf.FileEntry, blobs: dict[str, bytes]):
    """What the re-encoder does: the first chunk, then as many as the header needs, then parse."""
    first = blobs[e.chunks[0][0]]
    end = header_end(first, e.size, PARAMS, FIXED)
    assert end is not None
    head = b"".join(blobs[d] for d, _ in head_chunks(e, end))
    return parse_layout(head, e.size, PARAMS, FIXED)


def version(tmp_path, tag: str, files: dict[str, dict[str, np.ndarray]], tensors=FIXED):
    entries, blobs, layouts = [], {}, {}
    for name, ts in sorted(files.items()):
        path = tmp_path / f"{tag}-{name}"
        write(path, ts)
        e, b = entry(path, name, tensors)
        entries.append(e)
        blobs.update(b)
        layouts[name] = fetch_layout(e, b)
    m = mf.Manifest(1, "m", tag, "2026-01-31T12:00:00Z", "u@h", "", sum(e.size for e in entries), entries)
    return m, layouts, blobs


def chunk_bytes(a: np.ndarray, i: int) -> bytes:
    return a.tobytes()[i * STEP : (i + 1) * STEP]


def test_golden_pairs_of_a_training_step(tmp_path):
    w1 = weights(0)
    w2 = {k: v.copy() for k, v in w1.items()}
    w2["embed.weight"][0, 0] += 1  # chunk 0 of embed.weight
    w2["out.weight"][-1, -1] += 1  # chunk 2 (the remainder) of out.weight
    w2["norm.bias"][0] += 1  # a small tensor: grouped, never paired
    m1, l1, _ = version(tmp_path, "v1", {"model.safetensors": w1})
    m2, l2, _ = version(tmp_path, "v2", {"model.safetensors": w2})
    t1, t2 = version_tensors(m1, l1, FIXED), version_tensors(m2, l2, FIXED)
    assert [(t.key, t.element_size, [s for _, s in t.chunks]) for t in t1] == [
        (TensorKey("embed.weight", "F16", (40, 32)), 2, [1024, 1024, 512]),
        (TensorKey("out.weight", "F32", (24, 32)), 4, [1024, 1024, 1024]),
    ]
    pairs = pair_versions(t1, t2)
    assert [(p.key.name, p.index, p.size, p.element_size) for p in pairs] == [
        ("embed.weight", 0, 1024, 2),
        ("out.weight", 2, 1024, 4),
    ]
    h = lambda b: blake3.blake3(b).hexdigest()  # noqa: E731
    assert pairs[0].older == h(chunk_bytes(w1["embed.weight"], 0))
    assert pairs[0].newer == h(chunk_bytes(w2["embed.weight"], 0))
    assert pairs[1].older == h(chunk_bytes(w1["out.weight"], 2))
    assert pairs[1].newer == h(chunk_bytes(w2["out.weight"], 2))
    assert chunk_info(t2)[pairs[1].newer] == (1024, 4)


def test_tensors_moved_between_shards_and_renamed_files_still_pair(tmp_path):
    w1 = weights(1)
    w2 = {k: v + np.asarray(0.5, v.dtype) for k, v in w1.items()}
    m1, l1, _ = version(tmp_path, "v1", {"model.safetensors": w1})
    shards = {
        "model-00001-of-00002.safetensors": {"out.weight": w2["out.weight"]},
        "model-00002-of-00002.safetensors": {"embed.weight": w2["embed.weight"], "norm.bias": w2["norm.bias"]},
    }
    m2, l2, _ = version(tmp_path, "v2", shards)
    pairs = pair_versions(version_tensors(m1, l1, FIXED), version_tensors(m2, l2, FIXED))
    assert [(p.key.name, p.index) for p in pairs] == [("embed.weight", i) for i in range(3)] + [
        ("out.weight", i) for i in range(3)
    ]


def test_a_name_in_two_files_pairs_by_path(tmp_path):
    a1, b1 = weights(2), weights(3)
    a2 = {k: v + np.asarray(1, v.dtype) for k, v in a1.items()}
    m1, l1, _ = version(tmp_path, "v1", {"unet.safetensors": a1, "vae.safetensors": b1})
    m2, l2, _ = version(tmp_path, "v2", {"unet.safetensors": a2, "vae.safetensors": b1})
    pairs = pair_versions(version_tensors(m1, l1, FIXED), version_tensors(m2, l2, FIXED))
    assert len(pairs) == 6
    unet1 = {d for t in version_tensors(m1, l1, FIXED) if t.path == "unet.safetensors" for d, _ in t.chunks}
    assert {p.older for p in pairs} <= unet1


def test_other_dtype_or_shape_does_not_pair(tmp_path):
    w1 = weights(4)
    w2 = dict(w1, **{"out.weight": w1["out.weight"].reshape(32, 24) + np.float32(1)})
    w2["embed.weight"] = w1["embed.weight"].astype(np.float32)[:20]  # same bytes size, other dtype
    m1, l1, _ = version(tmp_path, "v1", {"m.safetensors": w1})
    m2, l2, _ = version(tmp_path, "v2", {"m.safetensors": w2})
    assert pair_versions(version_tensors(m1, l1, FIXED), version_tensors(m2, l2, FIXED)) == []


def test_chunks_that_do_not_line_up_are_skipped(tmp_path):
    # Cut with format 2's rule (FastCDC inside tensors): the fixed cuts are not chunk boundaries.
    rng = np.random.default_rng(5)
    w = {"big.weight": rng.standard_normal((64, 64)).astype(np.float32)}
    m, layouts, _ = version(tmp_path, "v1", {"m.safetensors": w}, tensors=FORMAT_2)
    e = m.files[0]
    assert len(e.chunks) > 1 and layouts["m.safetensors"] is not None
    assert tensor_chunks(e, layouts["m.safetensors"], FIXED) is None
    assert version_tensors(m, layouts, FIXED) == []
    # The same file cut by format 3 pairs.
    m3, l3, _ = version(tmp_path, "v3", {"m.safetensors": w})
    assert [len(t.chunks) for t in version_tensors(m3, l3, FIXED)] == [16]


def test_files_that_are_not_cut_by_their_layout(tmp_path):
    assert header_end(b"\x00" * 8, 63, PARAMS, FIXED) is None  # smaller than min_size: one chunk
    assert header_end((10_000).to_bytes(8, "little"), 20_000, PARAMS, FIXED) is None  # header too long
    assert header_end((500).to_bytes(8, "little"), 400, PARAMS, FIXED) is None  # past the end
    assert header_end(b"\x01\x00", 400, PARAMS, FIXED) is None  # fewer than 8 bytes
    assert header_end((100).to_bytes(8, "little"), 400, PARAMS, FIXED) == 108
    assert parse_layout(b"{}", 400, PARAMS, FIXED) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.binary(max_size=300), size=st.integers(0, 2000), n=st.integers(0, 400))
def test_hostile_heads_never_raise(head, size, n):
    for prefix in (head, n.to_bytes(8, "little") + head):
        end = header_end(prefix, size, PARAMS, FIXED)
        assert end is None or 8 <= end <= size
        layout = parse_layout(prefix, size, PARAMS, FIXED)
        if layout is not None:
            assert layout.header_end == end
            assert all(t.name and t.dtype for t in layout.tensors)
