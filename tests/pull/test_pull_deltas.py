"""Format 3: a pull into a directory holding the previous checkpoint takes each changed chunk as
the delta its local predecessor is stored as (pull/deltas.py), and the plan says so.

The older version's chunks are re-encoded here as deltas against the newer one's, as `repo
optimize` does (newest whole): blob written after its edge marker."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from aim_cli import push as pushmod
from aim_cli.backends.local import LocalBackend
from aim_cli.format import delta_codec
from aim_cli.format.layout import blob_key
from aim_cli.pull.pipeline import dry_run, pull
from aim_cli.repository import Repository
from tests.helpers import drop_from_page_cache, file_contents, safetensors_bytes

ROWS, COLS = 1024, 1024  # 2 MiB of bf16: two 1 MiB chunks of a tensor cut every tensor_chunk_bytes


def _bf16(x: np.ndarray) -> bytes:
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def _checkpoint(path, weights: np.ndarray) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(safetensors_bytes([("w", "BF16", [ROWS, COLS], _bf16(weights))]))


@pytest.fixture
def f3(tmp_path):
    repo = Repository(LocalBackend(tmp_path / "repo"), "f3")
    repo.init(version=3)
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.02, (ROWS, COLS)).astype(np.float32)
    w2 = w1 + rng.normal(0, 2e-4, w1.shape).astype(np.float32)  # a fine-tuning step: most weights move a little
    _checkpoint(tmp_path / "v1", w1)
    _checkpoint(tmp_path / "v2", w2)
    pushmod.push(repo, "m", "v1", tmp_path / "v1")
    pushmod.push(repo, "m", "v2", tmp_path / "v2")
    return repo, tmp_path


def _reencode_older(repo: Repository, older: str, newer: str) -> int:
    """Store each chunk of ``older`` as a delta against the same chunk of ``newer``, as `repo
    optimize` does; the number of chunks re-encoded."""
    fmt = repo.format()
    old_files = repo.get_version("m", older).manifest.files
    new_files = repo.get_version("m", newer).manifest.files
    done = 0
    for old, new in zip(old_files, new_files, strict=True):
        for (d, size), (b, bsize) in zip(old.chunks, new.chunks, strict=True):
            if d == b or size != bsize or size < 65536:
                continue
            blob = delta_codec.encode_delta(repo.get_blob(d, size), repo.get_blob(b, size), b, 2, fmt.codecs)
            repo.edges.put_edge(b, d)
            repo.backend.put(blob_key(d), blob)
            done += 1
    return done


def test_pulling_the_newest_over_the_previous_fetches_only_the_deltas(f3):
    repo, tmp = f3
    assert _reencode_older(repo, "v1", "v2") == 2
    dest = tmp / "dest"
    shutil.copytree(tmp / "v1", dest)  # the previous checkpoint, as training left it

    plan = dry_run(repo, "m", dest, tag="v2")
    totals = plan.to_json()["totals"]
    assert totals["fetch_chunks"] >= 2 and totals["delta_chunks"] == 2
    assert totals["delta_bases"] == {"dest": 2, "reference": 0}

    r = pull(repo, "m", dest, tag="v2")
    assert file_contents(dest) == file_contents(tmp / "v2")
    assert r.delta_chunks == 2
    # Each delta is a fraction of its chunk's plain blob: what a pull of v2 alone would fetch.
    plain = sum(repo.stored_size(d) for f in repo.get_version("m", "v2").manifest.files for d, _ in f.chunks)
    assert r.fetched_bytes < 0.75 * plain, (r.fetched_bytes, plain)


def test_a_cold_pull_asks_for_no_edges(f3):
    repo, tmp = f3
    _reencode_older(repo, "v1", "v2")
    plan = dry_run(repo, "m", tmp / "cold", tag="v2")
    assert plan.to_json()["totals"]["delta_chunks"] == 0 and plan.delta_bases == {}


def test_a_damaged_delta_of_the_previous_checkpoint_is_named_and_the_chunk_fetched_as_itself(f3, caplog):
    repo, tmp = f3
    _reencode_older(repo, "v1", "v2")
    dest = tmp / "dest"
    shutil.copytree(tmp / "v1", dest)
    v1_chunks = [d for f in repo.get_version("m", "v1").manifest.files for d, s in f.chunks if s >= 65536]
    key = blob_key(v1_chunks[0])
    blob = bytearray(repo.backend.get(key))
    blob[-1] ^= 0xFF  # the delta's payload: decodes, to other bytes
    repo.backend.put(key, bytes(blob))
    with caplog.at_level(logging.WARNING):
        r = pull(repo, "m", dest, tag="v2")
    assert file_contents(dest) == file_contents(tmp / "v2")
    assert r.delta_chunks == 1
    assert any(v1_chunks[0] in rec.getMessage() and "corrupt" in rec.getMessage() for rec in caplog.records)


def test_format_2_plans_have_no_delta_fields_set(tmp_path):
    repo = Repository(LocalBackend(tmp_path / "repo"), "f2")
    repo.init(version=2)
    _checkpoint(tmp_path / "v1", np.zeros((ROWS, COLS), np.float32))
    pushmod.push(repo, "m", "v1", tmp_path / "v1")
    plan = dry_run(repo, "m", tmp_path / "dest", tag="v1")
    assert json.loads(json.dumps(plan.to_json()))["totals"]["delta_bases"] == {"dest": 0, "reference": 0}


def test_pulling_the_older_over_the_newer_takes_its_bases_from_dest(f3):
    """v1's chunks are deltas against v2's: pulled into v2's directory, their bases come from
    DEST, and only the deltas are fetched; cold, the bases are fetched too."""
    repo, tmp = f3
    _reencode_older(repo, "v1", "v2")
    v2 = {d for f in repo.get_version("m", "v2").manifest.files for d, _ in f.chunks}
    v1 = {d for f in repo.get_version("m", "v1").manifest.files for d, _ in f.chunks} - v2  # the header is v2's too
    deltas = sum(repo.stored_size(d) for d in v1)
    dest = tmp / "dest"
    shutil.copytree(tmp / "v2", dest)
    r = pull(repo, "m", dest, tag="v1")
    assert file_contents(dest) == file_contents(tmp / "v1")
    assert r.fetched_bytes == deltas  # no base read from the repository

    cold = pull(repo, "m", tmp / "cold", tag="v1")
    assert file_contents(tmp / "cold") == file_contents(tmp / "v1")
    assert cold.fetched_bytes > deltas  # the bases too


def test_copy_of_the_older_version_alone_brings_the_bases_of_its_deltas(f3):
    """Copying only the older version into another format 3 repository: its delta blobs are
    copied as stored, with the newer version's chunks they are deltas against (no version there
    names them), so the copy pulls without the newer version (docs/design.md §3.5, Copying)."""
    from aim_cli.copy import copy

    repo, tmp = f3
    assert _reencode_older(repo, "v1", "v2") == 2
    dst = Repository(LocalBackend(tmp / "dst"), "dst")
    dst.init(version=3)
    copy(repo, dst, "m", tags=["v1"])
    v1 = {d for f in repo.get_version("m", "v1").manifest.files for d, _ in f.chunks}
    v2 = {d for f in repo.get_version("m", "v2").manifest.files for d, _ in f.chunks}
    deltas = {d for d in v1 - v2 if repo.backend.get(blob_key(d))[4] == 4}
    assert len(deltas) == 2
    for d in deltas:
        stored = repo.backend.get(blob_key(d))
        assert dst.backend.get(blob_key(d)) == stored  # as stored, not decoded
        assert dst.backend.exists(blob_key(delta_codec.base_of(stored)))  # its base came along
    pull(dst, "m", tmp / "out", tag="v1")
    assert file_contents(tmp / "out") == file_contents(tmp / "v1")


def test_delta_blobs_read_around_the_page_cache_decode_as_any_other(f3):
    """Cold blobs come back from a local repository as memoryviews of a direct read
    (backends/uncached_read.py); a delta chain decodes from them byte for byte."""
    repo, tmp = f3
    assert _reencode_older(repo, "v1", "v2") == 2
    delta = blob_key(max(repo.get_version("m", "v1").manifest.files[0].chunks, key=lambda c: c[1])[0])
    assert delta_codec.base_of(repo.backend.get_prefix(delta, delta_codec.DELTA_HEADER_SIZE)) is not None
    for blob in (tmp / "repo" / "blobs").rglob("*"):
        if blob.is_file():
            drop_from_page_cache(blob)
    r = pull(repo, "m", tmp / "cold", tag="v1")
    assert file_contents(tmp / "cold") == file_contents(tmp / "v1") and r.fetched_chunks >= 2
    # It did read around the cache: a delta blob, dropped again, comes back as a direct read's view.
    drop_from_page_cache(tmp / "repo" / delta)
    assert isinstance(repo.backend.get_once(delta, max_size=4 << 20), memoryview)
